"""Shared test fixtures.

The model cache: tests never read the developer's ``$DROX_CACHE``. A session-wide fixture
points ``DROX_CACHE`` at ``$DROX_TEST_CACHE`` when that is set (reuse a converted model across
sessions: ``DROX_TEST_CACHE=/tmp/droxcache pytest``), else at a fresh temporary folder, so a
clean CI machine converts the embedded SmolLM2 tokenizer/model once per session (~5 s / ~20 s).

Threads: torch runs on one CPU thread unless ``OMP_NUM_THREADS`` is set. The tests' tensors
are small, and on a machine whose cores are busy (a shared 2-core box, or pytest next to a
training run) torch's default of one thread per core made them 10-20x slower (OpenMP workers
waiting on each other), e.g. test_rollout.py 14 s instead of 4 s.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

# the shared test doubles (tests/doubles.py) import as `doubles` under pytest's importlib mode
sys.path.insert(0, str(Path(__file__).resolve().parent))

if not os.environ.get("OMP_NUM_THREADS"):
    # before torch is imported (torch reads it once, at start-up); also reaches subprocesses
    os.environ["OMP_NUM_THREADS"] = "1"
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(1)

# Small sizes: everything a test composes runs in well under a second per step on a CPU.
TINY_OVERRIDES = [
    "model=tiny",
    "logger.wandb_mode=disabled",
    "device=cpu",
    "task.n_train=16",
    "task.n_test=4",
    "trainer.steps=2",
    "trainer.prompts_per_step=2",
    "trainer.samples_per_prompt=2",
    "trainer.save_every=0",
    "rollout.max_new_tokens=8",
    "rollout.batch_size=16",
    "eval.pass_at_k=[1,2]",
    "eval.max_new_tokens=8",
]


@pytest.fixture(scope="session", autouse=True)
def drox_cache(tmp_path_factory):
    """Set ``DROX_CACHE`` for the whole session (restored afterwards); returns the folder."""
    path = os.environ.get("DROX_TEST_CACHE") or str(tmp_path_factory.mktemp("drox-cache"))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DROX_CACHE", path)
        yield path


@pytest.fixture
def compose_cfg():
    """``compose_cfg(*extra)``: the validated config for TINY_OVERRIDES followed by ``extra``."""
    from drox.cli.main import compose

    def make(*extra: str):
        return compose([*TINY_OVERRIDES, *extra])

    return make


@pytest.fixture
def tiny_cfg(compose_cfg):
    """A fresh composed config for the tiny random model with small sizes (safe to mutate)."""
    return compose_cfg()


@pytest.fixture(scope="session")
def tiny_policy():
    """(model, tokenizer) of the tiny random Llama, loaded once per session.

    Shared: treat it as read-only (deep-copy it before training or editing weights).
    """
    from drox.cli.main import compose
    from drox.models.loading import load_policy

    cfg = compose(TINY_OVERRIDES)
    return load_policy(cfg.model, "cpu")
