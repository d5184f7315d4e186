"""Rule-based reward sources (format, random, inverse, incorrect_label, PSR/NSR/W-REINFORCE, brier) and the
calibration metrics: hand-computed values, then each source through two steps of the tiny-model trainer."""

from __future__ import annotations

import math
import random

import pytest
import torch

from drox.signals.calibration import auroc, brier_score, ece, parse_confidence
from drox.errors import ConfigError
from drox.signals.sign import NSROptions, SignOptions, WReinforceOptions, a_nsr_weights
from drox.rewards.base import REWARD_SOURCES, ScoringContext, score
from drox.rewards.brier import rlcr_reward
from drox.rewards.format import has_container
from drox.rewards.spurious import majority_wrong_answer, perturbed_label, random_draws
from drox.rollout.base import RolloutBatch
from drox.tasks import CountdownVerifier, MathVerifier, Task
from drox.trainers.algos import compute_advantages

MY_SOURCES = ["format", "random", "inverse", "incorrect_label", "brier"]
SIGN_ALIASES = {"positive_only": "psr", "negative_only": "nsr", "w_reinforce": "w_reinforce"}


def make_ctx(texts, answers, group_size, *, step=1, seed=0, verifier=None, rows=None):
    """A scoring context over ``texts`` (group-major); ``answers``: one reference per group."""
    n = len(texts)
    z = torch.zeros(n, 2, dtype=torch.long)
    batch = RolloutBatch(prompt_ids=z, prompt_mask=torch.ones_like(z), response_ids=z,
                         response_mask=torch.ones(n, 2), logprobs=torch.zeros(n, 2), entropies=torch.zeros(n, 2),
                         finish_reason=["eos"] * n, texts=list(texts), group_size=group_size)
    if rows is None:
        rows = [{"problem_id": f"p{q}", "prompt": f"q{q}", "answer": a} for q, a in enumerate(answers)]
    task = Task("test", None, verifier if verifier is not None else MathVerifier())
    return ScoringContext(batch=batch, rows=rows, task=task, step=step, seed=seed)


def run_source(name, ctx, **opts):
    return REWARD_SOURCES[name].fn(ctx, REWARD_SOURCES.parse(name, opts))


def boxed(*answers):
    return [f"so \\boxed{{{a}}}" for a in answers]


# ------------------------------------------------------------------------------------------------ config


@pytest.mark.parametrize("name", MY_SOURCES)
def test_yaml_defaults_match_the_dataclass(name):
    from drox.cli.main import compose

    cfg = compose([f"+reward={name}"])
    assert REWARD_SOURCES.parse(name, dict(cfg.reward[name])) == REWARD_SOURCES[name].options()


def test_sources_compose_and_override():
    from drox.cli.main import compose

    cfg = compose(["+reward=[outcome,format,random]", "reward.random.p=0.3", "reward.format.weight=0.5"])
    assert set(cfg.reward) == {"outcome", "format", "random"}
    assert cfg.reward.random.p == 0.3 and cfg.reward.format.weight == 0.5
    # of_options starts empty, so its keys are added with '+'
    cfg = compose(["+reward=inverse", "+reward.inverse.of_options.incorrect=-1"])
    assert dict(cfg.reward.inverse.of_options) == {"incorrect": -1}


# ------------------------------------------------------------------------------------------------ format


def test_format_hand_values():
    texts = ["\\boxed{3}", "\\boxed{}", "\\boxed{  }", "the answer is 3", "\\boxed{3", "\\boxed{1} then \\boxed{}",
             "\\boxed{\\frac{1}{2}}", "Answer: 4"]
    assert [has_container(t) for t in texts] == [True, False, False, False, False, True, True, False]
    out = run_source("format", make_ctx(texts, ["9", "9"], 4))
    # correctness is ignored: the reference 9 matches none of them
    assert out.seq.tolist() == [[1, 0, 0, 0], [0, 1, 1, 0]]
    tag = "<answer>(.*?)</answer>"
    assert [has_container(t, tag) for t in ["<answer> 5 </answer>", "<answer> </answer>", "\\boxed{5}"]] == [
        True, False, False]
    with pytest.raises(ValueError, match="capture group"):
        run_source("format", make_ctx(["x"], ["1"], 1), pattern="<answer>")


