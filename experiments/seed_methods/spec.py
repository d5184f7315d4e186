"""seed_methods: the newer ways to get dense or label-free credit, at equal wall time: the outcome reward vs a
generative step judge (GenPRM style, arXiv 2504.00891), Monte-Carlo step values (Math-Shepherd, arXiv 2312.08935),
SRL then RLVR (arXiv 2510.25992), SDPO's feedback-conditioned self-teacher (arXiv 2601.20802), Tree-GRPO (arXiv
2509.21240) and DRO's R3 (arXiv 2506.13351). Every arm trains for ``trainer.time_budget`` seconds
(conf/experiment_scale/seed_methods_cpu.yaml).
"""

from typing import Optional

from driver import Arm, Claim, Experiment

SRL_STEPS = 3  # trainer.srl_steps of the srl_rlvr arm: steps 1..3 are SRL, RLVR starts at step 4
BASE_SEED = -1

# Equivalence margin for pass@1, declared before the rerun, never tuned to results: 0.05 is the
# protocol's precision target (verdicts.TARGET_HALF_WIDTH; a smaller margin could not be resolved by design) and
# covers the gap DRO calls "comparable" (R3 0.9 points below the binary reward on FinQA pass@1, v1 Table 2).
PASS1_MARGIN = 0.05


def check_srl_reached_rlvr(values) -> Optional[str]:
    """SRL then RLVR: not testable when a seed spent its whole time budget in the SRL stage (its last training step,
    the `step` column, is at most SRL_STEPS), since that run never trained with RLVR and so does not test the
    recipe. Declared before the rerun: every seed must reach at least one RLVR step."""
    steps = values("srl_rlvr", "step").values
    seeds = sorted(s for s in steps if s != BASE_SEED)
    short = [s for s in seeds if steps[s] <= SRL_STEPS]
    if not short:
        return None
    return (f"seed(s) {', '.join(map(str, short))} of {len(seeds)} spent the whole time budget in the SRL stage "
            f"(last step {', '.join(f'{steps[s]:g}' for s in short)} <= srl_steps = {SRL_STEPS}): no RLVR step, so "
            f"the SRL-then-RLVR recipe was not run")


SPEC = Experiment(
    name="seed_methods",
    arms=[
        Arm("outcome"),
        Arm("judge", ["+reward=prm", "reward.prm.kind=generative"]),
        Arm("mc_values", ["+reward=prm", "reward.prm.kind=monte_carlo", "reward.prm.dense=true"]),
        Arm("srl_rlvr", [f"trainer.srl_steps={SRL_STEPS}"], smoke=["trainer.steps=2", "trainer.srl_steps=1"]),
        Arm("sdpo", ["+reward=sdpo"]),
        Arm("tree", ["rollout.tree.enabled=true", "trainer.advantage.estimator=tree"],
            smoke=["rollout.tree.trees=1", "rollout.tree.branches=1"]),
        Arm("r3", ["+reward=variance"]),
    ],
    seeds=[0, 1],
    metrics=["eval/pass@1", "eval/pass@4", "eval/pass@8", "accuracy", "step", "time/elapsed", "time/score",
             "rollout/tokens_generated_total", "scoring/forward_tokens", "scoring/judge_tokens", "scoring/mc_tokens"],
    claims=[
        Claim("a generative step judge (the policy judging each step) beats the outcome reward at pass@1",
              "eval/pass@1", "judge", "outcome", +1,
              "GenPRM (arXiv 2504.00891) abstract: a 7B GenPRM surpasses Qwen2.5-Math-PRM-72B on ProcessBench, as a "
              "verifier, not as an RL reward; no RL-vs-outcome number (the RL claim is this table's framing)"),
        Claim("Monte-Carlo step values (dense) beat the outcome reward at pass@1", "eval/pass@1", "mc_values",
              "outcome", +1,
              "Math-Shepherd (arXiv 2312.08935) abstract: step-by-step PPO with its MC-labelled PRM lifts Mistral-7B "
              "from 77.9 to 84.1 on GSM8K (MATH 28.6 -> 33.0): PRM-PPO vs the SFT base, not vs an outcome reward; "
              "its ORM-PPO row (81.8 / 31.3) is quoted from secondary notes: number not verified"),
        Claim("SRL then RLVR beats RLVR alone at pass@1", "eval/pass@1", "srl_rlvr", "outcome", +1,
              "arXiv 2510.25992 abstract: 'initializing training with SRL before refining with RLVR yields the "
              "strongest overall performance' (no number verified)", check=check_srl_reached_rlvr),
        Claim("SDPO's self-teacher beats the outcome reward at pass@1", "eval/pass@1", "sdpo", "outcome", +1,
              "arXiv 2601.20802 abstract: SDPO 'improves sample efficiency and final accuracy over strong RLVR "
              "baselines' and 'outperforms baselines in standard RLVR environments that only return scalar "
              "feedback' (no number verified)"),
        Claim("Tree-GRPO beats chain GRPO at the same budget at pass@1", "eval/pass@1", "tree", "outcome", +1,
              "arXiv 2509.21240 abstract: tree search 'increases the number of rollouts achievable within a fixed "
              "budget'; experiments on 11 QA datasets show 'the superiority of the proposed tree-based RL over the "
              "chain-based RL method' (agent tasks; no number verified)"),
        Claim("R3 is close to the outcome reward at pass@1", "eval/pass@1", "r3", "outcome", 0,
              "DRO (arXiv 2506.13351) v1 Table 2, FinQA: R3 pass@1 67.1 vs 68.0 for the binary outcome reward, "
              "'comparable'", test="equivalence", margin=PASS1_MARGIN),
    ],
    control="outcome",  # the verifier's 0/1 reward at the same wall-time budget: the positive control
    notes="""
Every arm trains for the same 120 s of wall time (sampling, scoring and updates; the evaluation after it is not
counted) and stops after the step that spends it, so an expensive signal buys fewer steps: the `step` column is
how many each reached, `time/elapsed` the training seconds actually spent (the last step overshoots the budget by
up to one step), `time/score` the last step's scoring seconds. What each signal needs besides the final answer:
the judge (`reward.prm.kind=generative`, judge = the policy itself, a single-token verdict " Yes"/" No" after each
step, no written verification: `judge_verify_tokens=0`) one teacher-forced pass per step prefix, and nothing else;
the Monte-Carlo values (`kind=monte_carlo`, 4 continuations from each step's end, the fraction that reach the
answer, as dense reward-to-go) 4 x (steps - 1) extra sampled continuations per rollout (`scoring/mc_tokens`); SRL
the expert's solution steps (here the task's worked steps: 3 steps on step-wise rows with the similarity reward,
then RLVR with the outcome reward; the SRL-then-RLVR claim is "not testable" when a seed never reached an RLVR
step); SDPO the reference answer shown to the teacher (one teacher-forced pass of the
policy with the feedback-conditioned prompt); Tree-GRPO nothing (2 trees of 1 chain + 3 branches per prompt,
the same 8 leaves; its shared prefixes are sampled once: `rollout/tokens_generated_total`); R3 nothing but one
teacher-forced pass with the reference answer spliced in. Options are the components' defaults; none was tuned
for this table. Because the budget is wall time, a rerun on another machine (or a busier one) may stop an arm a
step earlier or later and so change its accuracy columns; the seeds fix everything else. `scale=paper` has no
SRL arm that runs as such: GSM8K has no worked-step column (task.srl needs one).
""",
)
