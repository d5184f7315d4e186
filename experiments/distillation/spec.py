"""distillation: RL on the outcome reward vs on-policy distillation from a stronger teacher vs both, on the fast CPU
testbed; README.md beside this file."""

from driver import Arm, Claim, Experiment

TEACHER = "reward.distill.teacher=experiments/toy_base/sft/model"
"""Stage 1 of the toy base (`make toy-base` builds it before the base itself)."""
SMOKE_TEACHER = ["reward.distill.teacher=tiny"]  # the smoke's student is model=tiny: its own tokenizer

SPEC = Experiment(
    name="distillation",
    arms=[
        Arm("rl"),
        Arm("distill", ["+reward=distill", TEACHER], smoke=SMOKE_TEACHER),
        Arm("rl_distill", ["+reward=[outcome,distill]", TEACHER], smoke=SMOKE_TEACHER),
    ],
    seeds=list(range(8)),
    metrics=["eval/pass@1", "eval/pass@32", "entropy", "time/step@last16"],
    control="rl",
    jobs=2,
    threads=1,
    claims=[
        Claim("on-policy distillation from a stronger teacher raises pass@1 over the base", "eval/pass@1",
              "distill", "base", +1,
              "GKD (arXiv 2306.13649) abstract: the student trained on its own samples with the teacher's feedback; "
              "efficacy shown on summarisation, translation and reasoning (no number quoted)"),
        Claim("on-policy distillation beats RL on the outcome reward at pass@1 at equal samples", "eval/pass@1",
              "distill", "rl", +1,
              "the on-policy distillation recipe's premise, a teacher signal at every token instead of one reward "
              "per sample (Thinking Machines' 'On-Policy Distillation', read through a summary and its "
              "tinker_cookbook implementation, not the post itself); no number quoted"),
        Claim("adding the teacher's signal to the outcome reward raises pass@1 over the outcome reward alone",
              "eval/pass@1", "rl_distill", "rl", +1,
              "GKD abstract: distillation integrates with RL fine-tuning; no number for this combination quoted"),
    ],
    notes="""
The fast testbed's protocol (conf/experiment_scale/common_toy.yaml: 16 steps of 4 x 8 at lr 1e-4, 128 held-out
problems x 32 samples). Student: the testbed's base (the toy model after its guessing stage, pass@1 0.158);
teacher: the same model before that stage (experiments/toy_base stage 1, pass@1 0.457, pass@32 0.992 on the same
problems and eval settings, experiments/toy_base/README.md), so teacher and student share the character tokenizer.
The teacher's signal is drox's default for the source (weight 1, the sampled-token reverse-KL estimate as each
token's own advantage, docs/algorithms.md "On-policy distillation"); nothing was tuned. `time/step@last16` is the
mean wall time of a training step: the distillation arms pay one teacher-forced pass of the teacher per step. The
question "how many samples to reach the teacher's pass@1" needs evaluations during training, which this protocol
does not make (one evaluation, at the end): the table gives the gap that remains after 512 samples.
""",
)
