"""prm_vs_variance: the outcome reward vs a process reward (rule oracle; min / last / dense reward-to-go) vs DRO's
R3, with what each signal costs (Lightman et al. 2023; Math-Shepherd; Snell et al. 2024;
DeepSeekMath §4.1.3; DRO arXiv 2506.13351)."""

from driver import Arm, Claim, Experiment

PRM = ["reward.prm.match_reference=true"]  # a step is right when it holds AND is the reference's step

SPEC = Experiment(
    name="prm_vs_variance",
    arms=[
        Arm("outcome"),
        Arm("prm_min", ["+reward=prm", *PRM]),
        Arm("prm_dense", ["+reward=prm", *PRM, "reward.prm.dense=true"]),
        Arm("r3", ["+reward=variance"]),
    ],
    seeds=[0, 1],
    metrics=["eval/pass@1", "eval/pass@4", "eval/pass@8", "accuracy", "reward/prm/mean", "time/score",
             "scoring/forward_passes", "scoring/forward_tokens", "time/elapsed"],
    claims=[
        Claim("a dense process reward (reward-to-go) beats the outcome reward at pass@1", "eval/pass@1",
              "prm_dense", "outcome", +1,
              "Math-Shepherd step-by-step PPO, Mistral-7B: GSM8K 77.9 -> 84.1, MATH 28.6 -> 33.0 over the SFT base; "
              "PRM above ORM (direction; PAPERS.md §10.1)"),
        Claim("the PRM (min) beats the outcome reward at pass@1", "eval/pass@1", "prm_min", "outcome", +1,
              "PRM800K best-of-1860 on MATH: PRM 78.2% vs ORM 72.4% (verification, not RL)"),
        Claim("R3 (no step labels, no judge) does at least as well as the PRM (min) at pass@1", "eval/pass@1",
              "r3", "prm_min", +1, "the research framing this project serves; no paper number"),
        Claim("R3 costs more wall time than the oracle PRM", "time/elapsed", "r3", "prm_min", +1,
              "R3: one extra teacher-forced pass per step (benchmarks/RESULTS.md: +18% of a step); a rule oracle "
              "costs no pass (a learned PRM would)"),
    ],
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
experiments/prm_vs_variance/results.md) had it equal to `prm_min` in every column to the last digit; Snell et
al.'s last-vs-min claim (verification, 256 samples: last ~37% vs min 35% vs prod 27%) needs later steps that can
recover from an early error, or a learned PRM's soft scores. Nor is outcome + PRM (`+reward=[outcome,prm]`, run
in the versions of 2026-11-30/12-01, git show 979fd67: pass@1 0.089 against outcome's 0.109, inconclusive): with
the oracle matching the reference's steps, the PRM (min) is 1 only when the answer is right too, so outcome + PRM
is twice the outcome reward except on right answers reached through a wrong step, which were 25 of 1920 (1.3%)
evaluation samples across that version's runs; the group-normalised advantage is the outcome arm's in every group
without such a sample. Dropping it keeps the table within the hour (63.9 minutes with it, on a quiet machine).
Evaluation: 8 samples per held-out chain, not the common 64 (a two-step answer is ~35 tokens; 64 samples took
3.3 minutes per evaluation and the table 85, 16 samples 70 s per evaluation), as in seed_methods; the pass@1
intervals are set by the spread over seeds, not by the 96 samples behind each run's pass@1.
The base was SFT'd on two-step chains (experiments/base_policy_2op: pass@1 about 0.1 on held-out
chains), so a solution can be right in step 1 and wrong in step 2 (partial credit for `prm_dense`, whose step
scores enter the advantage as group-normalised reward-to-go, DeepSeekMath §4.1.3), while min and last are nearly
the outcome reward here: a wrong final step is a wrong answer. The papers' PRMs are learned 7B judges on
GSM8K/MATH; ours is exact, which is the best case for the PRM arms.
""",
)
