"""The pass@k estimators passk (Pass@k Training, arXiv 2508.10751), pkpo (PKPO, arXiv 2505.15201) and maxrl (MaxRL,
arXiv 2602.02710) against brute force: enumerations over every k-subset of small groups (G = 4..6) of the quantity
each paper defines, enumerations over every outcome of a small policy for the gradients they are unbiased for, values
worked out by hand, the config checks, and 2 training steps of each on the tiny model."""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import pytest
import torch

from drox.config import ConfigError, MaxRLOptions, PassKOptions, PKPOOptions
from drox.rewards.base import REWARD_SOURCES, RewardOutput, register_reward
from drox.trainers.algos import (compute_advantages, grpo_advantages, maxrl_advantages, passk_advantages,
                                 pkpo_advantages, rloo_advantages)

EPS = 1e-6
SIZES = (4, 5, 6)


def _groups(n: int):
    """Reward vectors of ``n`` rollouts: every 0/1 pattern, and non-binary ones with and without ties."""
    binary = [list(map(float, bits)) for bits in itertools.product((0, 1), repeat=n)]
    gen = torch.Generator().manual_seed(n)
    continuous = [torch.randn(n, generator=gen, dtype=torch.float64).tolist() for _ in range(4)]
    tied = [torch.randint(0, 3, (n,), generator=gen).double().mul(0.5).tolist() for _ in range(4)]
    return binary + continuous + tied


def _close(got, want, tol=1e-6):
    assert max(abs(a - b) for a, b in zip(got, want)) <= tol, (got, want)


def _adv(fn, g, opts):
    return fn(torch.tensor([g], dtype=torch.float64), EPS, None, opts)[0].tolist()


# ------------------------------------------------------------------------------------------------ brute force


def _subsets(n, k):
    return list(itertools.combinations(range(n), k))


def _max(g, subset):
    return max(g[j] for j in subset)


def brute_passk(g, k):
    """Pass@k Training (arXiv 2508.10751): every k-subset is a group rewarded max_I g, normalised by the mean and the
    (population) std of that reward over all subsets; a rollout's advantage is the mean over the subsets holding it."""
    subs = _subsets(len(g), k)
    reward = [_max(g, s) for s in subs]
    mean = sum(reward) / len(reward)
    std = math.sqrt(sum((r - mean) ** 2 for r in reward) / len(reward))
    if std == 0:
        return [0.0] * len(g)
    return [sum((r - mean) / (std + EPS) for r, s in zip(reward, subs) if i in s) / sum(i in s for s in subs)
            for i in range(len(g))]


def closed_form_passk(g, k):
    """The paper's analytic Â_pos / Â_neg (its README; RUCAIBox/Passk_Training code/passk_adv.py) on 0/1 rewards."""
    n, neg = len(g), sum(1 for x in g if x == 0)
    mean = 1 - math.comb(neg, k) / math.comb(n, k)
    std = math.sqrt(mean * (1 - mean))
    if std == 0:
        return [0.0] * n
    pos_adv = (1 - mean) / (std + EPS)
    neg_adv = (1 - mean - math.comb(neg - 1, k - 1) / math.comb(n - 1, k - 1)) / (std + EPS)
    return [pos_adv if x == 1 else neg_adv for x in g]


def _S(g, i, k, members):
    """PKPO Eq. 27: (1/C(|members|, k)) Σ over the k-subsets of ``members`` holding i of their max."""
    return sum(_max(g, s) for s in itertools.combinations(members, k) if i in s) / math.comb(len(members), k)


def brute_pkpo(g, k, baseline):
    """n · s_i with s_i by PKPO's definitions: Eq. 33 (loo_minus_one), Eq. 29 (loo), Eq. 27 (none)."""
    n, everyone = len(g), tuple(range(len(g)))
    out = []
    for i in everyone:
        if baseline == "loo_minus_one":
            s = sum(_max(g, I) - _max(g, [j for j in I if j != i]) for I in _subsets(n, k) if i in I) / math.comb(n, k)
        elif baseline == "loo":
            rest = tuple(j for j in everyone if j != i)
            s = _S(g, i, k, everyone) - sum(_S(g, j, k, rest) for j in rest) / (n - 1)
        else:
            s = _S(g, i, k, everyone)
        out.append(n * s)
    return out


# ------------------------------------------------------------------------------------------------ passk


