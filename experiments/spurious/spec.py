"""spurious: ground truth vs format vs random vs incorrect label vs inverse (Shao et al., arXiv 2506.10947)."""

from driver import Arm, Claim, Experiment

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
    metrics=["eval/pass@1", "eval/pass@64", "eval/answered_frac", "eval/mean_length"],
    claims=[
        Claim("ground-truth reward raises pass@1", "eval/pass@1", "ground_truth", "base", +1,
              "MATH-500 +29.1 (Qwen2.5-Math-7B); still helps on Llama/OLMo"),
        Claim("random reward (p=0.5) raises pass@1", "eval/pass@1", "random", "base", +1,
              "+21.4 on Qwen2.5-Math-7B; 'minimal or negative' on Llama3.1-8B / OLMo2-7B"),
        Claim("format reward raises pass@1", "eval/pass@1", "format", "base", +1, "+13.8 (v1) / +16.4 (blog)"),
        Claim("incorrect-label reward raises pass@1", "eval/pass@1", "incorrect_label", "base", +1,
              "+24.1 (v1) / +24.6 (blog)"),
        Claim("ground truth beats random", "eval/pass@1", "ground_truth", "random", +1, "+29.1 vs +21.4"),
        Claim("format reward reinforces the answer style", "eval/answered_frac", "format", "base", +1,
              "code-reasoning rate 65% -> >90% under spurious rewards (the analogous behaviour here: "
              "answering in \\boxed{})"),
    ],
    notes="""
One model family only: the embedded SmolLM2-135M (SFT'd to a base with partial skill) is the only model
available offline, so the paper's contrast between Qwen2.5-Math and Llama/OLMo cannot be tested here; the
paper's expectation for non-Qwen models is small or negative gains from spurious rewards. Every arm has the
same clip range (0.2) and 4 optimiser steps per rollout batch (4 mini-batches of one prompt's 8 samples; the
paper has 8 from mini-batching, PAPERS.md §3.2), so the clipping bias the paper's later version blames for
random-reward gains is present in every arm alike. `answered_frac` is the share of eval
samples with an extractable answer (the verifier found one), the answer-style behaviour a format reward pays for.
""",
)
