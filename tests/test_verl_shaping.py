"""VERL's exploration-exploitation advantage shaping (Huang et al., arXiv 2509.23808; docs/algorithms.md "VERL
advantage shaping"): hand-computed ER / ERV / ERA, relative deviations, the EMA baselines and the clipped bonus;
the option off (and on with zero weight) changes nothing; a bad value is one config line; a 2-step tiny run."""

from __future__ import annotations

import math

import pytest
import torch

from drox.config import ConfigError
from drox.models.effective_rank import effective_rank, rank_dynamics
from drox.trainers import algos

# A regular tetrahedron's vertices: mean 0, the three columns orthogonal with squared norm 4.
TETRA = torch.tensor([[1.0, 1.0, 1.0], [1.0, -1.0, -1.0], [-1.0, 1.0, -1.0], [-1.0, -1.0, 1.0]])


def test_centred_effective_rank_by_hand():
    """Rows (1,0), (-1,0), (0,2), (0,-2): mean 0, orthogonal columns of norms sqrt(2) and sqrt(8), so
    s = (2 sqrt 2, sqrt 2), p = (2/3, 1/3), H = -(2/3 ln 2/3 + 1/3 ln 1/3) = 0.636514, erank = e^H = 1.889882.
    Shifting every row by (5, 5) leaves the centred rank unchanged and changes the uncentred one."""
    m = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 2.0], [0.0, -2.0]])
    assert effective_rank(m, centre=True) == pytest.approx(1.889882, abs=1e-6)
    assert effective_rank(m) == pytest.approx(1.889882, abs=1e-6)  # already centred
    shifted = m + 5.0
    assert effective_rank(shifted, centre=True) == pytest.approx(1.889882, abs=1e-6)
    assert abs(effective_rank(shifted) - 1.889882) > 0.1
    # tetrahedron: s = (2, 2, 2) -> erank 3
    assert effective_rank(TETRA, centre=True) == pytest.approx(3.0, abs=1e-9)


def test_rank_dynamics_by_hand():
    """The tetrahedron's rows as a 4-token response, stride 1: prefixes of 2, 3, 4 rows.

    * 2 distinct rows, centred: +-(r1 - r0)/2, rank one: e_1 = 1;
    * 3 rows: an equilateral triangle (all pairwise distances sqrt 8), centred singular values equal: e_2 = 2;
    * 4 rows: the tetrahedron, e_3 = 3 (and ER of the whole response = 3).
    Velocity terms: v_2 = e_2 - e_1 = 1, v_3 = e_3 - (e_1 + e_2)/2 = 1.5 -> ERV = 1.25.
    Acceleration terms: a_3 = v_3 - v_2 = 0.5 -> ERA = 0.5."""
    er, erv, era = rank_dynamics(TETRA, stride=1)
    assert (er, erv, era) == pytest.approx((3.0, 1.25, 0.5), abs=1e-9)
    # stride 2: only the 3-row prefix (k*s < T: k = 1), so no difference: ERV = ERA = 0
    assert rank_dynamics(TETRA, stride=2) == pytest.approx((3.0, 0.0, 0.0), abs=1e-9)
    # stride 1 on the first 3 rows: e = (1, 2), ERV = 1, ERA = 0 (one velocity term only)
    assert rank_dynamics(TETRA[:3], stride=1) == pytest.approx((2.0, 1.0, 0.0), abs=1e-9)
    # one token: nothing to measure (0, as the authors' code); equal rows: rank 1, the spread never grows
    assert rank_dynamics(TETRA[:1], stride=1) == (0.0, 0.0, 0.0)
    assert rank_dynamics(torch.ones(5, 3), stride=1) == pytest.approx((1.0, 0.0, 0.0))
    with pytest.raises(ValueError, match="stride"):
        rank_dynamics(TETRA, stride=0)