@pytest.mark.parametrize("n", SIZES)
def test_passk_is_the_mean_normalised_pass_at_k_of_the_subsets_holding_each_rollout(n):
    for g in _groups(n):
        for k in range(1, n):
            _close(_adv(passk_advantages, g, PassKOptions(k=k)), brute_passk(g, k))


@pytest.mark.parametrize("n", SIZES)
def test_passk_on_binary_rewards_is_the_papers_closed_form(n):
    for g in _groups(n)[: 2 ** n]:
        for k in range(1, n):
            _close(_adv(passk_advantages, g, PassKOptions(k=k)), closed_form_passk(g, k))


def test_passk_by_hand():
    # k = 2 of [1, 0, 0]: pairs {10, 10, 00} -> R̄ = 2/3, σ = √2/3; the right rollout is in two passing pairs, each
    # wrong one in one passing and one failing pair: A = (1 - 2/3) / σ and (1/2 - 2/3) / σ
    sigma = math.sqrt(2) / 3
    _close(_adv(passk_advantages, [1, 0, 0], PassKOptions(k=2)), [(1 / 3) / (sigma + EPS), (-1 / 6) / (sigma + EPS)] +
           [(-1 / 6) / (sigma + EPS)])
    for g, k in (([1, 1, 1, 1], 2), ([0, 0, 0, 0], 2), ([1, 1, 1, 0], 2), ([0.3, 0.9, 0.9, 0.9], 2)):
        assert _adv(passk_advantages, g, PassKOptions(k=k)) == [0.0] * 4, (g, k)  # every pair has the same max
    # k = G: one subset, no spread
    assert passk_advantages(torch.tensor([[1.0, 0.0, 0.0, 1.0]]), EPS, None, PassKOptions(k=4)).abs().sum() == 0


def test_passk_with_k_1_is_grpo_with_the_population_std():
    g = torch.tensor([[1.0, 0.0, 0.0, 1.0, 1.0], [0.2, 0.7, 0.1, 0.9, 0.4]], dtype=torch.float64)
    want = (g - g.mean(-1, keepdim=True)) / (g.std(-1, unbiased=False, keepdim=True) + EPS)
    assert torch.allclose(passk_advantages(g, EPS, None, PassKOptions(k=1)), want, atol=1e-12)
    assert not torch.allclose(want, grpo_advantages(g, EPS))  # drox's grpo divides by the unbiased std


# ------------------------------------------------------------------------------------------------ pkpo


@pytest.mark.parametrize("baseline", ["loo_minus_one", "loo", "none"])
@pytest.mark.parametrize("n", SIZES)
def test_pkpo_is_its_subset_average(n, baseline):
    for g in _groups(n):
        for k in range(2 if baseline == "loo_minus_one" else 1, n if baseline == "loo" else n + 1):
            _close(_adv(pkpo_advantages, g, PKPOOptions(k=k, baseline=baseline)), brute_pkpo(g, k, baseline))


@pytest.mark.parametrize("n", SIZES)
def test_pkpo_without_baseline_on_binary_rewards_is_eq_8(n):
    """Eq. 8: r_i = k/n on correct samples, (k/n) ρ(n-1, c, k-1) on wrong ones, with ρ Codex's unbiased pass@k."""
    rho = lambda n_, c, k_: 1 - math.comb(n_ - c, k_) / math.comb(n_, k_)  # noqa: E731
    for g in _groups(n)[: 2 ** n]:
        c = int(sum(g))
        for k in range(1, n + 1):
            want = [n * (k / n if x else k / n * rho(n - 1, c, k - 1)) for x in g]
            _close(_adv(pkpo_advantages, g, PKPOOptions(k=k, baseline="none")), want)


