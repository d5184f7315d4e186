"""dro: outcome vs DRO-Aggr vs R3 vs R3 + query filter (Xu et al., arXiv 2506.13351 v1)."""

from driver import Arm, Claim, Experiment

SPEC = Experiment(
    name="dro",
    arms=[
        Arm("outcome"),
        Arm("aggr", ["+reward=variance", "reward.variance.weighting=uniform"]),
        Arm("r3", ["+reward=variance"]),
        Arm("r3_filter", ["+reward=variance", "+filter=query"]),
    ],
    seeds=[0, 1],
    metrics=["eval/pass@1", "eval/pass@16", "eval/pass@64", "reward/variance/no_container_frac",
             "time/elapsed", "samples_seen"],
    claims=[
        Claim("R3 beats DRO-Aggr at pass@1", "eval/pass@1", "r3", "aggr", +1, "FinQA p@1 67.1 vs 63.0"),
        Claim("R3 beats the base at pass@1", "eval/pass@1", "r3", "base", +1, "FinQA p@1 67.1 vs 61.7"),
        Claim("R3 is close to the binary outcome reward", "eval/pass@1", "r3", "outcome", -1,
              "FinQA p@1 67.1 vs 68.0 (outcome slightly higher)"),
        Claim("the query filter cuts training time", "time/elapsed", "r3_filter", "r3", -1,
              "~45% less training time at comparable final reward (v1 §5.2.1, Fig. 3c)"),
        Claim("the query filter keeps the final score", "eval/pass@1", "r3_filter", "r3", +1,
              "'comparable final reward scores'"),
    ],
    notes="""
The task gives R3 a reasoning/answer split that exists and multi-token outcomes: the SFT'd base writes its
worked steps and then `The answer is \\boxed{N}` (R3's answer container; `no_container_frac` in the table says
how often it did not), and two-digit operands make the reference 2-3 digit tokens. The "2-3x faster" figure
quoted for DRO was found in no version of the paper (PAPERS.md §1.6); the filter's effect on wall time is
measured here against v1's ~45%. The online query filter drops the lowest quarter of each step's groups by
max_j sigma_j; since the step still trains on the kept groups, fewer sequences enter the update.
""",
)
