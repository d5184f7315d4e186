"""Hand-computed checks for drox.trainers.algos (advantages, aggregation, PPO clip, KL), the log-prob helpers,
the overlong penalty and the finiteness guard."""

import math

import pytest
import torch

from drox.errors import NonFiniteError, check_finite
from drox.models.logprobs import entropy_from_logits, logprobs_from_logits, scaled_logits, top2_margin
from drox.rewards.overlong import soft_overlong_penalty
from drox.trainers import algos
from drox.trainers.algos import (
    ADVANTAGE_ESTIMATORS,
    LOSS_AGGREGATIONS,
    agg_loss,
    broadcast_to_tokens,
    combine_advantages,
    compute_advantages,
    dense_process_advantages,
    kl_penalty,
    loss_normalisers,
    policy_loss,
    token_advantages,
)

AGG_MODES = LOSS_AGGREGATIONS.names()

EPS = 1e-6
GROUP = torch.tensor([[1.0, 0.0, 0.0, 1.0]])  # Q=1, G=4


def close(a, b, tol=1e-5):
    return torch.allclose(torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64), atol=tol)


# ----------------------------------------------------------------------------------------------- advantages


def test_registry_names():
    assert {"grpo", "dr_grpo", "rloo", "none"} <= set(ADVANTAGE_ESTIMATORS)


def test_grpo_hand_values():
    # mean 0.5, unbiased std = sqrt((4 * 0.25) / 3) = sqrt(1/3) = 0.57735 -> +-0.5 / 0.57735 = +-0.866025
    adv = compute_advantages(GROUP, "grpo", eps=EPS)
    s = 0.5 / (math.sqrt(1 / 3) + EPS)
    assert adv.shape == (1, 4) and adv.dtype == torch.float32
    assert close(adv, [[s, -s, -s, s]], 1e-6)
    assert abs(s - 0.8660254) < 2e-6


def test_grpo_multiple_groups_independent():
    scores = torch.tensor([[1.0, 0.0, 0.0, 1.0], [3.0, 3.0, 3.0, 7.0]])
    adv = compute_advantages(scores, "grpo")
    # second group: mean 4, devs [-1,-1,-1,3], unbiased var = 12/3 = 4, std 2
    assert close(adv[1], [-0.5, -0.5, -0.5, 1.5], 1e-5)
    assert close(adv[0], compute_advantages(GROUP, "grpo")[0])


def test_dr_grpo_rloo_none_hand_values():
    assert close(compute_advantages(GROUP, "dr_grpo"), [[0.5, -0.5, -0.5, 0.5]])
    # rloo: r_i - mean of the other three: 1 - 1/3, 0 - 2/3, 0 - 2/3, 1 - 1/3
    assert close(compute_advantages(GROUP, "rloo"), [[2 / 3, -2 / 3, -2 / 3, 2 / 3]])
    raw = torch.tensor([[1.0, -1.0, 0.25, 3.0]])
    assert torch.equal(compute_advantages(raw, "none"), raw)


@pytest.mark.parametrize("est", ["grpo", "dr_grpo", "rloo"])
def test_identical_group_and_singleton_give_exact_zero(est):
    same = torch.full((2, 5), 0.1)  # 0.1 is not exact in binary: the mean may round, the result must not
    adv = compute_advantages(same, est)
    assert torch.equal(adv, torch.zeros_like(adv))
    single = torch.tensor([[1.0], [0.0], [5.0]])  # G = 1
    adv1 = compute_advantages(single, est)
    assert torch.equal(adv1, torch.zeros_like(adv1))


def test_valid_mask_excludes_row():
    scores = torch.tensor([[1.0, 0.0, 0.0, float("nan")]])  # excluded row may even be NaN
    valid = torch.tensor([[True, True, True, False]])
    # grpo over [1,0,0]: mean 1/3, devs [2/3,-1/3,-1/3], unbiased var = (6/9)/2 = 1/3, std 0.57735
    sd = math.sqrt(1 / 3) + EPS
    assert close(compute_advantages(scores, "grpo", valid=valid), [[(2 / 3) / sd, -(1 / 3) / sd, -(1 / 3) / sd, 0]])
    assert close(compute_advantages(scores, "dr_grpo", valid=valid), [[2 / 3, -1 / 3, -1 / 3, 0]])
    # rloo over [1,0,0]: 1 - 0, 0 - 1/2, 0 - 1/2
    assert close(compute_advantages(scores, "rloo", valid=valid), [[1.0, -0.5, -0.5, 0]])
    assert close(compute_advantages(scores, "none", valid=valid), [[1.0, 0.0, 0.0, 0.0]])
    # only one valid row left -> zero
    one = torch.tensor([[True, False, False, False]])
    assert torch.equal(compute_advantages(scores, "grpo", valid=one), torch.zeros(1, 4))