def test_pkpo_edge_cases_by_hand():
    opts = lambda k, b="loo_minus_one": PKPOOptions(k=k, baseline=b)  # noqa: E731
    _close(_adv(pkpo_advantages, [1, 0, 0], opts(2)), [2.0, 0.0, 0.0])
    for g in ([1, 1, 1, 1], [0, 0, 0, 0], [0.4] * 4):
        assert _adv(pkpo_advantages, g, opts(2)) == [0.0] * 4  # a subset's max never beats its other members'
    # k = 1: the paper's k_opt = 1 baseline, leave-one-out centring (Eq. 26) = RLOO
    g = torch.tensor([[0.3, 1.0, 0.0, 0.5, 0.2]], dtype=torch.float64)
    assert torch.equal(pkpo_advantages(g, EPS, None, opts(1)), rloo_advantages(g, EPS))
    # k = G: only the best rollout, G (r_max - r_second) (Tang et al.; verl's grpo_passk without the std, times G)
    _close(_adv(pkpo_advantages, [0.3, 1.0, 0.0, 0.5, 0.2], opts(5)), [0.0, 5 * 0.5, 0.0, 0.0, 0.0])
    assert _adv(pkpo_advantages, [0.3, 1.0, 1.0, 0.5], opts(4)) == [0.0] * 4  # tied best: no rollout is needed alone


# ------------------------------------------------------------------------------------------------ unbiasedness


def _outcomes_gradient(values, probs, n, advantages):
    """E over n i.i.d. draws from a categorical policy (softmax logits θ, ``probs`` = π) of the group-mean gradient
    (1/n) Σ_i A_i ∇_θ log π(o_i), with ∇_θ log π(o) = e_o - π; enumerates all len(values)^n outcome tuples."""
    total = torch.zeros(len(values), dtype=torch.float64)
    eye = torch.eye(len(values), dtype=torch.float64)
    for draw in itertools.product(range(len(values)), repeat=n):
        p = math.prod(probs[o] for o in draw)
        adv = advantages(torch.tensor([[values[o] for o in draw]], dtype=torch.float64))[0]
        total += p * sum(adv[i] * (eye[o] - probs) for i, o in enumerate(draw)) / n
    return total


def _max_at_k_gradient(values, probs, k):
    """∇_θ max_g@k = ∇ E[max of k draws] = E[max · Σ_j ∇ log π(o_j)], enumerating all k-tuples."""
    eye = torch.eye(len(values), dtype=torch.float64)
    return sum(math.prod(probs[o] for o in draw) * max(values[o] for o in draw) * sum(eye[o] - probs for o in draw)
               for draw in itertools.product(range(len(values)), repeat=k))


@pytest.mark.parametrize("baseline", ["loo_minus_one", "loo", "none"])
def test_pkpo_is_unbiased_for_the_gradient_of_max_at_k(baseline):
    """PKPO Theorem 4 and Eqs. 29 and 33: the expectation of the group-mean policy gradient with A = n s is ∇max_g@k,
    checked exactly for a 3-outcome policy with non-binary rewards, n = 4."""
    values, probs = [0.0, 0.4, 1.0], torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64)
    for k in (1, 2, 3, 4):
        if (baseline == "loo" and k == 4) or (baseline == "loo_minus_one" and k == 1):
            continue
        got = _outcomes_gradient(values, probs, 4, lambda s: pkpo_advantages(s, EPS, None, PKPOOptions(k, baseline)))
        assert torch.allclose(got, _max_at_k_gradient(values, probs, k), atol=1e-12), (k, got)


# ------------------------------------------------------------------------------------------------ maxrl


def test_maxrl_is_eq_11_per_group():
    """Eq. 11: (1/n) Σ_i A_i ∇log π(o_i) = Σ_i (r_i / K - 1/n) ∇log π(o_i), K the number of successes."""
    for n in SIZES:
        for g in _groups(n)[: 2 ** n]:
            K = sum(g)
            want = [0.0] * n if K == 0 else [n * (r / K - 1 / n) for r in g]
            _close(_adv(maxrl_advantages, g, MaxRLOptions()), want, 1e-12)


@pytest.mark.parametrize("n", [2, 3, 4, 5])
def test_maxrl_is_unbiased_for_the_truncated_maximum_likelihood_gradient(n):
    """Theorem (estimator-objective equivalence): with Eq. 11's control variate kept on all-wrong groups, the estimator
    is unbiased for ∇J^(n) = Σ_{k<=n} (1/k) ∇pass@k (each ∇pass@k by enumerating k-tuples); Algorithm 1, which gives
    all-wrong groups 0 (drox's maxrl), is then unbiased for ∇J^(n-1)."""
    values, probs = [0.0, 1.0], torch.tensor([0.7, 0.3], dtype=torch.float64)
    truncated = lambda order: sum((_max_at_k_gradient(values, probs, k) / k for k in range(1, order + 1)),  # noqa
                                  torch.zeros(2, dtype=torch.float64))
    drox = _outcomes_gradient(values, probs, n, lambda s: maxrl_advantages(s, EPS, None, MaxRLOptions()))
    assert torch.allclose(drox, truncated(n - 1), atol=1e-12)
    # the control variate -(1/n) Σ ∇log π(o_i) on the all-wrong group, which has probability (1 - p)^n
    all_wrong = probs[0] ** n * -(torch.eye(2, dtype=torch.float64)[0] - probs)
    assert torch.allclose(drox + all_wrong, truncated(n), atol=1e-12)


