"""Graceful preemption: SIGTERM (what Slurm and Kubernetes send before they kill a job) or SIGUSR1 (Slurm's
``--signal=USR1@<seconds>``) ends a training run at the next step boundary with a checkpoint, instead of at once.

The first signal only sets a flag (and says so on stderr); the loop looks at it after each step (after that step's
own checkpoint and evaluation, so a signal that arrives during an evaluation takes effect once it is done), writes
a checkpoint of the step just finished, prints one line and raises :class:`Preempted`, which the command line turns
into exit code 143 (128 + SIGTERM, what a shell reports for a job ended by SIGTERM). A second signal restores the
default action and re-delivers itself: the process ends at once, as an uncaught SIGTERM would. What PyTorch
Lightning's and accelerate's users expect; the resumed run is the uninterrupted one (its checkpoint is an ordinary
one, tests/reliability/test_preemption.py).

Handlers can only be installed from the main thread; elsewhere (a run started inside a worker thread) the signals
keep their default action and nothing here changes.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from typing import Iterator, Optional, Tuple

EXIT_CODE = 143
"""The exit status of a run ended by a preemption signal: 128 + 15 (SIGTERM), as the shell reports a SIGTERM'd job."""

SIGNALS: Tuple[signal.Signals, ...] = tuple(s for s in (getattr(signal, "SIGTERM", None),
                                                        getattr(signal, "SIGUSR1", None)) if s is not None)


class Preempted(Exception):
    """The run stopped at a step boundary because it received a preemption signal; the message is the one line
    to show (which signal, at which step, what was saved, how to resume)."""

    exit_code = EXIT_CODE


class PreemptionFlag:
    """Which preemption signal arrived first (``received``: its name, e.g. ``"SIGTERM"``, or None)."""

    def __init__(self) -> None:
        self.received: Optional[str] = None

    def handle(self, signum: int, frame) -> None:
        if self.received is not None:  # the second one: no more waiting
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        self.received = signal.Signals(signum).name
        # os.write, not print: a handler runs between two bytecodes, possibly inside another write to stderr
        os.write(2, (f"received {self.received}: the run stops after the current step with a checkpoint "
                     f"(send it again to stop at once)\n").encode())


@contextlib.contextmanager
def preemption_signals() -> Iterator[PreemptionFlag]:
    """Route SIGTERM and SIGUSR1 to a :class:`PreemptionFlag` while the block runs; the previous handlers are put
    back after it (also when it raises)."""
    flag = PreemptionFlag()
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return
    previous = {s: signal.signal(s, flag.handle) for s in SIGNALS}
    try:
        yield flag
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
