"""rlcr: the verifier's outcome (RLVR) vs RLCR's correctness + Brier reward on a stated confidence (Damani et al.,
arXiv 2507.16806; PAPERS.md §8): accuracy and calibration (ECE, Brier, AUROC) of the stated confidence."""

from driver import Arm, Claim, Experiment

SPEC = Experiment(
    name="rlcr",
    arms=[
        Arm("rlvr", []),
        Arm("rlcr", ["+reward=brier"]),
    ],
    seeds=[0, 1],
    metrics=["eval/pass@1", "eval/pass@16", "eval/ece", "eval/brier", "eval/auroc", "eval/confidence_mean",
             "eval/accuracy_stated", "eval/confidence_format_fail_frac", "reward/brier/ece",
             "reward/brier/confidence_mean", "accuracy", "response_length/mean", "time/elapsed"],
    claims=[
        Claim("RLCR lowers the ECE of the stated confidence below RLVR's", "eval/ece", "rlvr", "rlcr", +1,
              "HotpotQA ECE 0.37 (RLVR) -> 0.03 (RLCR); Big-Math 0.30 -> 0.05; MATH-500 0.427 -> 0.120 (repo "
              "results, Qwen2.5-7B; PAPERS.md §8)"),
        Claim("RLCR lowers the Brier score below RLVR's", "eval/brier", "rlvr", "rlcr", +1,
              "HotpotQA 0.37 -> 0.21; Big-Math 0.319 -> 0.181; MATH-500 0.438 -> 0.227"),
        Claim("RLCR's confidence separates right from wrong answers better (AUROC)", "eval/auroc", "rlcr", "rlvr",
              +1, "HotpotQA 0.50 -> 0.687; Big-Math 0.50 -> 0.726; MATH-500 0.451 -> 0.665"),
        Claim("RLCR costs no accuracy (pass@1 at least RLVR's)", "eval/pass@1", "rlcr", "rlvr", +1,
              "HotpotQA 0.63 vs 0.621 (equal); Big-Math 0.654 -> 0.687; MATH-500 0.536 -> 0.598"),
    ],
    notes="""
Both arms start from experiments/base_policy_conf: the common base recipe with a prompt asking for a confidence
in `<confidence></confidence>` and every SFT target ending in ` <confidence>q</confidence>`, q drawn uniformly
from 0.1 ... 0.9 per example, so the base states a varied confidence that says nothing about which answers are
right (our choice [ENG]; a constant q would make the Brier term constant within each group, where the group
normalisation cancels it; RLCR starts from a base
model with a format prompt, and its SFT-RLCR variant from an SFT on confidence analyses written by a larger
model). `rlvr`: the verifier's 0/1 only; the confidence tokens share each response's advantage and nothing
rewards their value. `rlcr`: `+reward=brier`, RLCR's reward 1[correct] - (q - 1[correct])^2 (the paper's
form; a response without a parseable q in [0, 1] scores -2, below any stated one). Evaluation parses the last
`<confidence>q</confidence>` of each sample (`eval.confidence_tag`); a sample without one counts in
`confidence_format_fail_frac` and not in ECE/Brier/AUROC. ECE: 10 equal-width bins (RLCR's eval code).
""",
)
