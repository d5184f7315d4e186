"""A run folder's record stays true (issue 34): one writer at a time, a resume that refuses what it cannot apply,
and a damaged config.yaml reported in one line. Each test failed before its fix: the old behaviour is named in its
docstring."""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from drox.cli.main import app
from drox.errors import ConfigError
from drox.trainers import loop
from drox.trainers.checkpoint import latest_checkpoint
from drox.trainers.metrics import read_metrics
from drox.trainers.run_folder import LOCK_FILE, claim_run_dir

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from test_trainer import make_cfg  # noqa: E402  (the trainer tests' tiny config and reward)


@pytest.fixture
def compose_cfg():
    from drox.cli.main import compose

    return compose


def test_a_damaged_config_yaml_is_one_line_naming_file_and_line(tmp_path):
    """Before: `drox train --resume X` printed a 40-line traceback from inside PyYAML and exited 1."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("seed: 0\nmodel: [unclosed\n")
    for args in (["train", "--resume", str(run), "trainer.steps=3"], ["eval", "--run", str(run)]):
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 2, result.output
        text = " ".join(result.output.split())
        assert f"{run / 'config.yaml'}:3:1: not valid YAML" in text, text
        assert "flow sequence at line 2, column 8" in text and "Traceback" not in text
    assert sorted(p.name for p in run.iterdir()) == ["config.yaml"]  # nothing written


def test_resume_refuses_overrides_it_cannot_apply(compose_cfg, tmp_path):
    """Before: `--resume X trainer.steps=3 model.hidden_size=128` exited 0, trained on with the 64-wide weights and
    wrote hidden_size: 128 into X/config.yaml."""
    run = tmp_path / "run"
    loop.run_training(make_cfg(compose_cfg, run, **{"trainer.steps": 2}), run, progress=False)
    record = (run / "config.yaml").read_text()
    refused = CliRunner().invoke(app, ["train", "--resume", str(run), "trainer.steps=3", "model.hidden_size=128",
                                       "seed=7", "trainer.samples_per_prompt=2"])
    assert refused.exit_code == 2, refused.output
    text = " ".join(refused.output.split())
    assert "model.hidden_size, seed, trainer.samples_per_prompt cannot change when resuming" in text, text
    assert "start a new run" in text and "trainer.steps" in text
    assert (run / "config.yaml").read_text() == record
    assert [r["step"] for r in read_metrics(run / "metrics.jsonl")] == [1, 2]
    # what may change does, and repeating a saved value is not a change
    resumed = CliRunner().invoke(app, ["train", "--resume", str(run), "trainer.steps=3", "model.hidden_size=64",
                                       "seed=0", "logger.completions_per_step=1"])
    assert resumed.exit_code == 0, resumed.output
    assert latest_checkpoint(run / "checkpoints").name == "step-000003"
    assert "steps: 3" in (run / "config.yaml").read_text()
    # each resume that ran is recorded, with its step and its command line (the refused one never started)
    again = CliRunner().invoke(app, ["train", "--resume", str(run), "trainer.steps=4"])
    assert again.exit_code == 0, again.output
    import json

    records = [json.loads(line) for line in (run / "resumes.jsonl").read_text().splitlines()]
    assert [(r["from_step"], r["overrides"]) for r in records] == [
        (2, ["trainer.steps=3", "model.hidden_size=64", "seed=0", "logger.completions_per_step=1"]),
        (3, ["trainer.steps=4"])]
    assert all(r["drox"] and r["time"] for r in records)



@contextlib.contextmanager
def held_by_pid_4242(folder: Path):
    """``folder``'s run lock, held as another drox process holds it (its pid written in the lock file)."""
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / LOCK_FILE, os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
    os.write(fd, b"4242\n")
    try:
        yield folder
    finally:
        os.close(fd)


def test_a_second_writer_of_a_run_folder_is_refused(compose_cfg, tmp_path):
    """Before: two `drox train ... run_dir=X` started together both passed the "already holds a run" check and
    interleaved their lines in X/metrics.jsonl. Here another process's lock is held (as `drox train` holds it)."""
    run = tmp_path / "run"
    with held_by_pid_4242(run):
        with pytest.raises(ConfigError, match=rf"run_dir={run} is being written by another drox process \(pid 4242\)"):
            loop.run_training(make_cfg(compose_cfg, run, **{"trainer.steps": 1}), run, progress=False)
        assert sorted(p.name for p in run.iterdir()) == [LOCK_FILE]  # nothing written
    loop.run_training(make_cfg(compose_cfg, run, **{"trainer.steps": 1}), run, progress=False)  # free again
    assert [r["step"] for r in read_metrics(run / "metrics.jsonl")] == [1]


def test_a_killed_writer_leaves_no_stale_lock(tmp_path):
    """Two processes at once: the first holds the folder, the second is refused naming its pid; after a kill -9
    of the first the folder can be claimed again (the kernel drops a dead process's flock)."""
    run = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from pathlib import Path; from drox.trainers.run_folder import claim_run_dir\n"
        "with claim_run_dir(Path(sys.argv[1]), resume=False, overwrite=False):\n"
        "    print('held', flush=True); time.sleep(120)"), str(run)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(ConfigError, match=rf"being written by another drox process \(pid {holder.pid}\)"):
            with claim_run_dir(run, resume=True, overwrite=False):
                pass
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait(timeout=30)
    with claim_run_dir(run, resume=True, overwrite=False):
        assert (run / LOCK_FILE).read_text().strip() == str(os.getpid())


def test_a_second_sft_writer_of_a_folder_is_refused(compose_cfg, tmp_path):
    """Before: `drox sft` took no lock, so two fine-tunes into one folder overwrote each other's files. Now the
    second gets the same one line as `drox train`, before it writes anything."""
    from drox.trainers.sft import run_sft

    run = tmp_path / "sft"
    cfg = compose_cfg(["model=tiny", "task=arithmetic", "sft.steps=1", "sft.batch_size=2", "task.n_train=8",
                       "logger.wandb_mode=disabled", f"run_dir={run}"])
    with held_by_pid_4242(run):
        with pytest.raises(ConfigError, match=rf"run_dir={run} is being written by another drox process \(pid 4242\)"):
            run_sft(cfg, run, progress=False)
        assert sorted(p.name for p in run.iterdir()) == [LOCK_FILE]  # nothing written
    run_sft(cfg, run, progress=False)  # free again
    assert (run / "model" / "config.json").is_file()


def test_a_second_driver_of_a_table_folder_is_refused(tmp_path, capsys):
    """Before: two `driver.py <name>` on one table both trained every run into the same runs/ folders. Now the
    second gets one line naming the holder's pid and exit code 2, before anything is trained or written."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "experiments"))
    import driver

    table = tmp_path / "table"
    with held_by_pid_4242(table), pytest.raises(SystemExit) as stop:
        driver.main(["nsr", "--smoke", "--out", str(table)])
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: run_dir={table} is being written by another drox process (pid 4242); wait for it to end "
                   "or choose another run_dir (in a sweep, leave run_dir unset so that each job gets its own folder)"]
    assert sorted(p.name for p in table.iterdir()) == [LOCK_FILE]  # nothing trained, nothing logged