# ------------------------------------------------------------------------------------------------ random


def test_random_reproducible_and_depends_only_on_seed_step_row():
    a = random_draws(seed=0, step=3, n=64, p=0.5)
    random.seed(123)
    torch.manual_seed(123)  # the global RNG state (which a resume restores or not) does not matter
    assert torch.equal(a, random_draws(0, 3, 64, 0.5))
    assert torch.equal(a[:10], random_draws(0, 3, 10, 0.5))  # row i's draw does not depend on N
    assert not torch.equal(a, random_draws(1, 3, 64, 0.5))  # another seed
    assert not torch.equal(a, random_draws(0, 4, 64, 0.5))  # another step
    assert set(a.tolist()) == {0.0, 1.0}
    assert random_draws(0, 1, 50, 0.0).sum() == 0 and random_draws(0, 1, 50, 1.0).sum() == 50
    with pytest.raises(ValueError, match="in \\[0, 1\\]"):
        random_draws(0, 1, 4, 1.5)


@pytest.mark.parametrize("p", [0.5, 0.3])
def test_random_mean_is_p(p):
    draws = torch.cat([random_draws(seed, step, 500, p) for seed in range(4) for step in range(10)])
    # 20,000 draws: std of the mean <= 0.0036, so 0.02 is > 5 sigma
    assert abs(draws.mean().item() - p) < 0.02


def test_random_source_ignores_output():
    ctx = make_ctx(boxed(1, 2, 3, 4, 5, 6), ["1", "4"], 3, step=7, seed=5)
    out = run_source("random", ctx, p=0.5)
    assert out.seq.shape == (2, 3)
    assert torch.equal(out.seq.flatten(), random_draws(5, 7, 6, 0.5))
    other = make_ctx(["nothing"] * 6, ["0", "0"], 3, step=7, seed=5)
    assert torch.equal(run_source("random", other).seq, out.seq)


# ------------------------------------------------------------------------------------------------ inverse


def test_inverse_flips_outcome_and_format():
    ctx = make_ctx(boxed(4, 5) + ["4", "\\boxed{}"], ["4", "5"], 2)
    # group 1: "4" is extracted (last number) but the reference is 5; the empty box has no answer
    assert run_source("outcome", ctx).seq.tolist() == [[1, 0], [0, 0]]
    assert run_source("inverse", ctx).seq.tolist() == [[0, 1], [1, 1]]
    assert run_source("inverse", ctx, of="format").seq.tolist() == [[0, 0], [1, 1]]
    out = run_source("inverse", ctx, of_options={"incorrect": -1.0})  # +-1 outcome -> 0 / 2
    assert out.seq.tolist() == [[0, 2], [2, 2]] and out.diagnostics["of_mean"] == -0.5
    with pytest.raises(ValueError, match="cannot be 'inverse'"):
        run_source("inverse", ctx, of="inverse")
    with pytest.raises(ValueError, match="unknown reward source"):
        run_source("inverse", ctx, of="nope")


# ------------------------------------------------------------------------------------------------ incorrect label