def test_unknown_estimator_lists_names():
    with pytest.raises(ValueError, match="grpo.*rloo|available"):
        compute_advantages(GROUP, "ppo_gae")


# ----------------------------------------------------------------------------------------------- dense


def test_broadcast_and_combine():
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    tok = broadcast_to_tokens(torch.tensor([2.0, -1.0]), mask)
    assert torch.equal(tok, torch.tensor([[2.0, 2.0, 0.0], [-1.0, 0.0, 0.0]]))
    other = torch.ones(2, 3)
    assert torch.equal(combine_advantages(tok, other), tok + other)
    assert torch.equal(combine_advantages(None, other), other)
    assert torch.equal(combine_advantages(tok, None), tok)
    with pytest.raises(ValueError):
        combine_advantages(None, None)


def _process_case():
    # G = 2, T = 5. Output 0 (4 real tokens): step rewards 3 at t=1 and 1 at t=3.
    # Output 1 (5 real tokens): step rewards 0 at t=2 and 0 at t=4 (zero rewards -> need reward_mask).
    rewards = torch.zeros(2, 5)
    rewards[0, 1], rewards[0, 3] = 3.0, 1.0
    reward_mask = torch.zeros(2, 5, dtype=torch.bool)
    reward_mask[0, [1, 3]] = True
    reward_mask[1, [2, 4]] = True
    mask = torch.tensor([[1, 1, 1, 1, 0], [1, 1, 1, 1, 1]])
    return rewards, reward_mask, mask


def test_process_supervision_reward_to_go_by_hand():
    rewards, reward_mask, mask = _process_case()
    adv = dense_process_advantages(rewards, mask, group_size=2, reward_mask=reward_mask)
    # all step rewards of the group R = {3, 1, 0, 0}: mean 1, devs {2, 0, -1, -1}, unbiased var 6/3 = 2.
    # normalised: 3 -> 2/sqrt2 = 1.41421, 1 -> 0, 0 -> -0.70711 (x2)
    a, b = 2 / (math.sqrt(2) + EPS), 1 / (math.sqrt(2) + EPS)
    # reward-to-go = sum of normalised rewards at positions >= t
    expected = [[a + 0, a + 0, 0.0, 0.0, 0.0], [-2 * b, -2 * b, -2 * b, -b, -b]]
    assert close(adv, expected)


def test_process_supervision_nonzero_detection():
    rewards, _, mask = _process_case()
    # without reward_mask only the nonzero entries {3, 1} count: mean 2, unbiased std sqrt2 -> +-0.70711
    adv = dense_process_advantages(rewards, mask, group_size=2)
    b = 1 / (math.sqrt(2) + EPS)
    assert close(adv, [[0.0, 0.0, -b, -b, 0.0], [0.0] * 5])  # t=0,1: b - b = 0; t=2,3: -b


def test_token_advantages_from_qgt_scores():
    rewards, reward_mask, mask = _process_case()
    seq = torch.tensor([[0.5, -0.5]])  # [Q=1, G=2]
    tok = token_advantages(seq, rewards.view(1, 2, 5), mask, reward_mask=reward_mask)
    dense = dense_process_advantages(rewards, mask, 2, reward_mask=reward_mask)
    assert close(tok, broadcast_to_tokens(seq, mask) + dense)
    assert close(token_advantages(seq, None, mask), broadcast_to_tokens(seq.view(-1), mask))
    with pytest.raises(ValueError):
        token_advantages(None, rewards, mask)  # [N, T] scores and no group size


# ----------------------------------------------------------------------------------------------- aggregation

L23 = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
M23 = torch.tensor([[1, 1, 0], [1, 1, 1]])  # hides the 3.0


def test_agg_modes_by_hand():
    assert close(agg_loss(L23, M23, "token-mean"), (1 + 2 + 4 + 5 + 6) / 5)  # 3.6
    assert close(agg_loss(L23, M23, "seq-mean-token-mean"), ((1 + 2) / 2 + 15 / 3) / 2)  # 3.25
    assert close(agg_loss(L23, M23, "seq-mean-token-sum-norm", max_len=4), (3 / 4 + 15 / 4) / 2)  # 2.25
    assert close(agg_loss(L23, M23, "seq-mean-token-sum"), (3 + 15) / 2)  # 9.0


