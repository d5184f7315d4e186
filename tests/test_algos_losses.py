"""GSPO, GSPO-token and CISPO (drox.trainers.algos): values and gradients by hand and against direct formulas written
here, the on-policy limit, where clipping engages, padding, options, and two training steps of each on the tiny model."""

import math

import pytest
import torch

from drox.errors import ConfigError
from drox.trainers import algos
from drox.trainers.algos import (POLICY_LOSSES, cispo_loss, gspo_loss, gspo_token_loss, loss_normalisers,
                                 resolve_policy_loss)

NEW_LOSSES = (gspo_loss, gspo_token_loss, cispo_loss)
MASK = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]])  # N=2 x T=3, the first row's last token is padding


def close(a, b, tol=1e-6):
    return torch.allclose(torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64), atol=tol)


def grad_of(fn, lp, *args, **kwargs):
    lp = lp.detach().clone().requires_grad_(True)
    loss, stats = fn(lp, *args, **kwargs)
    loss.backward()
    return loss.detach(), lp.grad, stats


def _case(log_ratios, seed=0):
    """log-probs [2, 3] and old log-probs with the given token log-ratios (padding of row 0 = nonsense)."""
    g = torch.Generator().manual_seed(seed)
    old = -torch.rand(2, 3, generator=g) - 0.5
    lp = old + torch.tensor(log_ratios)
    return lp, old


# ------------------------------------------------------------------------------------------------------ GSPO


def test_registered_with_options():
    assert {"ppo_clip", "gspo", "gspo_token", "cispo"} <= set(POLICY_LOSSES.names())
    assert POLICY_LOSSES.get("gspo").options.__name__ == "GSPOConfig"
    assert POLICY_LOSSES.get("gspo_token").options is POLICY_LOSSES.get("gspo").options
    assert POLICY_LOSSES.get("cispo").options.__name__ == "CISPOConfig"
    assert POLICY_LOSSES.get("ppo_clip").options is None


def test_gspo_by_hand_one_sequence_clipped_one_inside():
    # row 0: token log-ratios 0.1, 0.3 (padding 5.0 ignored) -> log s = 0.2, s = 1.2214 > 1.1 with A = +1: clipped
    # row 1: 0, -0.06, 0 -> log s = -0.02, s = 0.98020 inside [0.9, 1.1] with A = -2: unclipped
    lp, old = _case([[0.1, 0.3, 5.0], [0.0, -0.06, 0.0]])
    adv = torch.tensor([1.0, -2.0])
    s0, s1 = math.exp(0.2), math.exp(-0.02)
    loss, grad, stats = grad_of(gspo_loss, lp, old, adv, MASK, clip_low=0.1, clip_high=0.1, agg="seq-mean-token-mean")
    # paper's (1/G) sum_i: row 0 is -1 * 1.1 (clipped branch), row 1 is -(-2) * s1
    assert close(loss, (-1.1 + 2 * s1) / 2)
    # d/dlogp_{1,t} of (2 s1) / 2 = s1 / |o_1| = s1 / 3 on row 1's tokens; exactly 0 on the clipped row and padding
    assert close(grad, [[0.0, 0.0, 0.0], [s1 / 3] * 3])
    assert grad[0].abs().sum().item() == 0.0
    assert stats["clip_frac"] == pytest.approx(0.5) and stats["clip_frac_high"] == pytest.approx(0.5)
    assert stats["clip_frac_low"] == 0.0
    assert stats["ratio_mean"] == pytest.approx((s0 + s1) / 2, abs=1e-6)
    assert stats["ratio_max"] == pytest.approx(s0, abs=1e-6)
    assert stats["adv_mean"] == pytest.approx(-0.5)
    # the paper's default range (3e-4, 4e-4): row 1 (s below 1 - 3e-4, A < 0) is clipped too
    _, grad, stats = grad_of(gspo_loss, lp, old, adv, MASK)
    assert grad.abs().sum().item() == 0.0 and stats["clip_frac"] == 1.0 and stats["clip_frac_low"] == 0.5


def _gspo_direct(lp, old, adv, mask, lo, hi):
    """GSPO written out independently: s_i as the |o_i|-th root of the product of token probability ratios,
    then per-sequence min(s A, clip(s) A), averaged over sequences (the paper's 1/G)."""
    losses = []
    for i in range(lp.shape[0]):
        keep = mask[i].bool()
        prod = torch.prod(torch.exp(lp[i][keep]) / torch.exp(old[i][keep]))
        s = prod ** (1.0 / int(keep.sum()))
        a = adv[i]
        losses.append(-torch.min(s * a, torch.clamp(s, 1 - lo, 1 + hi) * a))
    return torch.stack(losses).mean()


