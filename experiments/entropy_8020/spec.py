"""entropy_8020: the policy loss on all tokens vs the top-20% vs the bottom-80% by entropy (Wang et al.,
arXiv 2506.01939)."""

from driver import Arm, Claim, Experiment

SPEC = Experiment(
    name="entropy_8020",
    arms=[
        Arm("all"),
        Arm("top20", ["+filter=entropy"]),
        Arm("bottom80", ["+filter=entropy", "filter.entropy.invert=true"]),
    ],
    seeds=[0, 1],
    metrics=["eval/pass@1", "eval/pass@16", "eval/pass@64", "entropy", "filter/entropy/threshold",
             "filter/entropy/entropy_kept", "filter/entropy/entropy_dropped", "time/elapsed"],
    claims=[
        Claim("top-20% tokens match or beat all tokens at pass@1", "eval/pass@1", "top20", "all", +1,
              "Qwen3-8B-Base: about equal; 14B: +4.79 AIME'25 / +5.21 AIME'24; 32B: +11.04 / +7.71 (abstract)"),
        Claim("bottom-80% tokens do worse than all tokens at pass@1", "eval/pass@1", "bottom80", "all", -1,
              "'training only on the bottom-80% tokens degrades performance' (no number in PAPERS.md)"),
        Claim("top-20% tokens beat bottom-80% tokens at pass@1", "eval/pass@1", "top20", "bottom80", +1,
              "follows from the two above"),
        Claim("top-20% tokens beat the base at pass@1", "eval/pass@1", "top20", "base", +1,
              "RLVR on the top-20% raises AIME over the base (Fig. 1)"),
    ],
    notes="""
The arms differ only in which response tokens the policy-gradient loss sees: every valid token, the
ceil(0.2 N) tokens of the step's batch with the highest entropy under the sampling policy, or the other 80%
(token-mean over the kept tokens, so each arm's gradient is an average over its own tokens). The paper's
runs are DAPO on Qwen3-8B/14B/32B-Base with 20k-token responses and thousands of steps; ours are 8 GRPO steps of
4 x 8 rollouts of <= 48 tokens on the SFT'd SmolLM2-135M, where most tokens are near-deterministic digits
and template words, so the top 20% are few (about 0.2 x 32 x 30 tokens per step) and the effect of the
selection on 8 updates is small against the evaluation noise of 12 problems.
""",
)
