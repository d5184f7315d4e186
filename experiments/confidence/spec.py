"""confidence: the policy's own confidence as the training signal: Intuitor (self-certainty, arXiv 2505.19590)
and RLSF (answer-span confidence, arXiv 2507.21931: as a GRPO reward and as DPO preference pairs) vs the
verifier's outcome; in-domain and out-of-domain accuracy and the calibration of the answer-span confidence
(PAPERS.md §4)."""

from driver import Arm, Claim, Experiment

ANSWER_SPAN = ["+reward=confidence", "reward.confidence.kind=answer_span"]

SPEC = Experiment(
    name="confidence",
    arms=[
        Arm("outcome", []),
        Arm("intuitor", ["+reward=confidence", "reward.confidence.kind=self_certainty"]),
        Arm("rlsf_grpo", ANSWER_SPAN),
        Arm("rlsf_dpo", [*ANSWER_SPAN, "trainer.objective=dpo", "trainer.dpo_beta=0.1", "trainer.dpo_threshold=0.9"]),
    ],
    seeds=[0, 1],
    transfer={"ood": ["task.digits=3", "eval.n=8", "eval.pass_at_k=[1,4,8]"]},
    metrics=["eval/pass@1", "eval/pass@16", "transfer/ood/pass@1", "transfer/ood/pass@8", "eval/ece", "eval/brier",
             "eval/auroc", "eval/confidence_mean", "transfer/ood/ece", "accuracy", "reward/confidence/raw_mean",
             "dpo/pairs", "response_length/mean", "time/elapsed"],
    claims=[
        Claim("self-certainty alone (no labels) raises in-domain pass@1 over the base", "eval/pass@1", "intuitor",
              "base", +1, "Intuitor Table 1: gains on MATH500/GSM8K 'comparable to GRPO' (exact numbers not "
              "extracted; PAPERS.md §4.2)"),
        Claim("in domain, outcome GRPO stays at least level with self-certainty", "eval/pass@1", "outcome",
              "intuitor", +1, "Intuitor: matches GRPO in domain, GRPO slightly ahead on MATH500 (qualitative)"),
        Claim("self-certainty transfers better out of domain than outcome GRPO", "transfer/ood/pass@1", "intuitor",
              "outcome", +1, "Intuitor: better on LiveCodeBench / CRUXEval-O out of domain (e.g. LiveCodeBench "
              "0 -> 9.9 quoted secondhand)"),
        Claim("RLSF (DPO on confidence-ranked pairs) raises pass@1 over the base", "eval/pass@1", "rlsf_dpo", "base",
              +1, "RLSF abstract: 'improves reasoning' (numbers not found; PAPERS.md §4.1)"),
        Claim("RLSF leaves the answer-span confidence better calibrated than outcome GRPO (lower ECE)", "eval/ece",
              "outcome", "rlsf_dpo", +1, "RLSF abstract: restores calibration damaged by preference tuning "
              "(no number)"),
    ],
    notes="""
Every arm starts from the same base and has the same budget; only the training signal differs. `outcome`: the
verifier's 0/1 (GRPO). `intuitor`: self-certainty, the mean over the response of KL(uniform || p_t) under the
current policy (Intuitor Eq. 4), as the only reward. `rlsf_grpo`: the answer-span confidence (mean p_top1 -
p_top2 over the final answer's tokens; 0 without an answer) as the only reward. `rlsf_dpo`: the same confidence
ranks each group's 8 samples into pairs (chosen: confidence >= 0.9 and above the rejected; RLSF's code), trained
with the DPO loss (beta 0.1) against the frozen base. Choices the papers leave open or that differ [ENG]: RLSF
samples its traces once from a frozen model with CoT-decoding and trains offline; here the pairs come from the
current policy's samples at every step (on-policy, like the GRPO arms). Intuitor's KL 0.005 is not used (the
common protocol has no KL term, the same for every arm). No arm sees a label except `outcome` (the `accuracy`
column is logged for all, from the verifier, and trains nothing).

Calibration: every evaluation reads each sample's answer-span confidence from the evaluated policy
(`eval.confidence_score=answer_span`) and reports its ECE (10 bins), Brier and AUROC against correctness: the
confidence RLSF trains on is the one measured. Out of domain (`transfer/ood/*`): the same arithmetic with
three-digit operands, 12 held-out problems x 8 samples, which no arm trains on.
""",
)
