"""seed_methods: the newer ways to get dense or label-free credit, at equal wall time: the outcome reward vs a
generative step judge (GenPRM / ThinkPRM style), Monte-Carlo step values (Math-Shepherd), SRL then RLVR (arXiv
2510.25992), SDPO's feedback-conditioned self-teacher (arXiv 2601.20802), Tree-GRPO (arXiv 2509.21240) and DRO's R3
(arXiv 2506.13351). Every arm trains for ``trainer.time_budget`` seconds (conf/experiment_scale/seed_methods_cpu.yaml).
"""

from driver import Arm, Claim, Experiment

SPEC = Experiment(
    name="seed_methods",
    arms=[
        Arm("outcome"),
        Arm("judge", ["+reward=prm", "reward.prm.kind=generative"]),
        Arm("mc_values", ["+reward=prm", "reward.prm.kind=monte_carlo", "reward.prm.dense=true"]),
        Arm("srl_rlvr", ["trainer.srl_steps=3"], smoke=["trainer.steps=2", "trainer.srl_steps=1"]),
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
              "GenPRM-7B ProcessBench F1 75.2 vs Math-Shepherd-PRM-7B 31.5 (verification, not RL; PAPERS.md §10.1); "
              "no RL number"),
        Claim("Monte-Carlo step values (dense) beat the outcome reward at pass@1", "eval/pass@1", "mc_values",
              "outcome", +1,
              "Math-Shepherd step-by-step PPO with an MC-labelled PRM, Mistral-7B: GSM8K 77.9 -> 84.1 (PAPERS.md §10.1)"),
        Claim("SRL then RLVR beats RLVR alone at pass@1", "eval/pass@1", "srl_rlvr", "outcome", +1,
              "SRL's abstract: SRL followed by RLVR is its strongest recipe (no number transcribed here)"),
        Claim("SDPO's self-teacher beats the outcome reward at pass@1", "eval/pass@1", "sdpo", "outcome", +1,
              "SDPO (arXiv 2601.20802) reports gains over GRPO (direction; no number in PAPERS.md)"),
        Claim("Tree-GRPO beats chain GRPO at the same budget at pass@1", "eval/pass@1", "tree", "outcome", +1,
              "Tree-GRPO README: beats chain-based GRPO on Qwen2.5-3B with a quarter of the rollout budget "
              "(PAPERS.md §11)"),
        Claim("R3 is close to the outcome reward at pass@1", "eval/pass@1", "r3", "outcome", -1,
              "DRO FinQA p@1 67.1 vs 68.0 for the binary outcome reward (PAPERS.md §1.6)"),
    ],
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
then RLVR with the outcome reward); SDPO the reference answer shown to the teacher (one teacher-forced pass of the
policy with the feedback-conditioned prompt); Tree-GRPO nothing (2 trees of 1 chain + 3 branches per prompt,
the same 8 leaves; its shared prefixes are sampled once: `rollout/tokens_generated_total`); R3 nothing but one
teacher-forced pass with the reference answer spliced in. Options are the components' defaults; none was tuned
for this table. Because the budget is wall time, a rerun on another machine (or a busier one) may stop an arm a
step earlier or later and so change its accuracy columns; the seeds fix everything else. `scale=paper` has no
SRL arm that runs as such: GSM8K has no worked-step column (task.srl needs one).
""",
)
