"""math-verify in a worker process with a hard timeout.

math-verify guards its sympy work with ``signal.alarm``, which only works on the main
thread: called from a trainer thread it fails and the answer silently scores 0, and with
its timeout disabled a pathological expression can hang the run. Here it runs in a pool
worker (its own main thread, internal timeouts off) and the parent waits at most
``timeout`` seconds; a worker that overruns is killed and the pool recreated.

A forked worker inherits its parent's signal handlers. Created during a training run, that would be drox's
preemption handler (trainers/preemption.py), which answers SIGTERM with a line and carries on: the SIGTERM with
which ``Pool.terminate`` kills an overrunning worker would be ignored and the parent would wait for the stuck
worker forever. So each worker puts the default action back for the preemption signals first.
"""

from __future__ import annotations

import atexit
import logging
import multiprocessing as mp
import signal
import sys
import threading
from typing import Optional, Sequence

_lock = threading.Lock()
_pool = None  # created lazily: most verifications never get here


def _check(pred: str, ref: str) -> bool:
    """Worker side: does ``pred`` equal ``ref`` according to math-verify?"""
    from math_verify import parse, verify

    # It warns once per process that its timeout is off; the parent enforces one.
    logging.getLogger("math_verify").setLevel(logging.ERROR)
    gold = parse(f"${ref}$", parsing_timeout=None)
    target = parse(f"${pred}$", parsing_timeout=None)
    return bool(verify(gold, target, timeout_seconds=None))


def _default_signals() -> None:
    """Worker initializer: SIGTERM and SIGUSR1 end the worker again (see the module docstring)."""
    for name in ("SIGTERM", "SIGUSR1"):
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), signal.SIG_DFL)


def _context():
    # fork starts a worker in milliseconds with math-verify already imported (the pool is
    # recreated after every timeout); the child touches only sympy, never torch/CUDA, which
    # is the same contract torch's own DataLoader workers rely on. Elsewhere: the default.
    if sys.platform.startswith("linux"):
        return mp.get_context("fork")
    return mp.get_context()


def _get_pool():
    global _pool
    if _pool is None:
        import math_verify  # noqa: F401  (imported before forking so workers start warm)

        _pool = _context().Pool(processes=1, initializer=_default_signals)
    return _pool


def shutdown() -> None:
    """Terminate the worker pool (it is recreated on the next call)."""
    global _pool
    if _pool is not None:
        pool, _pool = _pool, None
        pool.terminate()
        pool.join()


atexit.register(shutdown)


def check_many(pairs: Sequence[tuple[str, str]], timeout: float) -> tuple[list[bool], int]:
    """Compare each ``(pred, ref)`` pair; returns (results, number of timeouts).

    Pairs run one at a time so each gets its full ``timeout``; a timeout or a worker error
    scores False.
    """
    results: list[bool] = []
    timeouts = 0
    with _lock:
        for pred, ref in pairs:
            ok, timed_out = _one(pred, ref, timeout)
            results.append(ok)
            timeouts += timed_out
    return results, timeouts


def _one(pred: str, ref: str, timeout: Optional[float]) -> tuple[bool, bool]:
    # `_check` is looked up here at call time, so tests can swap it.
    job = _get_pool().apply_async(_check, (pred, ref))
    try:
        return bool(job.get(timeout)), False
    except mp.TimeoutError:
        shutdown()  # the worker is stuck inside sympy; only killing it frees it
        return False, True
    except Exception:  # noqa: BLE001 - math-verify raising on odd input means "no match"
        return False, False