def test_maxrl_by_hand_and_on_non_binary_scores():
    _close(_adv(maxrl_advantages, [1, 0, 0, 0], MaxRLOptions()), [3.0, -1.0, -1.0, -1.0])
    for g in ([1, 1, 1, 1], [0, 0, 0, 0]):
        assert _adv(maxrl_advantages, g, MaxRLOptions()) == [0.0] * 4
    # the verdict is score > correct_above: non-binary scores are read as right / wrong
    assert _adv(maxrl_advantages, [0.7, 0.2, 0.9, 0.4], MaxRLOptions()) == _adv(maxrl_advantages, [1, 0, 1, 0],
                                                                                   MaxRLOptions())
    assert _adv(maxrl_advantages, [0.7, 0.2, 0.9, 0.4], MaxRLOptions(correct_above=0.8)) == [-1.0, -1.0, 3.0, -1.0]


# ------------------------------------------------------------------------------------------------ layout


@pytest.mark.parametrize("name, opts", [("passk", PassKOptions(k=2)), ("pkpo", PKPOOptions(k=2)),
                                        ("pkpo", PKPOOptions(k=2, baseline="loo")), ("maxrl", MaxRLOptions())])
def test_invalid_rollouts_are_left_out_and_groups_of_each_size_get_their_own_advantage(name, opts):
    """A batch of groups with different numbers of valid rollouts: each group's advantages equal those of its valid
    rollouts alone; invalid ones (NaN scores included) get 0; a group with too few valid rollouts gets 0."""
    scores = torch.tensor([[1.0, 0.0, 0.0, 1.0, 0.0], [0.5, 1.0, float("nan"), 0.0, 0.2], [1.0, 0.0, 0.3, 0.9, 0.1],
                           [1.0, 0.0, 0.0, 0.0, 0.0]])
    valid = torch.tensor([[True] * 5, [True, True, False, True, True], [True, False, True, False, True],
                          [True, False, False, False, False]])
    adv = compute_advantages(scores, name, eps=EPS, valid=valid, opts=opts)
    assert adv.dtype == torch.float32 and torch.isfinite(adv).all()
    for q in range(4):
        alone = compute_advantages(scores[q][valid[q]][None], name, eps=EPS, opts=opts)[0]
        assert torch.allclose(adv[q][valid[q]], alone, atol=1e-6), q
        assert (adv[q][~valid[q]] == 0).all()
    assert (adv[3] == 0).all()


# ------------------------------------------------------------------------------------------------ config


def _config(*overrides):
    """``drox config model=tiny <overrides>``: composes and validates the config and builds the pipeline; no model."""
    from typer.testing import CliRunner

    from drox.cli.main import app

    return CliRunner().invoke(app, ["config", "model=tiny", *overrides])


