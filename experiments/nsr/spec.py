"""nsr: base vs GRPO vs PSR vs NSR vs W-REINFORCE (Zhu et al., arXiv 2506.01347); README.md beside this file."""

from driver import Arm, Claim, Experiment

SPEC = Experiment(
    name="nsr",
    arms=[
        Arm("grpo"),
        Arm("psr", ["+reward=positive_only"]),
        Arm("nsr", ["+reward=negative_only"]),
        Arm("w_reinforce", ["+reward=w_reinforce"]),
    ],
    seeds=[0, 1],
    metrics=["eval/pass@1", "eval/pass@8", "eval/pass@64", "entropy"],
    claims=[
        Claim("PSR raises pass@1 over the base", "eval/pass@1", "psr", "base", +1,
              "MATH pass@1 63.2 -> 74.1"),
        Claim("NSR raises pass@1 over the base", "eval/pass@1", "nsr", "base", +1,
              "MATH pass@1 63.2 -> 75.7"),
        Claim("NSR keeps large-k pass@k above PSR", "eval/pass@64", "nsr", "psr", +1,
              "MATH pass@256 NSR 96.9 vs PSR 91.2"),
        Claim("NSR keeps large-k pass@k at least at GRPO's", "eval/pass@64", "nsr", "grpo", +1,
              "MATH pass@256 NSR 96.9 vs GRPO 95.5"),
        Claim("W-REINFORCE (λ=0.1) at least matches GRPO at large k", "eval/pass@64", "w_reinforce", "grpo", +1,
              "MATH pass@256 96.7 vs 95.5"),
        Claim("PSR lowers the policy's entropy more than NSR", "entropy", "nsr", "psr", +1,
              "§4.2: NSR keeps entropy near the base, PSR collapses it (figure only)"),
    ],
    notes="""
The paper's numbers are Qwen2.5-Math-7B on MATH (pass@256, 256 samples at temperature 0.6); ours are the SFT'd
SmolLM2-135M base on two-digit addition and subtraction, 8 steps of 4 prompts x 8 samples, pass@k up to k = 64 at
temperature 1.0. `entropy` is the policy's mean token entropy on its own samples at the last training step.
""",
)
