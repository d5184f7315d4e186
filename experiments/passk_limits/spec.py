"""passk_limits: base vs RL vs SFT/distillation pass@k curves and the crossover (Yue et al., "Does Reinforcement
Learning Really Incentivize Reasoning Capacity in LLMs Beyond the Base Model?", arXiv 2504.13837)."""

from driver import Arm, Claim, Experiment

SPEC = Experiment(
    name="passk_limits",
    arms=[
        Arm("grpo"),
        # the distillation arm: supervised fine-tuning on the task's worked solutions (a perfect teacher), the
        # same number of optimizer steps, sequences per step (32) and learning rate as the RL arm
        Arm("sft_distill", ["sft.steps=16", "sft.batch_size=32", "sft.lr=1e-4"], kind="sft"),
    ],
    seeds=list(range(8)),
    jobs=2,
    threads=1,
    metrics=["eval/pass@1", "eval/pass@4", "eval/pass@8", "eval/pass@32"],
    claims=[
        Claim("RL beats the base at k = 1", "eval/pass@1", "grpo", "base", +1,
              "arXiv 2504.13837 abstract: 'RLVR-trained models outperform their base models at small k (e.g., "
              "k = 1)'; training-set pass@1 on Omni-MATH-Rule rises 26.1 -> 42.5 during RL (§4.4, Fig. 1 right)"),
        Claim("the base catches up with RL at large k", "eval/pass@32", "base", "grpo", +1,
              "§3.1: 'base models consistently catch up to and eventually surpass RL-trained models'; e.g. Minerva, "
              "32B: the base ahead by about 9% at k = 128"),
        Claim("distillation raises the pass@k curve above the base at large k", "eval/pass@32", "sft_distill",
              "base", +1,
              "§4.2, Fig. 7: DeepSeek-R1-Distill-Qwen-7B's pass@k curve is 'consistently and significantly above' "
              "its base Qwen2.5-Math-7B's (distillation from a stronger teacher; ours is SFT on gold solutions)"),
    ],
    control="grpo",  # the RL arm trains on the outcome (verifier) reward: the positive control
    crossover=("base", "grpo"),
    notes="""
The crossover k is the smallest k from which the base stays at or above GRPO's mean curve. The paper reads its
curves up to k = 128-1024; ours stop at k = 32 (the largest k the fast testbed's n = 32 allows), so "the base
catches up" is tested at k = 32. The distillation teacher is the task's own worked solutions (no stronger model is available
offline), so this arm is SFT on gold reasoning, which is what distillation from a stronger model approximates;
the paper's distilled model learns from DeepSeek-R1's traces.
""",
)