def test_relative_deviation_and_ema_by_hand():
    """(x - mu) / (|mu| + eps), clipped: stats (ERA, ERV, ER) = (2, 1, 4) against mu = (1, -2, 4) gives
    (1/1, 3/2, 0) = (1, 1.5, 0); 100 against 1 gives 99 -> clip 5; anything against mu = 0 hits the clip."""
    d = algos.verl_relative_deviation(torch.tensor([[2.0, 1.0, 4.0], [100.0, -100.0, 1.0]]),
                                      torch.tensor([1.0, -2.0, 0.0]))
    assert d[0].tolist() == pytest.approx([1.0, 1.5, 5.0])  # 4 vs 0 -> 4e8 -> 5
    assert d[1].tolist() == pytest.approx([5.0, -5.0, 5.0])
    # EMA: the first mean starts it; then (1 - 0.3) (1, 2, 3) + 0.3 (3, 2, 1) = (1.6, 2, 2.4)
    first = algos.verl_ema_update(None, torch.tensor([1.0, 2.0, 3.0]), 0.3)
    assert first.tolist() == [1.0, 2.0, 3.0]
    assert algos.verl_ema_update(first, torch.tensor([3.0, 2.0, 1.0]), 0.3).tolist() == pytest.approx([1.6, 2.0, 2.4])


def test_shaped_advantages_by_hand():
    """Baselines mu = (ERA 0.5, ERV 1.0, ER 2.0); defaults w_explore = ER, w_exploit = ERV, gain 2, kappa 2.

    a: stats (0.5, 1.5, 3.0): delta = (0, 0.5, 0.5), gate sigmoid(0) = 0.5,
       phi = 0.5 tanh 0.5 + 0.5 tanh 0.5 = 0.462117; A = 1.0, cap 0.5 -> bonus 0.462117, A' = 1.462117.
    b: stats (1.0, 0.5, 4.0): delta = (1, -0.5, 1), gate sigmoid(2) = 0.880797,
       phi = 0.880797 tanh 1 + 0.119203 tanh(-0.5) = 0.670810 - 0.055086 = 0.615724; A = -0.8, cap 0.4 -> bonus 0.4
       (capped), A' = -0.4: the bonus never flips a sign.
    c: stats (0, 0, 2): delta = (-1, -1, 0), gate sigmoid(-2) = 0.119203, phi = 0.880797 tanh(-1) = -0.670810
       -> bonus max(phi, 0) = 0, A' = 0.3.
    d: A = 0 (a group without contrast): cap 0 -> no bonus whatever the statistics."""
    adv = torch.tensor([[1.0, -0.8], [0.3, 0.0]])
    stats = torch.tensor([[0.5, 1.5, 3.0], [1.0, 0.5, 4.0], [0.0, 0.0, 2.0], [9.0, 9.0, 9.0]])
    baseline = torch.tensor([0.5, 1.0, 2.0])
    shaped, parts = algos.verl_shaped_advantages(adv, stats, baseline)
    assert shaped.shape == (2, 2) and shaped.dtype == torch.float32
    assert shaped.flatten().tolist() == pytest.approx([1.462117, -0.4, 0.3, 0.0], abs=1e-6)
    assert parts["gate"][:3].tolist() == pytest.approx([0.5, 0.880797, 0.119203], abs=1e-6)
    assert parts["phi"][:3].tolist() == pytest.approx([0.462117, 0.615724, -0.670810], abs=1e-6)
    assert parts["bonus"].tolist() == pytest.approx([0.462117, 0.4, 0.0, 0.0], abs=1e-6)
    # a rejected rollout gets no bonus; weight 0 gives none anywhere (the advantages unchanged)
    valid = torch.tensor([[False, True], [True, True]])
    shaped_v, _ = algos.verl_shaped_advantages(adv, stats, baseline, valid=valid)
    assert shaped_v.flatten().tolist() == pytest.approx([1.0, -0.4, 0.3, 0.0], abs=1e-6)
    assert torch.equal(algos.verl_shaped_advantages(adv, stats, baseline, weight=0.0)[0], adv)
    # swapped channels: row a's phi is the same (equal deviations), row b's becomes 0.880797 tanh(-0.5) + 0.119203
    # tanh 1 = -0.407032 + 0.090784 = -0.316248 -> no bonus
    _, swapped = algos.verl_shaped_advantages(adv, stats, baseline, w_explore=(0.0, 1.0, 0.0),
                                              w_exploit=(0.0, 0.0, 1.0))
    assert swapped["phi"][1].item() == pytest.approx(-0.316248, abs=1e-6) and swapped["bonus"][1].item() == 0.0
    with pytest.raises(ValueError, match="kappa"):
        algos.verl_shaped_advantages(adv, stats, baseline, kappa=0.0)
    with pytest.raises(ValueError, match="rows"):
        algos.verl_shaped_advantages(adv, stats[:3], baseline)


