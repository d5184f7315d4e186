"""rubric_gate: the same rubric as a hard gate vs as a reward term, counting rubric hacking (Xu et al., "Direct
Reasoning Optimization", arXiv 2506.13351 v2/v3: rubric gating, read through the abstracts only)."""

from driver import Arm, Claim, Experiment

MIN_TOKENS = 37
"""The rubric's length check, by the rule the SmolLM2 version of this table used (24 tokens there): the threshold a
three-character answer reaches, right or wrong. On the toy's character tokens (EOS counted) a worked answer is
`a op b = c`, a newline and `The answer is \\boxed{c}`: 34 + 2 len(c) tokens; a guess `Guess: N` ... `\\boxed{N}` is
31 + 2 len(N). So 37 passes a guess of three characters (N in 100..198 or -10..-89, 179 of the 288 values) and a
worked answer of two or more; declared before the rerun from those lengths and the base's calibration samples
(experiments/toy_base/calibration: 68% of them pass, 52% with a wrong answer, 15% with a right one)."""
RUBRIC = ["checks=[format_valid,length]", f"min_tokens={MIN_TOKENS}"]  # boxed, and at least MIN_TOKENS tokens
MEASURE = ["+reward=[outcome,rubric]", "reward.rubric.weight=0", *[f"reward.rubric.{o}" for o in RUBRIC]]

# Non-inferiority margin for pass@1, declared before the rerun, never tuned to results: 0.05 is the
# protocol's precision target (verdicts.TARGET_HALF_WIDTH), below which a bound could not be resolved by design.
PASS1_MARGIN = 0.05

V3 = "arXiv 2506.13351 v3 abstract"

# The rubric shares of the training rollouts averaged over the last 8 of the 16 steps (256 rollouts per seed;
# the last step alone has 32), declared before the rerun.
PASS_RATE = "reward/rubric/pass_rate@last8"
PASS_INCORRECT = "reward/rubric/pass_incorrect@last8"

SPEC = Experiment(
    name="rubric_gate",
    arms=[
        Arm("outcome", MEASURE),
        Arm("gate", [*MEASURE, "+gate=rubric", "gate.rubric.on_fail=floor", *[f"gate.rubric.{o}" for o in RUBRIC]]),
        Arm("reward", ["+reward=[outcome,rubric]", "reward.rubric.weight=1", *[f"reward.rubric.{o}" for o in RUBRIC]]),
    ],
    seeds=list(range(8)),
    jobs=2,
    threads=1,
    metrics=["eval/pass@1", "eval/pass@16", PASS_RATE, PASS_INCORRECT, "reward/rubric/pass_rate",
             "reward/rubric/pass_incorrect", "accuracy",
             "response_length/mean", "time/elapsed"],
    claims=[
        Claim("rubric gating makes the policy respect the rubric: more rollouts pass it than under the outcome "
              "reward alone", PASS_RATE, "gate", "outcome", +1,
              f"{V3}: rubric-gating 'as hard accept/reject checks on final answers' at the rollout-group level; "
              "the framework 'respects feasibility constraints' (no number)"),
        Claim("a rubric scored as reward is hacked: more rollouts pass it without solving the task than under a "
              "gate", PASS_INCORRECT, "reward", "gate", +1,
              "not in the abstracts: the hacking argument for gates over rubric rewards is this table's framing "
              "(no number)"),
        Claim("the rubric reward raises rubric-passing wrong answers over the outcome reward alone",
              PASS_INCORRECT, "reward", "outcome", +1, "not in the abstracts: this table's framing"),
        Claim("the gate keeps pass@1 at least at the rubric reward's level", "eval/pass@1", "gate", "reward", +1,
              f"{V3}: the gated framework 'outperforms strong baselines' (no number; a rubric-as-reward baseline "
              "is not named in the abstract)", test="equivalence", margin=PASS1_MARGIN),
    ],
    control="outcome",  # the verifier's reward alone (the rubric is logged with weight 0): the positive control
    notes="""
The rubric: a non-empty `\\boxed{}` answer and at least 37 completion tokens, EOS counted (the 'worked, not terse'
kind of check a rubric holds). For the fast testbed's base it is satisfiable without solving anything: its
answers are a template whose length is set by the characters of the answer, so 37 tokens are reached by any
three-character answer, right or wrong, and by a guess (`Guess: 150`) as well as a worked solution (the rule
and the lengths: MIN_TOKENS in spec.py; the SmolLM2 version of this table used 24 of SmolLM2's tokens by the same
rule). Measured on the base's calibration samples before the table (128 held-out problems x 32): 68% pass the
rubric, 52% pass it with a wrong answer, 15% with a right one. The gate arm floors a failing rollout to its
group's lowest score before the advantage (`on_fail: floor`, our choice; DRO's own rule is not public), so a
rollout earns only by being right AND passing; the reward arm adds the rubric's 0/1 to the outcome's 0/1, so a
wrong answer that passes earns 1. Every arm logs the rubric with a weight-0 source; `pass_rate@last8` and
`pass_incorrect@last8` are the shares of the training rollouts that pass the rubric (with a wrong answer, for
the second) averaged over the last 8 of the 16 steps (256 rollouts per seed).
""",
)
