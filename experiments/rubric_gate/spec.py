"""rubric_gate: the same rubric as a hard gate vs as a reward term, counting rubric hacking (Xu et al., "Direct
Reasoning Optimization", arXiv 2506.13351 v2/v3: rubric gating, read through the abstracts only)."""

from driver import Arm, Claim, Experiment

RUBRIC = ["checks=[format_valid,length]", "min_tokens=24"]  # boxed, and at least 24 tokens
MEASURE = ["+reward=[outcome,rubric]", "reward.rubric.weight=0", *[f"reward.rubric.{o}" for o in RUBRIC]]

# Non-inferiority margin for pass@1, declared before the rerun, never tuned to results: 0.05 is the
# protocol's precision target (verdicts.TARGET_HALF_WIDTH), below which a bound could not be resolved by design.
PASS1_MARGIN = 0.05

V3 = "arXiv 2506.13351 v3 abstract"

SPEC = Experiment(
    name="rubric_gate",
    arms=[
        Arm("outcome", MEASURE),
        Arm("gate", [*MEASURE, "+gate=rubric", "gate.rubric.on_fail=floor", *[f"gate.rubric.{o}" for o in RUBRIC]]),
        Arm("reward", ["+reward=[outcome,rubric]", "reward.rubric.weight=1", *[f"reward.rubric.{o}" for o in RUBRIC]]),
    ],
    seeds=[0, 1],
    metrics=["eval/pass@1", "eval/pass@16", "reward/rubric/pass_rate", "reward/rubric/pass_incorrect", "accuracy",
             "response_length/mean", "time/elapsed"],
    claims=[
        Claim("rubric gating makes the policy respect the rubric: more rollouts pass it than under the outcome "
              "reward alone", "reward/rubric/pass_rate", "gate", "outcome", +1,
              f"{V3}: rubric-gating 'as hard accept/reject checks on final answers' at the rollout-group level; "
              "the framework 'respects feasibility constraints' (no number)"),
        Claim("a rubric scored as reward is hacked: more rollouts pass it without solving the task than under a "
              "gate", "reward/rubric/pass_incorrect", "reward", "gate", +1,
              "not in the abstracts: the hacking argument for gates over rubric rewards is this table's framing "
              "(no number)"),
        Claim("the rubric reward raises rubric-passing wrong answers over the outcome reward alone",
              "reward/rubric/pass_incorrect", "reward", "outcome", +1, "not in the abstracts: this table's framing"),
        Claim("the gate keeps pass@1 at least at the rubric reward's level", "eval/pass@1", "gate", "reward", +1,
              f"{V3}: the gated framework 'outperforms strong baselines' (no number; a rubric-as-reward baseline "
              "is not named in the abstract)", test="equivalence", margin=PASS1_MARGIN),
    ],
    control="outcome",  # the verifier's reward alone (the rubric is logged with weight 0): the positive control
    notes="""
The rubric: a non-empty `\\boxed{}` answer and at least 24 completion tokens (the 'worked, not terse' kind of
check a rubric holds). For this base it is satisfiable without solving anything: its answers are one template
line whose length is set by the digits of the result, so 24 tokens are reached by a three-digit or negative
result, right or wrong. Measured on the base's evaluation samples before the table (12 held-out problems x 64):
27% pass the rubric, 20% pass it with a wrong answer, 6% with a right one. The gate arm floors a failing rollout
to its group's lowest score before the advantage (`on_fail: floor`, our choice; DRO's own
rule is not public), so a rollout earns only by being right AND passing; the reward arm adds the rubric's 0/1
to the outcome's 0/1, so a wrong answer that passes earns 1. Every arm logs the rubric with a weight-0 source;
`pass_incorrect` is the last step's share of the 32 rollouts that pass the rubric with a wrong answer.
""",
)