def test_agg_empty_sequences_excluded_not_nan():
    L = torch.cat([L23, torch.full((1, 3), 100.0)], 0)
    M = torch.cat([M23, torch.zeros(1, 3, dtype=M23.dtype)], 0)  # third sequence has no valid tokens
    assert close(agg_loss(L, M, "token-mean"), 3.6)
    assert close(agg_loss(L, M, "seq-mean-token-mean"), 3.25)  # excluded from the seq mean
    assert close(agg_loss(L, M, "seq-mean-token-sum"), 9.0)
    x = torch.randn(2, 3, requires_grad=True)
    for mode in AGG_MODES:
        out = agg_loss(x, torch.zeros(2, 3), mode, max_len=3)
        out.backward()
        assert out.item() == 0.0 and torch.isfinite(x.grad).all()


def test_agg_errors():
    with pytest.raises(ValueError, match="token-mean"):
        agg_loss(L23, M23, "sum")
    with pytest.raises(ValueError, match="max_len"):
        agg_loss(L23, M23, "seq-mean-token-sum-norm")


@pytest.mark.parametrize("mode", AGG_MODES)
def test_micro_batch_accumulation_matches_full_batch(mode):
    g = torch.Generator().manual_seed(0)
    L = torch.randn(6, 7, generator=g, dtype=torch.float64)
    M = (torch.rand(6, 7, generator=g) > 0.4).long()
    M[4] = 0  # an empty sequence in the second half
    M[0, :] = 1  # uneven token counts between halves
    full = agg_loss(L, M, mode, max_len=7)
    norms = loss_normalisers(M)
    halves = sum(agg_loss(L[s], M[s], mode, max_len=7, **norms) for s in (slice(0, 3), slice(3, 6)))
    assert close(halves, full, 1e-12)
    if mode == "token-mean":  # without global normalisers the micro-batch mean of means is wrong here
        local = sum(agg_loss(L[s], M[s], mode) for s in (slice(0, 3), slice(3, 6))) / 2
        assert not close(local, full, 1e-6)


def test_policy_loss_micro_batches_sum_to_full():
    g = torch.Generator().manual_seed(1)
    lp = torch.randn(4, 5, generator=g) * 0.1
    old = lp + torch.randn(4, 5, generator=g) * 0.3
    adv = torch.randn(4, 5, generator=g)
    M = (torch.rand(4, 5, generator=g) > 0.3).long()
    full, _ = policy_loss(lp, old, adv, M)
    norms = loss_normalisers(M)
    parts = [policy_loss(lp[s], old[s], adv[s], M[s], **norms)[0] for s in (slice(0, 1), slice(1, 4))]
    assert close(sum(parts), full, 1e-6)


# ----------------------------------------------------------------------------------------------- PPO clip


def _clip_case(clip_low=0.2, clip_high=0.2):
    ratios = torch.tensor([1.19, 1.21, 0.81, 0.79])
    lp = torch.log(ratios).repeat(2, 1).requires_grad_(True)  # row 0: A=+1, row 1: A=-1
    old = torch.zeros(2, 4)
    adv = torch.tensor([[1.0] * 4, [-1.0] * 4])
    mask = torch.ones(2, 4)
    return ratios, lp, old, adv, mask


def test_clip_boundaries_positive_and_negative_advantages():
    ratios, lp, old, adv, mask = _clip_case()
    loss, stats = policy_loss(lp, old, adv, mask, agg="seq-mean-token-sum")
    # per-token L = -min(r A, clip(r) A):
    # A=+1: r=1.19 -> -1.19 | 1.21 -> -1.20 (clipped) | 0.81 -> -0.81 | 0.79 -> -0.79 (unclipped branch wins)
    # A=-1: r=1.19 ->  1.19 | 1.21 ->  1.21 (unclipped) | 0.81 -> 0.81 | 0.79 -> 0.80 (clipped)
    row0 = -1.19 - 1.20 - 0.81 - 0.79
    row1 = 1.19 + 1.21 + 0.81 + 0.80
    assert close(loss, (row0 + row1) / 2)
    loss.backward()
    # d loss / d logp = -A * ratio / 2 (two sequences) where unclipped, exactly 0 where clipped
    expected = torch.stack([-ratios / 2, ratios / 2])
    expected[0, 1] = 0.0
    expected[1, 3] = 0.0
    assert close(lp.grad, expected, 1e-6)
    assert lp.grad[0, 1].item() == 0.0 and lp.grad[1, 3].item() == 0.0
    assert stats["clip_frac"] == pytest.approx(2 / 8)
    assert stats["clip_frac_high"] == pytest.approx(1 / 8) and stats["clip_frac_low"] == pytest.approx(1 / 8)
    assert stats["ratio_max"] == pytest.approx(1.21, abs=1e-6)
    assert stats["ratio_mean"] == pytest.approx(ratios.mean().item(), abs=1e-6)
    assert stats["adv_mean"] == pytest.approx(0.0)
    assert all(isinstance(v, float) for v in stats.values())