def test_perturbed_label_is_a_fixed_nonzero_offset():
    label, numeric = perturbed_label("7", seed=0, problem_id="p0")
    assert numeric and label == perturbed_label("7", 0, "p0")[0]  # deterministic per problem
    assert label == "3" and perturbed_label("3", 0, "p1")[0] == "9"  # pinned: string seeds are process-stable
    k = int(label) - 7
    assert k != 0 and abs(k) <= 10
    # the offset is a function of (seed, problem id) only, not of the reference
    assert int(perturbed_label("100", 0, "p0")[0]) - 100 == k
    offsets = {int(perturbed_label("0", s, f"p{i}")[0]) for s in range(3) for i in range(30)}
    assert 0 not in offsets and offsets <= set(range(-10, 11)) and len(offsets) > 5
    assert {abs(int(perturbed_label("0", 0, f"p{i}", max_offset=1)[0])) for i in range(20)} == {1}
    # exact arithmetic on fractions/decimals/LaTeX fractions, thousands separators
    assert perturbed_label("1/2", 0, "p0")[0] == f"{1 + 2 * k}/2"
    assert perturbed_label("\\frac{1}{2}", 0, "p0")[0] == f"{1 + 2 * k}/2"
    assert perturbed_label("2.5", 0, "p0")[0] == f"{5 + 2 * k}/2"
    assert perturbed_label("1,000", 0, "p0")[0] == str(1000 + k)
    assert perturbed_label("\\sqrt{2}", 0, "p0") == (f"(\\sqrt{{2}}){k:+d}", False)


def test_incorrect_label_perturbed_scores_the_wrong_label():
    wrong = [perturbed_label("7", 0, "p0")[0], perturbed_label("3", 0, "p1")[0]]
    ctx = make_ctx(boxed(7, wrong[0], 8) + boxed(wrong[1], wrong[1], 3), ["7", "3"], 3)
    out = run_source("incorrect_label", ctx)
    assert out.seq.tolist() == [[0, 1, 0], [1, 1, 0]]  # the true answers (7, 3) score 0
    assert out.diagnostics["nonnumeric_frac"] == 0.0 and "fallback_frac" not in out.diagnostics
    assert run_source("incorrect_label", ctx, correct=1.0, incorrect=-1.0).seq.tolist() == [[-1, 1, -1], [1, 1, -1]]


def test_majority_wrong_answer_hand_values():
    assert majority_wrong_answer(["5", "3", "3", "4"], [True, False, False, False]) == "3"
    assert majority_wrong_answer(["4", "3", "$3$", "4"], [False, False, False, False]) == "4"  # tie: first seen
    assert majority_wrong_answer(["5", "5"], [True, True]) is None  # every rollout right
    assert majority_wrong_answer([None, None, "5"], [False, False, True]) is None  # no wrong answer given
    assert majority_wrong_answer(["3", "5", "3"], [False, True, False]) == "3"


def test_incorrect_label_majority_wrong_with_fallback():
    fallback = perturbed_label("5", 0, "p1")[0]
    texts = boxed(5, 3, "3.0", 4) + boxed(5, 5, fallback, "\\frac{5}{1}")
    ctx = make_ctx(texts, ["5", "5"], 4)
    out = run_source("incorrect_label", ctx, label="majority_wrong")
    # group 0: wrong answers "3", "3.0", "4" are counted as strings (1-1-1 tie) -> label "3", the first;
    #   the verifier then accepts both "3" and "3.0" against it (numeric comparison stays in the verifier)
    assert out.seq[0].tolist() == [0, 1, 1, 0]
    # group 1: 5 and \frac{5}{1} are right; the only wrong answer becomes the label
    assert out.seq[1].tolist() == [0, 0, 1, 0] and out.diagnostics["fallback_frac"] == 0.0
    all_right = make_ctx(boxed(5, 5) + ["no digits", "\\boxed{5}"], ["5", "5"], 2)
    out = run_source("incorrect_label", all_right, label="majority_wrong")
    assert out.diagnostics["fallback_frac"] == 1.0  # group 0 all right; group 1's wrong one has no answer
    assert out.seq.tolist() == [[0, 0], [0, 0]]


