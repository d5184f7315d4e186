"""losses: PPO's clipped surrogate (GRPO) vs GSPO vs CISPO at equal samples on the fast CPU testbed;
README.md beside this file."""

from driver import Arm, Claim, Experiment

SPEC = Experiment(
    name="losses",
    arms=[
        Arm("grpo"),
        Arm("gspo", ["trainer.policy_loss=gspo"]),
        Arm("cispo", ["trainer.policy_loss=cispo"]),
    ],
    seeds=list(range(8)),
    metrics=["eval/pass@1", "eval/pass@32", "entropy", "clip_frac@last16", "ratio_max@last16"],
    control="grpo",
    jobs=2,
    threads=1,
    claims=[
        Claim("GSPO beats GRPO's token-level clipped loss at pass@1", "eval/pass@1", "gspo", "grpo", +1,
              "GSPO (arXiv 2507.18071) abstract: 'GSPO achieves superior training efficiency and performance "
              "compared to the GRPO algorithm'; no number quoted"),
        Claim("GSPO clips a far larger share of its training signal than GRPO", "clip_frac@last16", "gspo", "grpo",
              +1, "GSPO: 'a difference of two orders of magnitude in the fractions of clipped tokens' (its clipping "
                  "figure, as quoted by a review checked against the paper; the paper's text was not read here)"),
        Claim("CISPO beats GRPO's clipped loss at pass@1", "eval/pass@1", "cispo", "grpo", +1,
              "MiniMax-M1 (arXiv 2506.13585) abstract: CISPO, clipping importance-sampling weights rather than "
              "token updates, outperforms other competitive RL variants; no number quoted"),
    ],
    notes="""
The fast testbed's protocol (conf/experiment_scale/common_toy.yaml: the toy character-level base, 16 steps of 4 x 8
at lr 1e-4, 128 held-out problems x 32 samples) with every rollout batch split into 4 mini-batches of one prompt's
8 samples (conf/experiment/losses.yaml), so that three of every four optimiser steps see ratios != 1: at ratio 1
the three losses give the same gradient up to GSPO's per-response length weighting, and the comparison would test
nothing. Each loss keeps its own clip range (drox's defaults: PPO 0.2 / 0.2; GSPO 3e-4 / 4e-4, the range the GSPO
paper reports for its runs of responses thousands of tokens long; CISPO no lower bound / 0.2). No range was tuned
here. `clip_frac@last16` is the share clipped, averaged over the 16 training steps: for GRPO and CISPO the share of
tokens, for GSPO the share of responses (a clipped response is clipped in every token, so its token share differs
only by the responses' length spread). `ratio_max@last16` is the largest ratio of a step (of sequence ratios for
GSPO), averaged over the steps. The papers' evidence is training curves on large models (Qwen3 MoE for GSPO, a
456B MoE for CISPO); ours are 88,704 parameters and responses of about 20 characters, so these are tests of what
each loss does with off-policy ratios, not of its stability at scale.
""",
)
