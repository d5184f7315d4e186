"""nsr: base vs GRPO vs PSR vs NSR vs W-REINFORCE (Zhu et al., arXiv 2506.01347) on the fast CPU testbed;
README.md beside this file."""

from driver import Arm, Claim, Experiment

LARGE_K = "eval/pass@32"  # the largest k the testbed evaluates (n = 32 samples per problem)
MARGIN_LARGE_K = 0.03
"""Equivalence margin for "at least" claims at large k, declared before the table ran: 3 points of pass@32, about
the paper's own gaps between the arms it calls comparable at pass@256 (NSR 96.9, W-REINFORCE 96.7, GRPO 95.5)."""

SPEC = Experiment(
    name="nsr",
    arms=[
        Arm("grpo"),
        Arm("psr", ["+reward=positive_only"]),
        Arm("nsr", ["+reward=negative_only"]),
        Arm("w_reinforce", ["+reward=w_reinforce"]),
    ],
    seeds=list(range(8)),
    metrics=["eval/pass@1", "eval/pass@8", LARGE_K, "entropy"],
    control="grpo",
    jobs=2,
    threads=1,
    claims=[
        Claim("PSR improves pass@1 over the base", "eval/pass@1", "psr", "base", +1,
              "Qwen2.5-Math-7B, MATH pass@1 63.2 -> 74.1"),
        Claim("NSR improves pass@1 over the base", "eval/pass@1", "nsr", "base", +1,
              "Qwen2.5-Math-7B, MATH pass@1 63.2 -> 75.7"),
        Claim("NSR keeps pass@k at large k above PSR", LARGE_K, "nsr", "psr", +1,
              "MATH pass@256 NSR 96.9 vs PSR 91.2"),
        Claim("NSR keeps pass@k at large k at least at GRPO's", LARGE_K, "nsr", "grpo", +1,
              "MATH pass@256 NSR 96.9 vs GRPO 95.5", test="equivalence", margin=MARGIN_LARGE_K),
        Claim("W-REINFORCE (λ=0.1) keeps pass@k at large k at least at GRPO's", LARGE_K, "w_reinforce", "grpo", +1,
              "MATH pass@256 96.7 vs 95.5", test="equivalence", margin=MARGIN_LARGE_K),
        Claim("PSR lowers the policy's entropy more than NSR", "entropy", "nsr", "psr", +1,
              "abstract: reinforcing only correct responses 'degrades performance at higher k, due to reduced "
              "diversity'; NSR preserves it (entropy shown in figures only, no number)"),
    ],
    notes="""
The paper's numbers are Qwen2.5-Math-7B on MATH (pass@256, 256 samples at temperature 0.6); ours are the toy
character-level base (experiments/toy_base) on two-digit addition and subtraction, the fast testbed's protocol
(conf/experiment_scale/common_toy.yaml), pass@k up to k = 32 at temperature 1.0 on 128 held-out problems. The
testbed tests the mechanism (what reinforcing only correct or only incorrect samples does to a policy's pass@k
curve and entropy), not what it does to a pretrained LLM. `entropy` is the policy's mean token entropy on its own
samples at the last training step.
""",
)