def test_clip_higher_asymmetric():
    ratios = torch.tensor([1.25, 1.30, 0.79])
    lp = torch.log(ratios)[None].clone().requires_grad_(True)
    adv = torch.tensor([[1.0, 1.0, -1.0]])
    loss, stats = policy_loss(lp, torch.zeros(1, 3), adv, torch.ones(1, 3), clip_low=0.2, clip_high=0.28)
    # 1.25 < 1.28 not clipped (it would be with 0.2); 1.30 clipped at 1.28; 0.79 (A<0) clipped at 0.80
    assert close(loss, (-1.25 - 1.28 + 0.80) / 3)
    loss.backward()
    assert close(lp.grad, [[-1.25 / 3, 0.0, 0.0]], 1e-6)
    assert stats["clip_frac"] == pytest.approx(2 / 3)
    sym, _ = policy_loss(lp.detach(), torch.zeros(1, 3), adv, torch.ones(1, 3))
    assert close(sym, (-1.20 - 1.20 + 0.80) / 3)


def test_policy_loss_masked_tokens_and_1d_advantages():
    lp = torch.log(torch.tensor([[1.5, 1.0, 1.0]]))
    mask = torch.tensor([[0, 1, 1]])  # the clipped token is padding
    loss, stats = policy_loss(lp, torch.zeros(1, 3), torch.tensor([2.0]), mask)
    assert close(loss, -2.0)
    assert stats["clip_frac"] == 0.0 and stats["ratio_max"] == pytest.approx(1.0)


# ----------------------------------------------------------------------------------------------- KL


def test_kl_estimators_by_hand():
    lp = torch.log(torch.tensor([[0.5, 0.25]]))
    ref = torch.log(torch.tensor([[0.25, 0.5]]))
    ln2 = math.log(2)
    assert close(kl_penalty(lp, ref, "k1"), [[ln2, -ln2]])
    assert close(kl_penalty(lp, ref, "k2"), [[0.5 * ln2**2, 0.5 * ln2**2]])  # 0.240227
    k3 = kl_penalty(lp, ref, "k3")
    # token 0: exp(-ln2) + ln2 - 1 = 0.193147; token 1: exp(ln2) - ln2 - 1 = 0.306853
    assert close(k3, [[0.5 + ln2 - 1, 2 - ln2 - 1]])
    assert (k3 >= 0).all()
    assert close(kl_penalty(lp, ref, "low_var_kl"), k3)
    assert kl_penalty(torch.zeros(1, 1), torch.full((1, 1), 20.0), "k3").item() == 10.0  # clamped
    with pytest.raises(ValueError, match="k3"):
        kl_penalty(lp, ref, "k4")


# ----------------------------------------------------------------------------------------------- logits


def test_logprobs_and_entropy_from_logits():
    g = torch.Generator().manual_seed(2)
    logits = torch.randn(3, 4, 11, generator=g)
    tokens = torch.randint(0, 11, (3, 4), generator=g)
    ref = torch.log_softmax(logits / 0.7, -1).gather(-1, tokens[..., None]).squeeze(-1)
    assert close(logprobs_from_logits(logits, tokens, 0.7), ref)
    assert close(logprobs_from_logits(logits, tokens, 0.7, chunk_size=2), ref)
    logp = torch.log_softmax(logits, -1)
    ent = entropy_from_logits(logits)
    assert close(ent, -(logp.exp() * logp).sum(-1))
    assert close(entropy_from_logits(logits, chunk_size=1), ent)
    assert close(entropy_from_logits(torch.zeros(1, 2, 8)), [[math.log(8)] * 2])  # uniform -> log V
    bf = logprobs_from_logits(logits.bfloat16(), tokens)
    assert bf.dtype == torch.float32 and entropy_from_logits(logits.bfloat16()).dtype == torch.float32
    with pytest.raises(ValueError):
        entropy_from_logits(logits, temperature=0.0)