@pytest.mark.parametrize("overrides, message", [
    (("trainer.samples_per_prompt=4", "trainer.advantage.estimator=passk", "trainer.advantage.passk.k=5"),
     "trainer.advantage.passk.k=5 with trainer.samples_per_prompt=4: passk needs k < G (k = G leaves one subset and "
     "no spread); lower k or raise samples_per_prompt"),
    (("trainer.samples_per_prompt=4", "trainer.advantage.estimator=passk", "trainer.advantage.passk.k=4"),
     "trainer.advantage.passk.k=4 with trainer.samples_per_prompt=4: passk needs k < G"),
    (("trainer.samples_per_prompt=4", "trainer.advantage.estimator=pkpo", "trainer.advantage.pkpo.k=5"),
     "trainer.advantage.pkpo.k=5 with trainer.samples_per_prompt=4: pkpo needs k <= G (pass@k has no unbiased "
     "estimate from fewer than k samples); lower k or raise samples_per_prompt"),
    (("trainer.samples_per_prompt=4", "trainer.advantage.estimator=pkpo", "trainer.advantage.pkpo.k=4",
      "trainer.advantage.pkpo.baseline=loo"),
     "trainer.advantage.pkpo.k=4 with trainer.samples_per_prompt=4: pkpo needs k < G (its baseline averages "
     "k-subsets of the other rollouts)"),
    (("trainer.advantage.estimator=pkpo", "trainer.advantage.pkpo.k=0"),
     "trainer.advantage.pkpo: k=0 must be >= 1"),
    (("trainer.advantage.estimator=pkpo", "trainer.advantage.pkpo.baseline=mean"),
     "trainer.advantage.pkpo: baseline=mean is not one of loo_minus_one, loo, none (PKPO Eq. 33, Eq. 29, no baseline)"),
    (("trainer.advantage.estimator=maxrl", "trainer.advantage.maxrl.k=4"),
     "trainer.advantage.maxrl.k"),
    (("trainer.samples_per_prompt=8", "trainer.advantage.estimator=passk", "+reward=[outcome,format]",
      "trainer.advantage.combine=dvao"),
     "trainer.advantage.estimator=passk: its advantages average over the k-subsets of each group and cannot be "
     "combined with trainer.advantage.combine=dvao; use combine=sum"),
    (("trainer.advantage.estimator=maxrl", "trainer.advantage.combine=normalize_then_sum"),
     "trainer.advantage.estimator=maxrl: its advantages are normalised by the group's success rate and cannot be "
     "combined"),
])
def test_options_are_checked_before_anything_runs(overrides, message):
    """One error line (exit code 2) from the config's validation, before a model or task is loaded."""
    result = _config(*overrides)
    out = result.output.strip()
    assert result.exit_code == 2 and out.startswith("error: ") and "\n" not in out, out
    assert message in out, out


def test_a_k_that_fits_the_group_builds(compose_cfg):
    from drox.pipeline import build_pipeline

    cfg = compose_cfg("trainer.samples_per_prompt=4", "trainer.advantage.estimator=pkpo", "trainer.advantage.pkpo.k=4")
    stage = build_pipeline(cfg).estimator
    assert (stage.name, stage.opts) == ("pkpo", PKPOOptions(k=4))
    cfg = compose_cfg("trainer.samples_per_prompt=5", "trainer.advantage.estimator=passk")  # the default k = 4
    assert build_pipeline(cfg).estimator.opts == PassKOptions(k=4)
    with pytest.raises(ConfigError, match="^trainer.advantage.passk.k=4 with trainer.samples_per_prompt=4: "):
        cfg.trainer.samples_per_prompt = 4
        build_pipeline(cfg)


# ------------------------------------------------------------------------------------------------ training


@dataclass
class _Opts:
    weight: float = 1.0


def _low_half(ctx, cfg):
    """The fraction of a response's tokens in the lower half of the vocabulary: spread out on the random tiny model
    (whose verifier reward is always 0), so the estimators have something to rank."""
    ids, mask = ctx.batch.response_ids, ctx.batch.response_mask
    low = ((ids < len(ctx.tokenizer) // 2).float() * mask).sum(-1) / mask.sum(-1).clamp_min(1)
    return RewardOutput(seq=low.view(ctx.batch.num_groups, ctx.batch.group_size))


if "test_passk_low_half" not in REWARD_SOURCES:
    register_reward("test_passk_low_half", _Opts)(_low_half)


@pytest.mark.parametrize("estimator", ["passk", "pkpo", "maxrl"])
def test_two_training_steps_on_the_tiny_model(compose_cfg, tmp_path, estimator):
    from drox.trainers import loop
    from drox.trainers.metrics import read_metrics

    cfg = compose_cfg("trainer.samples_per_prompt=5", f"trainer.advantage.estimator={estimator}",
                      *([f"trainer.advantage.{estimator}.k=4"] if estimator != "maxrl" else []), f"run_dir={tmp_path}")
    cfg.reward = {"test_passk_low_half": {}}
    loop.run_training(cfg, tmp_path, progress=False)
    rows = read_metrics(tmp_path / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2]
    assert all(math.isfinite(r["loss"]) for r in rows)
    assert max(r["advantage/std"] for r in rows) > 0  # the groups had spread, and the estimator saw it