@pytest.mark.parametrize("key, value, message", [
    ("kappa", 0.0, "trainer.advantage.verl.kappa=0.0 must be > 0"),
    ("stride", 0, "trainer.advantage.verl.stride=0 must be a positive integer"),
    ("ema_alpha", 1.5, "trainer.advantage.verl.ema_alpha=1.5 must be in (0, 1]"),
    ("w_explore", [1.0, 0.0], "must hold 3 weights, on (ERA, ERV, ER)"),
    ("tokens", "first", "trainer.advantage.verl.tokens=first is not allowed; choose one of: last, all"),
])
def test_bad_values_raise_config_errors(compose_cfg, key, value, message):
    from drox.pipeline import build_pipeline

    cfg = compose_cfg("trainer.advantage.verl_shaping=true")
    cfg.trainer.advantage.verl[key] = value
    with pytest.raises(ConfigError) as err:
        build_pipeline(cfg)
    assert message in str(err.value) and "\n" not in str(err.value)
    cfg.trainer.advantage.verl_shaping = False  # only checked when the shaping is on
    build_pipeline(cfg)


def test_a_bad_value_on_the_command_line_is_one_error_line(compose_cfg, capsys):
    import typer

    with pytest.raises(typer.Exit) as exc:
        compose_cfg("trainer.advantage.verl_shaping=true", "trainer.advantage.verl.kappa=-1")
    assert exc.value.exit_code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: trainer.advantage.verl.kappa=-1.0 must be > 0") and "\n" not in err
    with pytest.raises(typer.Exit):
        compose_cfg("trainer.advantage.verl_shaping=true", "trainer.objective=dpo")
    assert "set trainer.objective=pg or trainer.advantage.verl_shaping=false" in capsys.readouterr().err


def _run(compose_cfg, tmp_path, name, *extra):
    from drox.trainers import loop
    from drox.trainers.metrics import read_metrics

    cfg = compose_cfg("eval.before_training=false", "trainer.eval_every=0", "+reward=random",
                      f"run_dir={tmp_path / name}", *extra)
    loop.run_training(cfg, tmp_path / name, progress=False)
    return read_metrics(tmp_path / name / "metrics.jsonl")


def test_two_tiny_steps_with_the_shaping(compose_cfg, tmp_path):
    """Off by default; on with weight 0 it measures but trains exactly as off; on, the second step (the first
    with baselines) adds a bonus within its bounds, and the baselines are checkpointed."""
    from drox.trainers.checkpoint import load_trainer_state

    off = _run(compose_cfg, tmp_path, "off")
    zero = _run(compose_cfg, tmp_path, "zero", "trainer.advantage.verl_shaping=true",
                "trainer.advantage.verl.weight=0", "trainer.advantage.verl.stride=2")
    on = _run(compose_cfg, tmp_path, "on", "trainer.advantage.verl_shaping=true", "trainer.advantage.verl.stride=2",
              "trainer.advantage.verl.tokens=all")
    assert [r["step"] for r in on] == [1, 2]
    assert not any(k.startswith("verl/") for r in off for k in r)
    for a, b in zip(zero, off):
        assert a["loss"] == b["loss"] and a["advantage/mean"] == b["advantage/mean"]
        assert a["verl/bonus_mean"] == 0.0
    first, second = on
    assert first["verl/active"] == 0.0 and first["verl/bonus_mean"] == 0.0 and "verl/baseline_er" not in first
    assert second["verl/active"] == 1.0 and 0.0 <= second["verl/bonus_frac"] <= 1.0
    assert 1.0 <= first["verl/er_mean"] <= 8.0 and math.isfinite(second["verl/erv_mean"])
    assert 0.0 <= second["verl/bonus_mean"] <= second["advantage/abs_max"] / 2.0  # kappa = 2
    assert 0.0 < second["verl/gate_mean"] < 1.0 and second["time/verl"] > 0
    # the step-1 baselines are the step-1 means (the EMA starts at the first mean), in (ERA, ERV, ER) order
    assert second["verl/baseline_er"] == pytest.approx(first["verl/er_mean"])
    assert second["verl/baseline_erv"] == pytest.approx(first["verl/erv_mean"])
    state = load_trainer_state(tmp_path / "on" / "checkpoints" / "step-000002")
    assert state["shapers"]["verl"].shape == (3,)  # the shaper's state: VERL's running baselines
    assert "shapers" not in load_trainer_state(tmp_path / "off" / "checkpoints" / "step-000002")
