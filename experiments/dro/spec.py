"""dro: outcome vs DRO-Aggr vs R3 vs R3 + query filter (Xu et al., "Direct Reasoning Optimization", arXiv 2506.13351
v1; the FinQA numbers are v1's Table 2, the filter's training time v1 §5.2.1 / Fig. 3(c))."""

from driver import Arm, Claim, Experiment

# Equivalence margin for pass@1, declared before the rerun, never tuned to results. 0.05 is the
# protocol's precision target (verdicts.TARGET_HALF_WIDTH: a smaller margin could not be resolved by design) and
# covers the gap the paper itself calls "comparable" (R3 0.9 points below the binary reward on FinQA pass@1).
PASS1_MARGIN = 0.05

TABLE2 = "v1 Table 2, FinQA, DeepSeek-R1-Distill-Qwen-7B"

SPEC = Experiment(
    name="dro",
    arms=[
        Arm("outcome"),
        Arm("aggr", ["+reward=variance", "reward.variance.weighting=uniform"]),
        Arm("r3", ["+reward=variance"]),
        Arm("r3_filter", ["+reward=variance", "+filter=query"]),
    ],
    seeds=list(range(8)),
    jobs=2,
    threads=1,
    metrics=["eval/pass@1", "eval/pass@8", "eval/pass@32", "reward/variance/no_container_frac",
             "time/elapsed", "samples_seen"],
    claims=[
        Claim("R3 beats DRO-Aggr at pass@1", "eval/pass@1", "r3", "aggr", +1, f"{TABLE2}: pass@1 67.1 vs 63.0"),
        Claim("R3 beats the base at pass@1", "eval/pass@1", "r3", "base", +1, f"{TABLE2}: pass@1 67.1 vs 61.7"),
        Claim("R3 is close to the binary outcome reward at pass@1", "eval/pass@1", "r3", "outcome", 0,
              f"{TABLE2}: pass@1 67.1 vs 68.0, R3 'falls only 0.9% short on Pass@1' and 'achieves gains comparable "
              "to those obtained using correctness-based rewards' (v1, text beside Table 2)", test="equivalence",
              margin=PASS1_MARGIN),
        Claim("the query filter cuts training time", "time/elapsed", "r3_filter", "r3", -1,
              "v1 §5.2.1, Fig. 3(c), on ParaRev (not FinQA): 'reduces training time by 45% while achieving "
              "comparable final reward scores'"),
        Claim("the query filter keeps the final score", "eval/pass@1", "r3_filter", "r3", +1,
              "v1 §5.2.1, Fig. 3(c), ParaRev: 'comparable final reward scores' (the paper's measure is the training "
              "reward; ours is held-out pass@1)", test="equivalence", margin=PASS1_MARGIN),
    ],
    control="outcome",  # the binary verifier reward (the paper's "Correctness" baseline): the positive control
    notes="""
Runs on the fast testbed (experiments/toy_base): the base writes its worked step (or a guess) and then
`The answer is \\boxed{N}` (R3's answer container; `no_container_frac` in the table says how often it did not),
and its character tokenizer makes the reference 1-3 digit tokens, so R3's per-token weights have something to
weigh. What the testbed cannot say: anything about long chains of thought or FinQA. "R3 is close to the outcome
reward" is a two-sided equivalence claim (TOST, margin 0.05 in pass@1); "the filter keeps the final score" is
one-sided (r3_filter - r3 > -0.05). The "2-3x faster" figure sometimes quoted for DRO is not in v1, which reports
~45% less training time from the filter on ParaRev (§5.2.1, Fig. 3(c)); v2/v3 were read only through their
abstracts. The online query filter drops the lowest quarter of each step's groups by max_j sigma_j; since the
step still trains on the kept groups, fewer sequences enter the update.
""",
)
