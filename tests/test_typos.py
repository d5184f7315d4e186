"""A typo in a key, a group option or a component name: one line naming the nearest valid name, exit 2, in every
command (drox.cli.suggest)."""

import subprocess
import sys

import pytest

from drox.cli.suggest import explain, nearest, undeclared_keys


def test_nearest_picks_the_closest_name_or_none():
    assert nearest("stpes", ["steps", "seed", "lr"]) == "steps"
    assert nearest("tny", ["hf", "tiny", "toy"]) == "tiny"
    assert nearest("qqqqq", ["steps", "seed"]) is None


def test_undeclared_keys_finds_what_plus_adds_to_a_structured_node_and_nothing_else():
    from drox.cli.main import compose

    assert undeclared_keys(compose(["model=tiny", "+reward=[outcome,format]"])) == []
    from drox.cli.main import _hydra_compose

    cfg = _hydra_compose(["model=tiny", "+trainer.stpes=5", "+rewrd=outcome"])  # Hydra composes both silently
    found = dict(undeclared_keys(cfg))
    assert set(found) == {"trainer.stpes", "rewrd"}
    assert "steps" in found["trainer.stpes"] and "reward" in found["rewrd"]


def test_explain_reads_hydra_and_omegaconf_messages():
    keys = {"": ["trainer", "model", "seed"], "trainer": ["steps", "lr"]}.get
    text = "Could not override 'trainer.stpes'.\nKey 'stpes' not in 'TrainerConfig'"
    assert explain(text, [], keys) == ("unknown key trainer.stpes (did you mean trainer.steps?); "
                                       "`drox config` prints every key")
    text = "Could not override 'trainr.steps'.\nKey 'trainr' not in 'DroxConfig'"
    assert explain(text, [], keys).startswith("unknown key trainr (did you mean trainer?)")
    text = "In 'config': Could not find 'reward/outcom'; available options: format, outcome, prm"
    assert explain(text, ["+reward=outcom"], keys) == ("unknown option +reward=outcom (did you mean "
                                                       "+reward=outcome?); available options: format, outcome, prm")
    text = "trainer.loss_agg=tokn-mean is not allowed; choose one of: seq-mean, token-mean"
    assert explain(text, [], keys) == ("trainer.loss_agg=tokn-mean is not allowed (did you mean "
                                       "trainer.loss_agg=token-mean?); choose one of: seq-mean, token-mean")
    assert explain("something else entirely", [], keys) is None


@pytest.mark.parametrize("command, expected", [
    (["train", "model=tiny", "trainer.stpes=5"], "unknown key trainer.stpes (did you mean trainer.steps?)"),
    (["train", "model=tiny", "+trainer.stpes=5"], "unknown key trainer.stpes (did you mean trainer.steps?)"),
    (["sft", "model=tny"], "unknown option model=tny (did you mean model=tiny?)"),
    (["config", "+rewrd=outcome"], "unknown key rewrd (did you mean reward?)"),
    (["eval", "model=tiny", "trainer.advantage.estimator=grpoo"],
     "(did you mean trainer.advantage.estimator=grpo?)"),
])
def test_every_command_says_it_in_one_line_with_exit_2(command, expected, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "drox.cli.main", *command], capture_output=True, text=True,
                          cwd=tmp_path, timeout=120)
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in (proc.stdout + proc.stderr).splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], lines


def test_a_config_file_that_is_not_valid_yaml_is_one_line(tmp_path, monkeypatch, capsys):
    import shutil

    import typer

    from drox.cli import main

    conf = tmp_path / "conf"
    shutil.copytree(main.CONF_DIR, conf)
    (conf / "experiment" / "broken.yaml").write_text("# @package _global_\neval:\n  n: 8\neval:\n  n: 4\n")
    monkeypatch.setattr(main, "CONF_DIR", conf)
    with pytest.raises(typer.Exit) as exit_info:
        main.compose(["experiment=broken"])
    assert exit_info.value.exit_code == 2
    err = capsys.readouterr().err
    assert "found duplicate key eval" in err and "broken.yaml" in err and len(err.strip().splitlines()) == 1