def test_incorrect_label_uses_the_task_verifier_and_checks_options():
    # countdown: the verifier compares the expression's value with row["target"]
    rows = [{"problem_id": "c0", "prompt": "x", "numbers": [*range(1, 11), 20], "target": 20, "answer": "20"}]
    k = int(perturbed_label(20, 0, "c0")[0]) - 20
    hit = f"20+{k}" if k > 0 else f"20-{-k}"  # a valid expression for the wrong target 20 + k
    ctx = make_ctx(boxed("20", "2*10", hit), None, 3, verifier=CountdownVerifier(), rows=rows)
    assert run_source("outcome", ctx).seq.tolist() == [[1, 1, 0]]
    assert run_source("incorrect_label", ctx, label_field="target").seq.tolist() == [[0, 0, 1]]
    with pytest.raises(ValueError, match="label_field=answer"):
        run_source("incorrect_label", ctx, label="majority_wrong", label_field="target")
    with pytest.raises(ValueError, match="no field 'nope'"):
        run_source("incorrect_label", ctx, label_field="nope")
    with pytest.raises(ValueError, match="perturbed, majority_wrong"):
        run_source("incorrect_label", ctx, label="other")


# ------------------------------------------------------------------------------------------------ PSR / NSR


def test_sign_estimators_by_hand():
    """Zhu et al. Eqs. 3, 4, 9 with drox's 1/0 convention: correct = score > correct_above (0.5)."""
    scores = torch.tensor([[1.0, 0.0, 1.0, 0.0]])  # correct, wrong, correct, wrong
    valid = torch.tensor([[True, True, True, False]])  # the last one gated out: 0
    assert compute_advantages(scores, "psr", valid=valid).tolist() == [[1.0, 0.0, 1.0, 0.0]]
    assert compute_advantages(scores, "nsr", valid=valid).tolist() == [[0.0, -1.0, 0.0, 0.0]]
    adv = compute_advantages(scores, "w_reinforce", valid=valid)
    assert torch.allclose(adv, torch.tensor([[0.1, -1.0, 0.1, 0.0]]))
    opts = WReinforceOptions(scale=2.0, correct_above=0.0, lam=0.5)  # 0 counts as wrong, 1 as right
    assert compute_advantages(scores, "w_reinforce", opts=opts).tolist() == [[1.0, -2.0, 1.0, -2.0]]
    assert compute_advantages(scores, "nsr", opts=SignOptions(correct_above=2.0)).tolist() == [[-1.0] * 4]


# A-NSR (arXiv 2605.07137, the authors' README "Scheduling Functions"), on a [Q, G] = [2, 4] batch with 3 correct
# rollouts of 7 valid ones (the last one gated out), the README's defaults: β 1.5 -> 0.5, κ = 0.03, λ 0.05 -> 0.2.
ANSR_SCORES = torch.tensor([[1.0, 0.0, 1.0, 0.0], [0.0, 0.0, 1.0, 0.0]])
ANSR_VALID = torch.tensor([[True, True, True, True], [True, True, True, False]])


def _by_hand(lam, beta, scale=1.0):
    return torch.tensor([[lam, -beta, lam, -beta], [-beta, -beta, lam, 0.0]], dtype=torch.float32) * scale


def test_a_nsr_schedule_1_exponential_beta_linear_lambda_by_hand():
    # t = 10 of T = 100: β = 0.5 + (1.5 - 0.5) e^{-0.3} = 1.24081822, λ = 0.05 + 0.15 · 10/100 = 0.065
    beta, lam = 0.5 + math.exp(-0.3), 0.065
    assert abs(beta - 1.2408182206817179) < 1e-12
    opts = NSROptions(schedule="exp")
    adv = compute_advantages(ANSR_SCORES, "nsr", valid=ANSR_VALID, opts=opts, step=10, total_steps=100)
    assert torch.allclose(adv, _by_hand(lam, beta))
    # the last step: λ reaches λ_max; β = 0.5 + e^{-3} (the exponential never quite reaches β_min)
    assert a_nsr_weights(opts, 100, 100) == pytest.approx((0.2, 0.5 + math.exp(-3.0)))
    # scale multiplies both weights
    adv = compute_advantages(ANSR_SCORES, "nsr", valid=ANSR_VALID, opts=NSROptions(schedule="exp", scale=2.0),
                             step=10, total_steps=100)
    assert torch.allclose(adv, _by_hand(lam, beta, scale=2.0))