@pytest.mark.parametrize("lo,hi", [(3e-4, 4e-4), (0.05, 0.05), (0.2, 0.28)])
def test_gspo_matches_direct_formula_value_and_gradient(lo, hi):
    g = torch.Generator().manual_seed(3)
    old = -torch.rand(4, 5, generator=g, dtype=torch.float64) - 0.2
    lp = old + 0.1 * torch.randn(4, 5, generator=g, dtype=torch.float64)
    adv = torch.tensor([1.0, -1.0, 0.5, -2.0], dtype=torch.float64)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0], [1, 1, 1, 1, 0]], dtype=torch.float64)
    loss, grad, _ = grad_of(gspo_loss, lp, old, adv, mask, clip_low=lo, clip_high=hi, agg="seq-mean-token-mean")
    x = lp.detach().clone().requires_grad_(True)
    ref = _gspo_direct(x, old, adv, mask, lo, hi)
    ref.backward()
    assert close(loss, ref, 1e-10) and close(grad, x.grad, 1e-10)


def test_gspo_token_equals_gspo_with_equal_token_advantages():
    g = torch.Generator().manual_seed(5)
    old = -torch.rand(6, 7, generator=g) - 0.2
    lp = old + 0.05 * torch.randn(6, 7, generator=g)
    mask = (torch.rand(6, 7, generator=g) > 0.3).float()
    mask[:, 0] = 1.0
    adv_seq = torch.randn(6, generator=g)
    adv_tok = adv_seq[:, None] * mask  # the broadcast sequence advantage (0 on padding, as drox builds it)
    for lo, hi, agg in ((3e-4, 4e-4, "token-mean"), (0.01, 0.01, "seq-mean-token-mean"), (0.5, 0.5, "token-mean")):
        a, ga, _ = grad_of(gspo_loss, lp, old, adv_tok, mask, clip_low=lo, clip_high=hi, agg=agg)
        b, gb, _ = grad_of(gspo_token_loss, lp, old, adv_tok, mask, clip_low=lo, clip_high=hi, agg=agg)
        assert close(a, b) and close(ga, gb)
    # per-token advantages: gspo_token follows each token's own advantage, gspo their mean
    varied = adv_tok * torch.linspace(0.5, 1.5, 7)
    _, ga, _ = grad_of(gspo_loss, lp, lp.detach(), varied, mask)
    _, gb, _ = grad_of(gspo_token_loss, lp, lp.detach(), varied, mask)
    assert not close(ga, gb)
    assert close(gb, -varied / mask.sum())  # on policy (ratio 1): the token's own advantage


# ------------------------------------------------------------------------------------------------------ CISPO


def test_cispo_by_hand():
    # token ratios: row 0: 1.5, 1.0 (padding 5.0), row 1: 0.5, 1.1, 0.7; range [0.8, 1.2]
    lp, old = _case([[math.log(1.5), 0.0, 5.0], [math.log(0.5), math.log(1.1), math.log(0.7)]])
    adv = torch.tensor([[2.0, 2.0, 2.0], [-1.0, -1.0, -1.0]])
    loss, grad, stats = grad_of(cispo_loss, lp, old, adv, MASK, clip_low=0.2, clip_high=0.2)
    w = torch.tensor([[1.2, 1.0, 0.0], [0.8, 1.1, 0.8]])  # the clipped weights (padding: unused)
    # token-mean over 5 valid tokens: L = -(1/5) sum w A logp
    assert close(loss, -(w * adv * lp * MASK).sum() / 5)
    assert close(grad, -w * adv * MASK / 5)
    assert grad[0, 2].item() == 0.0
    assert stats["clip_frac"] == pytest.approx(3 / 5)  # 1.5 above, 0.5 and 0.7 below
    assert stats["clip_frac_high"] == pytest.approx(1 / 5) and stats["clip_frac_low"] == pytest.approx(2 / 5)
    assert stats["ratio_mean"] == pytest.approx((1.5 + 1.0 + 0.5 + 1.1 + 0.7) / 5, abs=1e-6)
    assert stats["ratio_max"] == pytest.approx(1.5, abs=1e-6)
    assert stats["weight_mean"] == pytest.approx((1.2 + 1.0 + 0.8 + 1.1 + 0.8) / 5, abs=1e-6)
    # the default range (no lower bound, 1 + 0.2 above): only 1.5 is clipped, and every token keeps a gradient
    _, grad, stats = grad_of(cispo_loss, lp, old, adv, MASK)
    w = torch.tensor([[1.2, 1.0, 0.0], [0.5, 1.1, 0.7]])
    assert close(grad, -w * adv * MASK / 5) and stats["clip_frac"] == pytest.approx(1 / 5)
    assert (grad[MASK.bool()] != 0).all()


