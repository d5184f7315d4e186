"""Bad input at the command line: one line on stderr, exit code 2, and no folder that looks like a run.

Run as subprocesses in a scratch folder (Hydra writes its run folder under the working directory), with the
output going to a pipe, as in a log file.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

SMALL = ["model=tiny", "logger.wandb_mode=disabled", "task.n_train=8", "task.n_test=4", "rollout.max_new_tokens=4",
         "trainer.steps=1", "trainer.prompts_per_step=2", "trainer.samples_per_prompt=2", "trainer.eval_every=0"]


def _drox(args, cwd):
    out = subprocess.run([sys.executable, "-m", "drox.cli.main", *args], cwd=cwd, env=dict(os.environ),
                         capture_output=True, text=True, timeout=180)
    return out.returncode, out.stdout, out.stderr


def _one_line_error(rc, stderr, needle):
    assert rc == 2, stderr[-2000:]
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    assert lines == [next(ln for ln in lines if ln.startswith("error: "))], stderr[-2000:]
    assert needle in lines[0], lines[0]


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_device_cuda_without_cuda_is_one_line_and_leaves_no_run_folder(tmp_path):
    """Before: a traceback from torch, and runs/<date>/<time>/ with config.yaml and an empty log."""
    rc, _, stderr = _drox(["train", *SMALL, "device=cuda"], tmp_path)
    _one_line_error(rc, stderr, "device=cuda: this machine has no usable CUDA device")
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").rglob("*.yaml"))


def test_a_run_dir_that_cannot_be_made_is_one_line(tmp_path):
    """A run_dir under a file (as unwritable as a read-only parent, and testable as root): exit 2, one line."""
    (tmp_path / "afile").write_text("x")
    rc, _, stderr = _drox(["train", *SMALL, "device=cpu", f"run_dir={tmp_path / 'afile' / 'run'}"], tmp_path)
    _one_line_error(rc, stderr, "choose a writable run_dir")


def test_vllm_backend_without_vllm_is_one_line(tmp_path):
    rc, _, stderr = _drox(["train", *SMALL, "device=cpu", "rollout.backend=vllm"], tmp_path)
    _one_line_error(rc, stderr, "rollout.backend=vllm")
