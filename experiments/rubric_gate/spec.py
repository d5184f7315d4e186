"""rubric_gate: the same rubric as a hard gate vs as a dense reward term, counting rubric hacking (DRO v3,
arXiv 2506.13351 abstract; PAPERS.md §1.4)."""

from driver import Arm, Claim, Experiment

RUBRIC = ["checks=[format_valid,length]", "min_tokens=24"]  # boxed, and at least 24 tokens
MEASURE = ["+reward=[outcome,rubric]", "reward.rubric.weight=0", *[f"reward.rubric.{o}" for o in RUBRIC]]

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
        Claim("a rubric reward is hacked: more rollouts satisfy it without solving the task than under a gate",
              "reward/rubric/pass_incorrect", "reward", "gate", +1,
              "v3 abstract: gating 'as hard accept/reject checks' (no number; the hacking argument is the "
              "research framing)"),
        Claim("the rubric reward raises rubric-passing wrong answers over the outcome reward alone",
              "reward/rubric/pass_incorrect", "reward", "outcome", +1, "no number"),
        Claim("the gate keeps pass@1 at least at the rubric reward's", "eval/pass@1", "gate", "reward", +1,
              "no number"),
    ],
    notes="""
The rubric: a non-empty `\\boxed{}` answer and at least 24 completion tokens (the 'worked, not terse' kind of
check a rubric holds). For this base it is satisfiable without solving anything: its answers are one template
line whose length is set by the digits of the result, so 24 tokens are reached by a three-digit or negative
result, right or wrong. Measured on the base's evaluation samples before the table (12 held-out problems x 64):
27% pass the rubric, 20% pass it with a wrong answer, 6% with a right one. The gate arm floors a failing rollout
to its group's lowest score before the advantage (`on_fail: floor`, the suggestion of PAPERS.md §1.4; DRO's own
rule is not public), so a rollout earns only by being right AND passing; the reward arm adds the rubric's 0/1
to the outcome's 0/1, so a wrong answer that passes earns 1. Every arm logs the rubric with a weight-0 source;
`pass_incorrect` is the last step's share of the 32 rollouts that pass the rubric with a wrong answer.
""",
)