def test_a_nsr_schedule_2_cosine_beta_by_hand():
    # t = 25 of 100: β = 0.5 + ½ (1.0)(1 + cos(π/4)) = 0.5 + ½ (1 + 0.70710678) = 1.35355339; correct rollouts 0
    adv = compute_advantages(ANSR_SCORES, "nsr", valid=ANSR_VALID, opts=NSROptions(schedule="cosine"), step=25,
                             total_steps=100)
    assert torch.allclose(adv, _by_hand(0.0, 1.3535533905932737))
    opts = NSROptions(schedule="cosine")
    assert a_nsr_weights(opts, 0, 100) == (0.0, 1.5) and a_nsr_weights(opts, 100, 100) == pytest.approx((0.0, 0.5))
    assert a_nsr_weights(opts, 50, 100) == pytest.approx((0.0, 1.0))


def test_a_nsr_schedule_3_batch_accuracy_by_hand():
    # p̂ = 3 correct / 7 valid (the gated-out rollout counts for neither): β = 0.5 + 1.0 · (1 - 3/7) = 15/14
    adv = compute_advantages(ANSR_SCORES, "nsr", valid=ANSR_VALID, opts=NSROptions(schedule="accuracy"))
    assert torch.allclose(adv, _by_hand(0.0, 15 / 14))
    # no step needed; an all-correct batch gets β_min, an all-wrong one β_max
    opts = NSROptions(schedule="accuracy", beta_max=2.0, beta_min=0.25)
    assert compute_advantages(torch.ones(1, 2), "nsr", opts=opts).tolist() == [[0.0, 0.0]]
    assert compute_advantages(torch.zeros(1, 2), "nsr", opts=opts).tolist() == [[-2.0, -2.0]]


def test_a_nsr_constant_is_plain_nsr_and_bad_options_are_one_line():
    plain = compute_advantages(ANSR_SCORES, "nsr", valid=ANSR_VALID)
    assert torch.equal(plain, _by_hand(0.0, 1.0))
    assert torch.equal(compute_advantages(ANSR_SCORES, "nsr", valid=ANSR_VALID, opts=NSROptions(), step=3,
                                          total_steps=4), plain)
    with pytest.raises(ValueError, match="schedule=exp needs the training step"):
        compute_advantages(ANSR_SCORES, "nsr", opts=NSROptions(schedule="exp"))
    from drox.trainers.algos import ADVANTAGE_ESTIMATORS

    with pytest.raises(ConfigError, match="schedule"):
        ADVANTAGE_ESTIMATORS.parse("nsr", {"schedule": "linear"})
    with pytest.raises(ConfigError, match="beta_min"):
        ADVANTAGE_ESTIMATORS.parse("nsr", {"schedule": "exp", "beta_min": 2.0})


def test_a_nsr_weights_reach_the_trainer_and_its_metrics(compose_cfg, tmp_path):
    """Two steps of the tiny model with schedule=exp: each step's λ(t), β(t) (t = 1, 2 of T = 2) are logged as
    advantage/nsr/{lam,beta}, and the advantages the loop computes are those weights."""
    from drox.trainers import loop
    from drox.trainers.metrics import read_metrics

    cfg = compose_cfg("+reward=negative_only", "trainer.advantage.nsr.schedule=exp")
    loop.run_training(cfg, tmp_path / "run", progress=False)
    rows = read_metrics(tmp_path / "run" / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2]
    for r in rows:
        t = r["step"]
        assert r["advantage/nsr/lam"] == pytest.approx(0.05 + 0.15 * t / 2)
        assert r["advantage/nsr/beta"] == pytest.approx(0.5 + math.exp(-0.03 * t))
        assert r["advantage/abs_max"] <= r["advantage/nsr/beta"] + 1e-6


