"""Graceful preemption (trainers/preemption.py): SIGTERM or SIGUSR1 ends a run at the next step boundary with a
checkpoint, one line and exit code 143, and the resumed run equals an uninterrupted one. Before: SIGTERM ended the
run at once, with no line, and the steps since the last checkpoint were lost."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from drox.trainers import loop
from drox.trainers.checkpoint import list_checkpoints
from drox.trainers.metrics import read_metrics
from drox.trainers.preemption import EXIT_CODE, Preempted, preemption_signals

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from test_trainer import _strip_time, make_cfg  # noqa: E402  (the trainer tests' tiny config and reward)


@pytest.fixture
def compose_cfg():
    from drox.cli.main import compose

    return compose


def _signal_during(monkeypatch, name: str, at_step: int, signum: int = signal.SIGTERM) -> None:
    """Send ``signum`` to this process from inside ``loop.<name>`` (train_step or run_eval) at step ``at_step``,
    before the real function runs: the signal arrives in the middle of that step or evaluation."""
    real = getattr(loop, name)

    def with_signal(trainer, *args, **kwargs):
        step = args[0] if name == "train_step" else args[2]
        if step == at_step:
            os.kill(os.getpid(), signum)
        return real(trainer, *args, **kwargs)

    monkeypatch.setattr(loop, name, with_signal)


@pytest.mark.parametrize("at_step", [1, 3])
def test_sigterm_mid_step_finishes_the_step_checkpoints_it_and_the_resume_is_identical(compose_cfg, tmp_path,
                                                                                     monkeypatch, at_step):
    cfg = make_cfg(compose_cfg, tmp_path / "stopped", **{"trainer.save_every": 0})
    _signal_during(monkeypatch, "train_step", at_step)
    with pytest.raises(Preempted) as stopped:
        loop.run_training(cfg, tmp_path / "stopped", progress=False)
    assert str(stopped.value) == (f"received SIGTERM at step {at_step}: checkpoint step-{at_step:06d} written; "
                                  f"resume with drox train --resume {tmp_path / 'stopped'}")
    assert [p.name for p in list_checkpoints(tmp_path / "stopped" / "checkpoints")] == [f"step-{at_step:06d}"]
    assert [r["step"] for r in read_metrics(tmp_path / "stopped" / "metrics.jsonl")] == list(range(1, at_step + 1))
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handler is put back
    monkeypatch.undo()
    cfg.resume = True
    loop.run_training(cfg, tmp_path / "stopped", progress=False)
    clean = make_cfg(compose_cfg, tmp_path / "clean", **{"trainer.save_every": 0})
    loop.run_training(clean, tmp_path / "clean", progress=False)
    resumed = read_metrics(tmp_path / "stopped" / "metrics.jsonl")
    assert [r["step"] for r in resumed] == [1, 2, 3, 4]
    assert _strip_time(resumed) == _strip_time(read_metrics(tmp_path / "clean" / "metrics.jsonl"))


def test_sigusr1_during_an_evaluation_stops_after_it(compose_cfg, tmp_path, monkeypatch):
    cfg = make_cfg(compose_cfg, tmp_path / "run", **{"trainer.save_every": 2, "trainer.eval_every": 2})
    _signal_during(monkeypatch, "run_eval", 2, signal.SIGUSR1)
    with pytest.raises(Preempted, match=r"^received SIGUSR1 at step 2: checkpoint step-000002 written"):
        loop.run_training(cfg, tmp_path / "run", progress=False)
    assert (tmp_path / "run" / "eval" / "step-000002" / "summary.json").is_file()  # the evaluation finished
    assert [p.name for p in list_checkpoints(tmp_path / "run" / "checkpoints")] == ["step-000002"]


def test_a_signal_before_the_first_step_and_with_checkpoints_off(compose_cfg, tmp_path, monkeypatch):
    cfg = make_cfg(compose_cfg, tmp_path / "early", **{"eval.before_training": True, "trainer.eval_every": 4})
    _signal_during(monkeypatch, "run_eval", 0)
    with pytest.raises(Preempted, match=r"^received SIGTERM at step 0: no step was done, nothing to save"):
        loop.run_training(cfg, tmp_path / "early", progress=False)
    assert not (tmp_path / "early" / "metrics.jsonl").exists() and not (tmp_path / "early" / "checkpoints").exists()
    monkeypatch.undo()
    cfg = make_cfg(compose_cfg, tmp_path / "none", **{"trainer.checkpoint": "none"})
    _signal_during(monkeypatch, "train_step", 2)
    with pytest.raises(Preempted, match=r"^received SIGTERM at step 2: trainer.checkpoint=none, so steps 1-2 are "):
        loop.run_training(cfg, tmp_path / "none", progress=False)
    assert not (tmp_path / "none" / "checkpoints").exists()


def test_the_command_line_prints_the_line_and_exits_143(capsys):
    from drox.cli.hydra_entry import user_errors

    with pytest.raises(SystemExit) as exit_info, user_errors():
        raise Preempted("received SIGTERM at step 7: checkpoint step-000007 written; resume with ...")
    assert exit_info.value.code == EXIT_CODE == 143
    assert capsys.readouterr().err == ("received SIGTERM at step 7: checkpoint step-000007 written; "
                                       "resume with ...\n")


def test_a_second_signal_ends_the_process_at_once():
    script = ("import os, signal, time\n"
              "from drox.trainers.preemption import preemption_signals\n"
              "with preemption_signals() as flag:\n"
              "    os.kill(os.getpid(), signal.SIGTERM)\n"
              "    assert flag.received == 'SIGTERM'\n"
              "    print('still running', flush=True)\n"
              "    os.kill(os.getpid(), signal.SIGTERM)\n"
              "    time.sleep(5)\n"
              "    print('not reached', flush=True)\n")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert proc.returncode == -signal.SIGTERM  # killed by the signal itself, as without drox's handler
    assert proc.stdout == "still running\n"
    assert proc.stderr.startswith("received SIGTERM: the run stops after the current step with a checkpoint")


def test_handlers_are_put_back_and_a_worker_thread_changes_nothing():
    import threading

    before = signal.getsignal(signal.SIGUSR1)
    with preemption_signals() as flag:
        assert signal.getsignal(signal.SIGUSR1) == flag.handle
    assert signal.getsignal(signal.SIGUSR1) is before
    seen = []

    def in_thread():
        with preemption_signals() as flag:
            seen.append((flag.received, signal.getsignal(signal.SIGTERM)))

    worker = threading.Thread(target=in_thread)
    worker.start()
    worker.join()
    assert seen == [(None, signal.getsignal(signal.SIGTERM))]
