"""prm_vs_variance: the outcome reward vs a process reward (rule oracle; min / dense reward-to-go) vs DRO's R3, with
what each signal costs (Math-Shepherd arXiv 2312.08935; Lightman et al. arXiv 2305.20050; DeepSeekMath arXiv
2402.03300 §4.1.3 / §5.2.1; DRO arXiv 2506.13351)."""

from driver import Arm, Claim, Experiment

PRM = ["reward.prm.match_reference=true"]  # a step is right when it holds AND is the reference's step

# Equivalence margin for pass@1, declared before the rerun, never tuned to results: 0.05 is the
# protocol's precision target (verdicts.TARGET_HALF_WIDTH), below which a bound could not be resolved by design.
PASS1_MARGIN = 0.05

SPEC = Experiment(
    name="prm_vs_variance",
    arms=[
        Arm("outcome"),
        Arm("prm_min", ["+reward=prm", *PRM]),
        Arm("prm_dense", ["+reward=prm", *PRM, "reward.prm.dense=true"]),
        Arm("r3", ["+reward=variance"]),
    ],
    seeds=list(range(8)),
    jobs=2,
    threads=1,
    metrics=["eval/pass@1", "eval/pass@4", "eval/pass@8", "accuracy", "reward/prm/mean", "time/score",
             "scoring/forward_passes", "scoring/forward_tokens", "time/elapsed"],
    claims=[
        Claim("a dense process reward (reward-to-go) beats the outcome reward at pass@1", "eval/pass@1",
              "prm_dense", "outcome", +1,
              "DeepSeekMath §5.2.1, Fig. 5 (1.3B): GRPO with process supervision above GRPO with outcome "
              "supervision, both learned reward models (curves only, read through secondary notes). Math-Shepherd "
              "(arXiv 2312.08935) abstract: step-by-step PPO with its PRM lifts Mistral-7B from 77.9 to 84.1 on "
              "GSM8K (MATH 28.6 -> 33.0), which is PRM-PPO vs the SFT base, not vs an outcome reward; its ORM-PPO "
              "row (81.8 / 31.3) is quoted from secondary notes: number not verified"),
        Claim("the PRM (min) beats the outcome reward at pass@1", "eval/pass@1", "prm_min", "outcome", +1,
              "no RL number: PRM800K (Lightman et al., arXiv 2305.20050) compares PRM and ORM as best-of-N "
              "verifiers, not as RL rewards (PRM 78.2% of a MATH test subset; ORM 72.4% from secondary sources, "
              "number not verified)"),
        Claim("R3 (no step labels, no judge) does at least as well as the PRM (min) at pass@1", "eval/pass@1",
              "r3", "prm_min", +1,
              "not a claim of either paper: the research framing this table serves (DRO reports no PRM comparison)",
              test="equivalence", margin=PASS1_MARGIN),
        Claim("R3 costs more wall time than the oracle PRM", "time/elapsed", "r3", "prm_min", +1,
              "not a paper claim: R3 needs one extra teacher-forced pass per step (DRO v1 §5.1 computes it with "
              "vLLM; benchmarks/RESULTS.md: +29% of a step here); a rule oracle costs no pass (a learned PRM would)"),
    ],
    control="outcome",  # the verifier's 0/1 reward: the positive control
    notes="""
What each signal needs, besides the task's final answer: the outcome reward, nothing more; the PRM, a label for
every step (here a rule oracle that recomputes each `a op b = c` and compares it with the reference solution's
step at the same index: `reward.prm.match_reference=true`; a learned PRM would also need a trained judge and one
forward pass of it per step batch, which the oracle does not cost); R3, neither labels nor a judge, but one
teacher-forced pass of the policy over the Q x G rollouts with the reference answer spliced in (the
`scoring/forward_*` columns; `time/score` is the last step's scoring time). With 0/1 step scores the product of
the steps equals their minimum, so a `prod` arm would train on exactly the rewards of `prm_min` and is not run
separately, and neither is the last step (`reward.prm.aggregation=last`): with the oracle matching the
reference's steps a wrong first step carries its value into the second, so last = min = product on every
rollout of this task, and the table made on 2026-11-30 with a `prm_last` arm (git show 89c376a:
experiments/prm_vs_variance/results.md) had it equal to `prm_min` in every column to the last digit. Which
aggregation a verifier should use (last vs min vs product, compared by Snell et al., arXiv 2408.03314; their
numbers are not verified here) needs later steps that can recover from an early error, or a learned PRM's soft
scores. Nor is outcome + PRM (`+reward=[outcome,prm]`, run in the versions of 2026-11-30/12-01, git show 979fd67:
pass@1 0.089 against outcome's 0.109, inconclusive): with the oracle matching the reference's steps, the PRM
(min) is 1 only when the answer is right too, so outcome + PRM is twice the outcome reward except on right answers
reached through a wrong step, which were 25 of 1920 (1.3%) evaluation samples across that version's runs; the
group-normalised advantage is the outcome arm's in every group without such a sample.
None of the papers compares a PRM with the outcome reward as RL rewards with a number we could verify: the
Math-Shepherd gain is PRM-PPO over the SFT base, PRM800K's PRM > ORM is best-of-N verification, and DeepSeekMath's
process-over-outcome supervision (§5.2.1, Fig. 5) is a curve. The claims keep the direction those results imply.
The base (experiments/toy_base/README.md, "Two-step chains") is the fast testbed's toy model trained on two-step
chains, then fine-tuned on a mix where half of the responses guess (`Guess: N`, no steps), so a solution can be
right in step 1 and wrong in step 2 (partial credit for `prm_dense`, whose step scores enter the advantage as
group-normalised reward-to-go, DeepSeekMath §4.1.3), and a guess has no step at all (the PRM scores it
`reward.prm.empty_score`, 0), while min is nearly the outcome reward here: a wrong final step is a wrong answer.
Evaluation: 128 held-out chains x 32 samples, the same chains and eval seed for every arm.
The papers' PRMs are learned 7B judges on GSM8K/MATH; ours is exact, which is the best case for the PRM arms.
""",
)
