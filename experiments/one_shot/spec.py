"""one_shot: one training example vs the full set (Wang et al., arXiv 2504.20571)."""

import json

from driver import Arm, Claim, Experiment


def pick_example(exp, runs, common, log):
    """The paper ranks examples by the std of their training accuracy over the epochs of a full-set run
    (`data_selection.py`, method 'std'). At CPU scale a full-set run sees each example about once, so the
    historical variance is taken over 8 samples of the base policy instead: the training problem (of the first
    64) whose base accuracy p has the largest p(1 - p), ties to the first. At paper scale nothing is chosen: the
    paper's own example, π1, is the paper config's training file."""
    if "scale=paper" in common:
        return ["1-shot example: the paper's π1 (data/pi1, conf/experiment_scale/one_shot_paper.yaml); the full-set "
                "arm trains on DSR-sub (data/dsr_sub)"]
    from driver import _compose
    from drox.evaluation.runner import evaluate_to

    out = runs / "selection"
    if not (out / "summary.json").is_file():
        cfg = _compose([f"experiment={exp.name}", *common, "eval.split=train", "eval.num_problems=64", "eval.n=8",
                        "eval.pass_at_k=[1]"])
        log(f"[selection] 8 samples of the base on 64 training problems -> {out}")
        evaluate_to(cfg, out, title="1-shot selection")
    import pandas as pd

    per_problem = pd.read_csv(out / "per_problem.csv")
    p = per_problem["c"] / per_problem["n"]
    best = int((p * (1 - p)).to_numpy().argmax())
    chosen = str(per_problem["problem_id"][best])
    for arm in exp.arms:
        if arm.name == "one_example":
            arm.overrides = [o for o in arm.overrides if not o.startswith("task.train_ids")]
            arm.overrides.append(f"task.train_ids=[{chosen}]")
    (runs / "selection" / "chosen.json").write_text(json.dumps({"problem_id": chosen, "base_accuracy": float(p[best])}))
    return [f"1-shot example: {chosen} (base accuracy {p[best]:.3f} over 8 samples; largest p(1-p) of the first "
            "64 training problems)"]


# Equivalence margin for "matches", declared before the rerun, never tuned to results: 0.05 in pass@1 is
# the protocol's precision target (verdicts.TARGET_HALF_WIDTH; a smaller margin could not be resolved by design),
# and it is wider than the paper's own gap between one example and the 1.2k set (0.0 points on MATH500, 0.2 on the
# six-benchmark average), so it is as strict as this design can afford.
PASS1_MARGIN = 0.05

SPEC = Experiment(
    name="one_shot",
    arms=[Arm("full", paper=["task.path=data/dsr_sub/train.jsonl"]),  # the paper's 1,209-problem DeepScaleR subset
          Arm("one_example")],
    seeds=list(range(8)),
    jobs=2,
    threads=1,
    metrics=["eval/pass@1", "eval/pass@8", "eval/pass@32"],
    claims=[
        Claim("one example raises pass@1 over the base", "eval/pass@1", "one_example", "base", +1,
              "arXiv 2504.20571 abstract: one example lifts Qwen2.5-Math-1.5B on MATH500 from 36.0% to 73.6% "
              "(six-benchmark average 17.6% -> 35.7%)"),
        Claim("one example matches the full training set at pass@1", "eval/pass@1", "one_example", "full", 0,
              "abstract: 'matches the performance obtained using the 1.2k DeepScaleR subset' (MATH500 73.6% vs "
              "73.6%, average 35.7% vs 35.9%)", test="equivalence", margin=PASS1_MARGIN),
    ],
    prepare=pick_example,
    control="full",  # the full training set with the outcome (verifier) reward: plain RLVR, the positive control
    notes="""
"Matches" is a two-sided equivalence claim: reproduced when both 90% intervals of one_example - full lie inside
(-0.05, +0.05) (TOST; the margin is declared in spec.py before the rerun). The example is chosen from the base's
own accuracies (largest p(1 - p) over 8 samples of the first 64 training problems), the single-snapshot analogue
of the paper's historical-variance ranking, which needs a full-set run over several epochs.
""",
)