def test_cispo_matches_direct_formula_and_keeps_gradient_where_ppo_drops_it():
    g = torch.Generator().manual_seed(7)
    old = -torch.rand(3, 4, generator=g, dtype=torch.float64) - 0.2
    lp = old + 0.4 * torch.randn(3, 4, generator=g, dtype=torch.float64)
    adv = torch.randn(3, 4, generator=g, dtype=torch.float64)
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0], [1, 1, 1, 0]], dtype=torch.float64)
    loss, grad, _ = grad_of(cispo_loss, lp, old, adv, mask, clip_low=0.2, clip_high=0.28, agg="seq-mean-token-mean")
    x = lp.detach().clone().requires_grad_(True)
    total = 0.0
    for i in range(3):  # sum_t w A log pi / |o_i|, averaged over the 3 sequences
        n = int(mask[i].sum())
        for t in range(n):
            r = math.exp(float(lp[i, t] - old[i, t]))
            w = min(max(r, 0.8), 1.28)
            total = total - w * adv[i, t] * x[i, t] / n
    ref = total / 3
    ref.backward()
    assert close(loss, ref, 1e-10) and close(grad, x.grad, 1e-10)
    _, g_ppo, _ = grad_of(algos.policy_loss, lp, old, adv, mask, clip_low=0.2, clip_high=0.28,
                          agg="seq-mean-token-mean")
    assert (g_ppo[mask.bool()] == 0).any() and (grad[mask.bool()] != 0).all()


# ------------------------------------------------------------------------------------------------------ shared


@pytest.mark.parametrize("fn", NEW_LOSSES, ids=lambda f: f.__name__)
@pytest.mark.parametrize("agg", ["token-mean", "seq-mean-token-mean", "seq-mean-token-sum"])
def test_ratio_one_is_the_on_policy_policy_gradient(fn, agg):
    lp, _ = _case([[0.0] * 3] * 2)
    adv = torch.tensor([[1.5, 1.5, 1.5], [-0.5, -0.5, -0.5]])
    _, grad, stats = grad_of(fn, lp, lp.detach(), adv, MASK, agg=agg)
    per_row = {"token-mean": torch.full((2, 1), 5.0), "seq-mean-token-mean": torch.tensor([[2.0 * 2], [3.0 * 2]]),
               "seq-mean-token-sum": torch.full((2, 1), 2.0)}[agg]  # the aggregation's normaliser of each token
    assert close(grad, -adv * MASK / per_row)
    assert stats["clip_frac"] == 0.0 and stats["ratio_mean"] == pytest.approx(1.0)
    assert stats["ppo_kl"] == pytest.approx(0.0, abs=1e-7)


@pytest.mark.parametrize("fn", NEW_LOSSES, ids=lambda f: f.__name__)
def test_padding_contributes_nothing(fn):
    lp, old = _case([[0.05, -0.02, 0.0], [0.01, 0.03, -0.04]])
    adv = torch.tensor([1.0, -1.0])
    base, g_base, s_base = grad_of(fn, lp, old, adv, MASK, clip_low=0.1, clip_high=0.1)
    for pad_lp, pad_old in ((9.0, -9.0), (-float("inf"), -3.0), (0.0, 0.0)):
        lp2, old2 = lp.clone(), old.clone()
        lp2[0, 2], old2[0, 2] = pad_lp, pad_old
        loss, grad, stats = grad_of(fn, lp2, old2, adv, MASK, clip_low=0.1, clip_high=0.1)
        assert close(loss, base) and close(grad, g_base) and grad[0, 2].item() == 0.0
        assert stats == pytest.approx(s_base)


@pytest.mark.parametrize("fn", NEW_LOSSES, ids=lambda f: f.__name__)
@pytest.mark.parametrize("agg", ["token-mean", "seq-mean-token-mean"])
def test_micro_batches_sum_to_full(fn, agg):
    g = torch.Generator().manual_seed(1)
    lp = torch.randn(4, 5, generator=g) * 0.1 - 1.0
    old = lp + torch.randn(4, 5, generator=g) * 0.05
    adv = torch.randn(4, generator=g)
    M = (torch.rand(4, 5, generator=g) > 0.3).float()
    full, _ = fn(lp, old, adv, M, clip_low=0.02, clip_high=0.02, agg=agg)
    norms = loss_normalisers(M)
    parts = [fn(lp[s], old[s], adv[s], M[s], clip_low=0.02, clip_high=0.02, agg=agg, **norms)[0]
             for s in (slice(0, 1), slice(1, 4))]
    assert close(sum(parts), full)


