"""positive_control: does outcome GRPO beat the base at all? A small sweep of learning rate x steps on the fast CPU
testbed, declared before it ran; the cheapest setting that beats the base in every seed with an interval excluding
0 becomes the common protocol (conf/experiment_scale/common_toy.yaml). README.md beside this file (it also records
the two earlier sweeps, on a base that did not allow a positive control)."""

from driver import Arm, Claim, Experiment

LRS = {"1e-4": "1.0e-4", "3e-4": "3.0e-4", "1e-3": "1.0e-3"}
STEPS = (16, 32)
ARMS = [Arm(f"lr{name}_s{steps}", [f"trainer.lr={lr}", f"trainer.steps={steps}"])
        for steps in STEPS for name, lr in LRS.items()]

SPEC = Experiment(
    name="positive_control",
    arms=ARMS,
    seeds=[0, 1, 2, 3],
    metrics=["eval/pass@1", "eval/pass@8", "eval/pass@32", "eval/mean_length", "reward/mean", "entropy"],
    claims=[Claim(f"outcome GRPO ({arm.name}) raises held-out pass@1 over the base", "eval/pass@1", arm.name, "base",
                  +1, "every RLVR paper's premise: training on the verifier's reward helps on held-out problems")
            for arm in ARMS],
    jobs=2,
    threads=1,
    notes="""
Selection rule, declared before the sweep ran: among the settings whose claim is reproduced with the held-out
pass@1 of every seed above the base's, the one with the fewest steps (then the smallest learning rate) becomes the
common protocol of the fast testbed (conf/experiment_scale/common_toy.yaml). Each table still shows its own
positive-control row (its outcome arm vs the base, with its own seeds), and calls no verdict when that row does not
resolve.
""",
)