def test_a_registered_components_option_block_is_not_a_typo():
    """``+trainer.<objective>.<option>=...`` keeps a plugin objective's options (drox.components): ``trainer.<name>``
    is declared by the registry, not by TrainerConfig, and only for a registered name."""
    from drox.cli.main import _hydra_compose
    from drox.cli.suggest import component_option_blocks

    cfg = _hydra_compose(["model=tiny", "+trainer.myobj.beta=2", "+trainer.myobk.beta=2"])
    assert [k for k, _ in undeclared_keys(cfg, {"trainer": {"myobj"}})] == ["trainer.myobk"]
    blocks = component_option_blocks()
    assert "dpo" in blocks["trainer"] and "grpo" in blocks["trainer.advantage"] and "hf" in blocks["rollout"]


def test_an_estimators_options_need_no_plus():
    """``trainer.advantage.nsr.scale=2`` (a free-dict block of the schema) gets ``++``, which adds the key or
    overrides the one an alias set; typed blocks, prefixed keys, other keys and hydra.* pass unchanged."""
    from drox.cli.main import compose
    from drox.cli.suggest import option_overrides

    given = ["trainer.advantage.nsr.scale=2", "+trainer.advantage.psr.scale=3", "trainer.gspo.clip_low=0.1",
             "trainer.advantage.estimator=nsr", "trainer.steps=2", "hydra.run.dir=x", "model=tiny"]
    assert option_overrides(given) == ["++trainer.advantage.nsr.scale=2", *given[1:]]
    cfg = compose(["model=tiny", "trainer.advantage.estimator=nsr", "trainer.advantage.nsr.scale=2"])
    assert cfg.trainer.advantage.nsr.scale == 2
    cfg = compose(["model=tiny", "+reward=w_reinforce", "trainer.advantage.w_reinforce.lam=0.25"])  # alias set it
    assert cfg.trainer.advantage.w_reinforce.lam == 0.25 and cfg.trainer.advantage.estimator == "w_reinforce"


@pytest.mark.parametrize("overrides, expected", [
    (["model=tiny", "+reward=w_reinforce", "reward.w_reinforce.lam=0.2"],
     "reward.w_reinforce.lam is an old key: w_reinforce is now the advantage estimator w_reinforce on the outcome "
     "reward (+reward=w_reinforce still selects it); its options are trainer.advantage.w_reinforce.* "
     "(e.g. trainer.advantage.w_reinforce.lam=...)"),
    (["model=tiny", "+reward.negative_only.weight=1"],
     "reward.negative_only is an old key: negative_only is now the advantage estimator nsr"),
    (["model=tiny", "trainer.advantage.estimator=nsr", "trainer.advantage.nsr.scal=2"],
     "trainer.advantage.nsr: unknown option(s) scal; allowed: beta_max, beta_min, correct_above, kappa, lam_max, "
     "lam_min, scale, schedule"),
])
def test_moved_and_misspelt_estimator_options_are_one_line(overrides, expected, capsys):
    import typer

    from drox.cli.main import compose

    with pytest.raises(typer.Exit) as exit_info:
        compose(overrides)
    err = capsys.readouterr().err.strip()
    assert exit_info.value.exit_code == 2 and len(err.splitlines()) == 1 and expected in " ".join(err.split()), err


def test_resuming_a_run_written_before_the_move_names_the_file_and_the_key(tmp_path, capsys):
    import typer

    from drox.cli.main import _resume

    run = tmp_path / "old"
    run.mkdir()
    (run / "config.yaml").write_text("model:\n  name: tiny\nreward:\n  negative_only:\n    weight: 1.0\n")
    with pytest.raises(typer.Exit) as exit_info:
        _resume(run, [])
    line = " ".join(capsys.readouterr().err.split())
    assert exit_info.value.exit_code == 2
    assert f"{run / 'config.yaml'}: reward.negative_only is an old key" in line
    assert line.endswith("this run was written by an older drox")