def test_bad_clip_ranges_are_refused():
    lp = torch.zeros(1, 2)
    with pytest.raises(ValueError, match="clip_low"):
        gspo_loss(lp, lp, torch.ones(1), torch.ones(1, 2), clip_low=1.0)
    with pytest.raises(ValueError, match="clip_low"):
        cispo_loss(lp, lp, torch.ones(1), torch.ones(1, 2), clip_low=-0.1)
    cispo_loss(lp, lp, torch.ones(1), torch.ones(1, 2), clip_low=5.0)  # no lower bound: allowed


# ------------------------------------------------------------------------------------------------------ config


def test_options_parsed_before_anything_loads(compose_cfg):
    from drox.pipeline import build_pipeline

    p = build_pipeline(compose_cfg("trainer.policy_loss=gspo"))
    assert (p.policy_loss.name, p.policy_loss.opts.clip_low, p.policy_loss.opts.clip_high) == ("gspo", 3e-4, 4e-4)
    fn, clip = resolve_policy_loss(p.policy_loss, compose_cfg().trainer)
    assert fn is gspo_loss and clip == {"clip_low": 3e-4, "clip_high": 4e-4}
    p = build_pipeline(compose_cfg("trainer.policy_loss=gspo_token", "trainer.gspo.clip_high=1e-3"))
    assert p.policy_loss.fn is gspo_token_loss and p.policy_loss.opts.clip_high == 1e-3
    p = build_pipeline(compose_cfg("trainer.policy_loss=cispo", "trainer.cispo.clip_high=0.3"))
    assert (p.policy_loss.opts.clip_low, p.policy_loss.opts.clip_high) == (1.0, 0.3)
    cfg = compose_cfg("trainer.clip_high=0.28")
    fn, clip = resolve_policy_loss(build_pipeline(cfg).policy_loss, cfg.trainer)
    assert fn is algos.policy_loss and clip == {"clip_low": 0.2, "clip_high": 0.28}
    # no pipeline stage (a hand-built pipeline): parsed from the trainer config
    cfg = compose_cfg("trainer.policy_loss=gspo_token", "trainer.gspo.clip_low=0.01")
    assert resolve_policy_loss(None, cfg.trainer)[1] == {"clip_low": 0.01, "clip_high": 4e-4}


@pytest.mark.parametrize("overrides,start", [
    (("trainer.policy_loss=gspo", "trainer.gspo.clip_low=1.5"), "trainer.gspo: clip_low=1.5 must be in [0, 1)"),
    (("trainer.policy_loss=gspo_token", "trainer.gspo.clip_high=-1"), "trainer.gspo: clip_high=-1.0 must be >= 0"),
    (("trainer.policy_loss=cispo", "trainer.cispo.clip_low=-0.5"), "trainer.cispo: clip_low=-0.5 must be >= 0"),
])
def test_bad_option_is_one_line_naming_the_key(capsys, overrides, start):
    import typer
    from conftest import TINY_OVERRIDES

    from drox.cli.main import compose
    from drox.pipeline import build_pipeline

    with pytest.raises(ConfigError) as e:
        build_pipeline(compose([*TINY_OVERRIDES, *overrides], validate=False))
    assert "\n" not in str(e.value) and str(e.value).startswith(start), str(e.value)
    with pytest.raises(typer.Exit):  # the CLI composes and checks before it loads anything: one line on stderr
        compose([*TINY_OVERRIDES, *overrides])
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {start}") and "\n" not in err, err


# ------------------------------------------------------------------------------------------------------ end to end


@pytest.mark.parametrize("loss", ["gspo", "gspo_token", "cispo"])
def test_two_training_steps_on_the_tiny_model(tmp_path, loss):
    from test_trainer import make_cfg

    from drox.cli.main import compose
    from drox.trainers import loop
    from drox.trainers.metrics import read_metrics

    # mu=2: the second pass sees an updated policy, so the ratios leave 1 and the clip range is exercised
    cfg = make_cfg(compose, tmp_path / "run", **{"trainer.steps": 2, "trainer.policy_loss": loss, "trainer.mu": 2})
    loop.run_training(cfg, tmp_path / "run", progress=False)
    rows = read_metrics(tmp_path / "run" / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2]
    for row in rows:
        assert math.isfinite(row["loss"]) and math.isfinite(row["pg_loss"]) and math.isfinite(row["grad_norm"])
        for key in ("clip_frac", "clip_frac_high", "clip_frac_low", "ratio_mean", "ratio_max", "ppo_kl"):
            assert key in row and math.isfinite(row[key]), key
        assert 0.0 <= row["clip_frac"] <= 1.0
    if loss == "cispo":
        assert "weight_mean" in rows[0]
    assert max(r["ratio_max"] for r in rows) > 1.0
