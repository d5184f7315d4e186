"""spurious: ground truth vs format vs random vs incorrect label vs inverse (Shao et al., "Spurious Rewards:
Rethinking Training Signals in RLVR", arXiv 2506.10947).

The paper's headline gains are for Qwen2.5-Math; for other model families its abstract says the spurious rewards
"often fail to yield gains" (v1: "with other model families like Llama3 or OLMo2"). Ours is not a Qwen model
(the SFT'd SmolLM2-135M, a Llama-architecture model), so the spurious-reward claims are registered as the paper's
non-Qwen expectation: no more than a minimal gain over the base (a one-sided equivalence bound), while the ground
truth is expected to help.
"""

from typing import Optional

from driver import Arm, Claim, Experiment

# Equivalence margin for pass@1, declared before the rerun, never tuned to results: 0.05 is the
# protocol's precision target (verdicts.TARGET_HALF_WIDTH), so a smaller bound could not be resolved by design, and
# it sits far below every Qwen gain the paper reports (+13.8 to +29.1 points), so "no more than +0.05" is the
# paper's "fail to yield gains" and not a Qwen-like effect.
PASS1_MARGIN = 0.05

BASE_SEED = -1  # verdicts.BASE_SEED: the base's one evaluation


def _seeds(data) -> list:
    return sorted(s for s in data.values if s != BASE_SEED)


def constant_reward_reason(values, arm: str, source: str) -> Optional[str]:
    """The reason an arm cannot differ from the base by construction: its reward was constant within every group,
    so every GRPO advantage is 0 and the weights never move. Read from the last logged training step of every
    seed: ``advantage/zero_groups`` (share of groups whose advantages are all 0) = 1, or, where that is not logged,
    ``reward/<source>/std`` (over the whole batch) = 0. None when either shows spread in any seed, or is missing."""
    zero = values(arm, "advantage/zero_groups")
    seeds = _seeds(zero)
    if seeds:
        if all(zero.values[s] >= 1.0 for s in seeds):
            return (f"the {source} reward was constant within every group: 100% of groups had zero advantage at the "
                    f"last step in all {len(seeds)} seed(s) (advantage/zero_groups = 1), so the {arm} arm cannot "
                    f"move from the base")
        return None
    std = values(arm, f"reward/{source}/std")
    seeds = _seeds(std)
    if seeds and all(std.values[s] == 0.0 for s in seeds):
        return (f"the {source} reward was constant over the whole batch at the last step in all {len(seeds)} "
                f"seed(s) (reward/{source}/std = 0), so every advantage is 0 and the {arm} arm cannot move from "
                f"the base")
    return None


def check_format_reward(values) -> Optional[str]:
    """The format arm: not testable when its reward was constant within every group (the SFT'd base boxes every
    answer, so \\boxed{} earns 1 on every rollout)."""
    return constant_reward_reason(values, "format", "format")


def check_format_style(values) -> Optional[str]:
    """The answer-style claim: not testable when the format reward was constant, or when the base already answers
    in 100% of its evaluation samples (the behaviour the format reward pays for is at its ceiling)."""
    reason = constant_reward_reason(values, "format", "format")
    if reason:
        return reason
    base = values("base", "eval/answered_frac").values.get(BASE_SEED)
    if base is not None and base >= 1.0:
        return (f"the base already gives an extractable answer in {base:.1%} of its evaluation samples "
                f"(eval/answered_frac): the answer style the format reward pays for is at its ceiling")
    return None


NON_QWEN = ("for other model families the spurious rewards 'often fail to yield gains' (v1 abstract, "
            "'like Llama3 or OLMo2'); ours is SmolLM2, not Qwen: the non-Qwen expectation is tested")

SPEC = Experiment(
    name="spurious",
    arms=[
        Arm("ground_truth"),
        Arm("format", ["+reward=format"]),
        Arm("random", ["+reward=random"]),
        Arm("incorrect_label", ["+reward=incorrect_label"]),
        Arm("inverse", ["+reward=inverse"]),
    ],
    seeds=[0, 1],
    metrics=["eval/pass@1", "eval/pass@64", "eval/answered_frac", "eval/mean_length", "advantage/zero_groups",
             "reward/format/mean"],
    claims=[
        Claim("ground-truth reward raises pass@1", "eval/pass@1", "ground_truth", "base", +1,
              "arXiv 2506.10947 v1 abstract: +29.1 MATH-500 points on Qwen2.5-Math-7B; that the ground truth "
              "also helps Llama/OLMo is shown in a figure only (number not verified)"),
        Claim("on a non-Qwen model, a random reward (p = 0.5) gives at most a minimal pass@1 gain over the base",
              "eval/pass@1", "random", "base", -1,
              f"v1 abstract: +21.4 on Qwen2.5-Math-7B; {NON_QWEN}", test="equivalence", margin=PASS1_MARGIN),
        Claim("on a non-Qwen model, a format reward gives at most a minimal pass@1 gain over the base",
              "eval/pass@1", "format", "base", -1,
              f"v1 abstract: +13.8 on Qwen2.5-Math-7B (+16.4 in another version of the abstract); {NON_QWEN}",
              test="equivalence", margin=PASS1_MARGIN, check=check_format_reward),
        Claim("on a non-Qwen model, an incorrect-label reward gives at most a minimal pass@1 gain over the base",
              "eval/pass@1", "incorrect_label", "base", -1,
              f"v1 abstract: +24.1 on Qwen2.5-Math-7B (+24.6 in another version of the abstract); {NON_QWEN}",
              test="equivalence", margin=PASS1_MARGIN),
        Claim("ground truth beats the random reward at pass@1", "eval/pass@1", "ground_truth", "random", +1,
              "v1 abstract, Qwen2.5-Math-7B: +29.1 vs +21.4; on non-Qwen models only the ground truth is expected "
              "to help"),
        Claim("a spurious (format) reward amplifies a behaviour the model already has: more answers in "
              "\\boxed{}", "eval/answered_frac", "format", "base", +1,
              "v1 abstract: code reasoning on Qwen2.5-Math-7B rises from 65% to over 90% under spurious rewards; "
              "the analogue here (answering in \\boxed{}) is our choice",
              check=check_format_style),
    ],
    control="ground_truth",
    notes="""
One model family only: the SFT'd SmolLM2-135M (Llama architecture) is the only pretrained model available
offline, so the paper's contrast between Qwen2.5-Math and other families cannot be run here. Its expectation for
non-Qwen models is that spurious rewards "often fail to yield gains" (arXiv 2506.10947 v1 abstract; the latest
version: "often fail to produce gains for other model families, such as Llama3 or OLMo2"), so the random, format
and incorrect-label claims are registered as one-sided equivalence bounds: the gain over the base is below the
declared margin (0.05 in pass@1), a negative change included. `inverse` (1 - outcome) tests no claim of the paper;
it is kept as a sign check. Every arm has the same clip range (0.2) and 4 optimiser steps per rollout batch (4
mini-batches of one prompt's 8 samples), so the clipping
bias the paper's later version blames for random-reward gains is present in every arm alike. `answered_frac` is
the share of eval samples with an extractable answer, the answer-style behaviour a format reward pays for. The
format arm's claims are "not testable" when its reward was constant within every group (computed from
`advantage/zero_groups`, last step of each run).
""",
)
