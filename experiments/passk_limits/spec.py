"""passk_limits: base vs RL vs SFT/distillation pass@k curves and the crossover (Yue et al., arXiv 2504.13837)."""

from driver import Arm, Claim, Experiment

SPEC = Experiment(
    name="passk_limits",
    arms=[
        Arm("grpo"),
        # the distillation arm: supervised fine-tuning on the task's worked solutions (a perfect teacher), the
        # same number of optimizer steps, sequences per step (32) and learning rate as the RL arm
        Arm("sft_distill", ["sft.steps=8", "sft.batch_size=32", "sft.lr=2e-5"], kind="sft"),
    ],
    seeds=[0, 1],
    metrics=["eval/pass@1", "eval/pass@4", "eval/pass@16", "eval/pass@64"],
    claims=[
        Claim("RL beats the base at k = 1", "eval/pass@1", "grpo", "base", +1,
              "all models/benchmarks (e.g. Omni-MATH train pass@1 26.1 -> 42.5)"),
        Claim("the base catches up at large k", "eval/pass@64", "base", "grpo", +1,
              "base ahead at k = 128-1024 (Minerva 32B: +9 points at k = 128)"),
        Claim("distillation raises the curve at large k", "eval/pass@64", "sft_distill", "base", +1,
              "DeepSeek-R1-Distill above its base at every k (Fig. on distillation)"),
    ],
    crossover=("base", "grpo"),
    notes="""
The crossover k is the smallest k from which the base stays at or above GRPO's mean curve. The distillation teacher is the task's own worked solutions (no stronger
model is available offline), so this arm is SFT on gold reasoning, which is what distillation from a stronger
model approximates.
""",
)
