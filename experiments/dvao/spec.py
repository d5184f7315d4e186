"""dvao: multi-objective advantages: reward combination vs advantage combination vs GDPO vs DVAO (arXiv 2605.25604;
GDPO arXiv 2601.05242; TRL's multi_objective_aggregation)."""

from driver import Arm, Claim, Experiment

OBJECTIVES = ["+reward=[outcome,format,overlong]", "reward.overlong.buffer=32"]  # equal base weights (1, 1, 1)

SPEC = Experiment(
    name="dvao",
    arms=[
        Arm("rc", [*OBJECTIVES, "trainer.advantage.combine=sum_then_normalize"]),
        Arm("ac", [*OBJECTIVES, "trainer.advantage.combine=normalize_then_sum_no_batch"]),
        Arm("gdpo", [*OBJECTIVES, "trainer.advantage.combine=normalize_then_sum"]),
        Arm("dvao", [*OBJECTIVES, "trainer.advantage.combine=dvao"]),
    ],
    seeds=[0, 1],
    smoke=["reward.overlong.buffer=4"],  # the smoke run samples 8 tokens
    metrics=["eval/pass@1", "eval/pass@16", "reward/outcome/mean", "reward/format/mean", "reward/overlong/mean",
             "response_length/mean", "advantage/adv/mean_sq", "advantage/adv/abs_max", "advantage/weight/outcome",
             "advantage/weight/overlong", "time/elapsed"],
    claims=[
        Claim("DVAO beats reward combination (sum then normalise) at pass@1", "eval/pass@1", "dvao", "rc", +1,
              "abstract: DVAO outperforms RC, AC and GDPO (no numbers reachable; PAPERS.md §5)"),
        Claim("DVAO beats GDPO at pass@1", "eval/pass@1", "dvao", "gdpo", +1,
              "abstract (no numbers); GDPO itself reports up to +6.3% AIME over GRPO"),
        Claim("summed per-objective z-scores (AC) give larger advantages than DVAO", "advantage/adv/mean_sq", "ac",
              "dvao", +1, "abstract: RC/AC advantages of 'excessively large squared magnitudes'; DVAO's are bounded "
              "(|A| <= sqrt(G-1) for any K, PAPERS.md §5.2)"),
        Claim("DVAO does not drown the length objective (vs RC)", "reward/overlong/mean", "dvao", "rc", +1,
              "abstract: 'up-weighting objectives with a stronger learning signal while suppressing noisy ones'"),
    ],
    notes="""
Every arm trains on the same three scores per rollout (equal base weights, no tuning): the verifier's 0/1, the
\\boxed{} format 0/1 and the soft length punishment -(L - 16)/32 for L > 16 tokens. Only the combination differs:
RC sums the scores then normalises within the group (TRL's sum_then_normalize); AC sums the per-objective group
z-scores; GDPO is AC followed by a normalisation over the batch; DVAO divides the sum of the centred scores by the
weighted sum of the per-objective within-group stds (the third-party formula of PAPERS.md §5.2, not the authors'
code, which is not public). The base boxes every answer, so the format objective is nearly constant (zero
within-group variance: DVAO gives it weight 0 and AC/GDPO a zero z-score); its reward is recorded so that a
length pressure that cut the box would show. Advantage magnitudes and DVAO's effective weights are the last
step's values. The paper's experiments (math and tool use on Qwen models) and numbers were not reachable.
""",
)
