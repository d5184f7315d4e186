"""positive_control_smollm2: does outcome GRPO beat the SFT'd SmolLM2-135M base at all? Two learning rates at 24
steps, 4 seeds each, declared before the sweep ran; the smaller learning rate whose claim is reproduced with every
seed above the base becomes the SmolLM2 testbed's protocol (conf/experiment_scale/common_smollm2.yaml). README.md
beside this file says why these two settings."""

from driver import Arm, Claim, Experiment

LRS = {"5e-6": "5.0e-6", "1e-5": "1.0e-5"}
ARMS = [Arm(f"lr{name}_s24", [f"trainer.lr={lr}"]) for name, lr in LRS.items()]

SPEC = Experiment(
    name="positive_control_smollm2",
    arms=ARMS,
    seeds=[0, 1, 2, 3],
    metrics=["eval/pass@1", "eval/pass@8", "eval/mean_length", "reward/mean", "entropy"],
    claims=[Claim(f"outcome GRPO ({arm.name}) raises held-out pass@1 over the base", "eval/pass@1", arm.name, "base",
                  +1, "every RLVR paper's premise: training on the verifier's reward helps on held-out problems")
            for arm in ARMS],
    jobs=2,
    threads=1,
    notes="""
Selection rule, declared before the sweep ran: among the settings whose claim is reproduced with the held-out
pass@1 of every seed above the base's, the smaller learning rate becomes the SmolLM2 testbed's protocol
(conf/experiment_scale/common_smollm2.yaml). If neither setting qualifies, the SmolLM2 tables keep calling no
verdict (their positive-control row does not resolve) and this table says so.
""",
)
