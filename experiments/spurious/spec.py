"""spurious: ground truth vs a random reward on the SmolLM2 paired protocol (Shao et al., "Spurious Rewards:
Rethinking Training Signals in RLVR", arXiv 2506.10947); the format, incorrect-label and inverse arms of the
earlier 2-seed table are not rerun (see the notes).

The paper's headline gains are for Qwen2.5-Math; for other model families its abstract says the spurious rewards
"often fail to yield gains" (v1: "with other model families like Llama3 or OLMo2"). Ours is not a Qwen model
(the SFT'd SmolLM2-135M, a Llama-architecture model), so the random-reward claim is registered as the paper's
non-Qwen expectation: no more than a minimal gain over the base (a one-sided equivalence bound), while the ground
truth is expected to help.
"""

from driver import Arm, Claim, Experiment

# Equivalence margin for pass@1, declared before the rerun, never tuned to results: 0.05 is the
# protocol's precision target (verdicts.TARGET_HALF_WIDTH), so a smaller bound could not be resolved by design, and
# it sits far below every Qwen gain the paper reports (+13.8 to +29.1 points), so "no more than +0.05" is the
# paper's "fail to yield gains" and not a Qwen-like effect.
PASS1_MARGIN = 0.05

NON_QWEN = ("for other model families the spurious rewards 'often fail to yield gains' (v1 abstract, "
            "'like Llama3 or OLMo2'); ours is SmolLM2, not Qwen: the non-Qwen expectation is tested")

SPEC = Experiment(
    name="spurious",
    arms=[
        Arm("ground_truth"),
        Arm("random", ["+reward=random"]),
    ],
    seeds=[0, 1, 2, 3],
    metrics=["eval/pass@1", "eval/pass@4", "eval/answered_frac", "eval/mean_length", "advantage/zero_groups",
             "time/elapsed"],
    claims=[
        Claim("ground-truth reward raises pass@1", "eval/pass@1", "ground_truth", "base", +1,
              "arXiv 2506.10947 v1 abstract: +29.1 MATH-500 points on Qwen2.5-Math-7B; that the ground truth "
              "also helps Llama/OLMo is shown in a figure only (number not verified)"),
        Claim("on a non-Qwen model, a random reward (p = 0.5) gives at most a minimal pass@1 gain over the base",
              "eval/pass@1", "random", "base", -1,
              f"v1 abstract: +21.4 on Qwen2.5-Math-7B; {NON_QWEN}", test="equivalence", margin=PASS1_MARGIN),
        Claim("ground truth beats the random reward at pass@1", "eval/pass@1", "ground_truth", "random", +1,
              "v1 abstract, Qwen2.5-Math-7B: +29.1 vs +21.4; on non-Qwen models only the ground truth is expected "
              "to help"),
    ],
    control="ground_truth",
    jobs=2,
    threads=1,
    notes="""
The SmolLM2 testbed's paired protocol with its large held-out set (conf/experiment_scale/common_smollm2_big_eval.yaml:
lr 5e-6, 24 steps of 4 x 8, 466 held-out problems x 4 samples, the same seeds, prompts and eval streams in both
arms) with this table's 4 optimiser steps per rollout batch. This is the table's second run on the SmolLM2
testbed: the first (commit 42f4940, 128 held-out problems x 8) left the positive control unresolved, ground truth
above the base in every seed but +0.032 [+0.000, +0.064], the interval set by the base's evaluation of 128
problems; the held-out set was enlarged for that reason alone, with the claims, margins, arms and seeds unchanged. One model family only: the SFT'd SmolLM2-135M (Llama architecture) is the only
pretrained model available offline, so the paper's contrast between Qwen2.5-Math and other families cannot be run
here. Its expectation for non-Qwen models is that spurious rewards "often fail to yield gains" (arXiv 2506.10947
v1 abstract; the latest version: "often fail to produce gains for other model families, such as Llama3 or
OLMo2"), so the random-reward claim is registered as a one-sided equivalence bound: the gain over the base is
below the declared margin (0.05 in pass@1), a negative change included. Both arms have the same clip range (0.2)
and 4 optimiser steps per rollout batch (4 mini-batches of one prompt's 8 samples), so the clipping bias the
paper's later version blames for random-reward gains is present in both alike. Arms of the earlier 2-seed table
not trained in this rerun, with their claims (4 seeds of one more arm cost about 50 minutes on 2 cores): `format`
(the 2-seed table found its reward constant within every group, the SFT'd base answering in \\boxed{} in every
sample: `eval/answered_frac` of the base below says whether that still holds), `incorrect_label` and `inverse` (a
sign check, no claim). `answered_frac` is the share of eval samples with an extractable answer. The wall times
above are inflated: other work shared the 2 cores during this run (tests of the vLLM engine, a toy table); the
numbers themselves do not depend on it (one torch thread per run, fixed seeds).
""",
)