def test_scaled_logits_skips_only_the_exact_division_by_one():
    """At temperature 1 the float32 logits are used as they are (no [N, T, V] copy); the log-probs and their
    gradients are then the same bits as with the division; any other temperature divides."""
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(2, 3, 13, generator=g, requires_grad=True)
    tokens = torch.randint(0, 13, (2, 3), generator=g)
    assert scaled_logits(logits, 1.0) is logits
    assert torch.equal(scaled_logits(logits, 0.7), logits / 0.7)
    assert scaled_logits(logits.bfloat16(), 1.0).dtype == torch.float32
    upstream = torch.randn(2, 3, generator=g)
    fast = logprobs_from_logits(logits, tokens)
    (grad_fast,) = torch.autograd.grad((fast * upstream).sum(), logits)
    z = logits / 1.0  # what the division computed
    slow = z.gather(-1, tokens[..., None]).squeeze(-1) - torch.logsumexp(z, -1)
    (grad_slow,) = torch.autograd.grad((slow * upstream).sum(), logits)
    assert torch.equal(fast, slow) and torch.equal(grad_fast, grad_slow)


def test_top2_margin_by_hand():
    """p = (0.5, 0.3, 0.2): p_(1) - p_(2) = 0.2 in any order of the vocabulary; at temperature 2 the
    probabilities become sqrt(p) / sum sqrt(p), so the margin is (sqrt .5 - sqrt .3) / (sqrt .5 + sqrt .3 + sqrt .2)."""
    logits = torch.tensor([[0.2, 0.5, 0.3], [0.5, 0.3, 0.2]]).log() + 7.0  # a shift changes nothing
    assert close(top2_margin(logits), [0.2, 0.2])
    s = [math.sqrt(0.5), math.sqrt(0.3), math.sqrt(0.2)]
    assert close(top2_margin(logits, 2.0), [(s[0] - s[1]) / sum(s)] * 2)
    assert close(top2_margin(torch.zeros(1, 2, 5)), [[0.0, 0.0]])  # uniform: no margin
    assert top2_margin(logits.bfloat16()).dtype == torch.float32


# ----------------------------------------------------------------------------------------------- overlong


def test_soft_overlong_three_regimes():
    lengths = torch.tensor([10, 16, 17, 18, 20, 25])
    # max_len 20, buffer 4: free up to 16, linear ramp to -1 at 20, -1 beyond
    out = soft_overlong_penalty(lengths, max_len=20, buffer=4)
    assert out.dtype == torch.float32
    assert close(out, [0.0, 0.0, -0.25, -0.5, -1.0, -1.0])
    assert close(soft_overlong_penalty(lengths, 20, 4, factor=2.0), [0.0, 0.0, -0.5, -1.0, -2.0, -2.0])
    assert close(soft_overlong_penalty(lengths, 20, 0), [0, 0, 0, 0, 0, -1.0])
    with pytest.raises(ValueError):
        soft_overlong_penalty(lengths, 20, 21)


# ----------------------------------------------------------------------------------------------- finiteness


def test_check_finite_message():
    ok = torch.ones(3)
    assert check_finite("rewards", ok, step=3) is ok
    t = torch.tensor([[1.0, float("nan")], [float("nan"), 2.0]])
    with pytest.raises(NonFiniteError) as ei:
        check_finite("rewards", t, step=3, source="outcome")
    msg = str(ei.value)
    assert msg.startswith("step 3: NaN in rewards (source 'outcome')")
    assert "2 NaN, 0 inf of 4 entries" in msg and "\n" not in msg
    assert isinstance(ei.value, RuntimeError) and ei.value.num_nan == 2
    with pytest.raises(NonFiniteError, match=r"step 7: NaN/inf in loss: 1 NaN, 1 inf"):
        check_finite("loss", torch.tensor([float("inf"), float("nan"), 0.0]), step=7)
    check_finite("ids", torch.tensor([1, 2]), step=0)  # integer tensors are always finite


def test_module_exports():
    for name in algos.__all__:
        assert hasattr(algos, name), name