@pytest.mark.parametrize("alias, estimator", sorted(SIGN_ALIASES.items()))
def test_sign_estimators_equal_the_former_reward_sources(compose_cfg, alias, estimator):
    """The estimator on the outcome reward gives the advantages the reward sources gave (their scores under
    estimator=none: A = sign value of the verifier's verdict, times the source's weight)."""
    from drox.pipeline import build_pipeline
    from drox.signals.sign import sign_advantages, sign_values

    ctx = make_ctx(boxed(1, 2, 1, 2, 3, 3), ["1", "3"], 3)  # [[right, wrong, right], [wrong, right, right]]
    pipeline = build_pipeline(compose_cfg(f"+reward={alias}"))  # the alias selects the estimator
    assert (pipeline.estimator.name, list(pipeline.rewards)) == (estimator, ["outcome"])
    new = compute_advantages(score(ctx, pipeline.rewards).seq, estimator, opts=pipeline.estimator.opts)
    correct = torch.tensor(ctx.verify().correct).view(2, 3)
    old = compute_advantages(sign_advantages(correct, *sign_values(estimator, pipeline.estimator.opts)), "none")
    assert torch.equal(new, old)
    expected = {"psr": [[1, 0, 1], [0, 1, 1]], "nsr": [[0, -1, 0], [-1, 0, 0]],
                "w_reinforce": [[0.1, -1, 0.1], [-1, 0.1, 0.1]]}[estimator]
    assert torch.allclose(new, torch.tensor(expected, dtype=new.dtype))


@pytest.mark.parametrize("alias, estimator", sorted(SIGN_ALIASES.items()))
def test_sign_aliases_set_the_estimator_and_its_options(compose_cfg, alias, estimator):
    cfg = compose_cfg(f"+reward={alias}", f"trainer.advantage.{estimator}.scale=2")
    assert cfg.trainer.advantage.estimator == estimator and "outcome" in cfg.reward
    from drox.pipeline import build_pipeline

    assert build_pipeline(cfg).estimator.opts.scale == 2.0


# ------------------------------------------------------------------------------------------------ trainer


@pytest.mark.parametrize("name", MY_SOURCES)
def test_source_plugs_into_the_trainer(compose_cfg, tmp_path, name):
    from drox.trainers import loop
    from drox.trainers.metrics import read_metrics

    cfg = compose_cfg(f"+reward={name}")
    assert cfg.trainer.advantage.estimator == "grpo"
    loop.run_training(cfg, tmp_path / "run", progress=False)
    rows = read_metrics(tmp_path / "run" / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2]
    for r in rows:
        assert f"reward/{name}/mean" in r


def test_random_draws_are_fresh_in_a_refill_batch_of_the_same_step():
    from drox.rewards.spurious import random_draws

    first = random_draws(0, 5, 64, 0.5)
    assert torch.equal(first, random_draws(0, 5, 64, 0.5, gen_batch=0))
    assert not torch.equal(first, random_draws(0, 5, 64, 0.5, gen_batch=1))


# ------------------------------------------------------------------------------------------------ rouge (DRO baseline)


def test_rouge_reward_hand_values():
    from drox.signals.rouge import rouge_n_f1

    # "the cat sat" vs "the cat the mat": clipped unigram overlap 2 (the, cat); P = 2/3, R = 2/4 -> F1 = 4/7
    assert rouge_n_f1("the cat sat", "the cat the mat") == pytest.approx(4 / 7)
    # bigrams: (the cat) shared; P = 1/2, R = 1/3 -> F1 = 2/5
    assert rouge_n_f1("the cat sat", "the cat the mat", n=2) == pytest.approx(2 / 5)
    texts = ["The cat sat.", "reasoning first \\boxed{the mat}", "", "dog"]
    out = run_source("rouge", make_ctx(texts, ["the cat the mat", "the cat the mat"], 2))
    # the boxed final answer is scored, not the reasoning: "the mat" vs the reference -> P = 1, R = 2/4 -> 2/3
    assert out.seq.flatten().tolist() == pytest.approx([4 / 7, 2 / 3, 0.0, 0.0])
    with pytest.raises(ValueError, match="no such column"):
        run_source("rouge", make_ctx(["x"], ["y"], 1), reference_field="target")
