"""Stopping on a signal: Ctrl-C and SIGTERM (preemption) end the job's run KILLED, not FAILED."""

from __future__ import annotations

import signal
from typing import Any

__all__ = ["Interrupted", "install", "on_signal", "raise_if_interrupted", "interrupt_handled"]


class Interrupted(KeyboardInterrupt):
    """A signal asked the job to stop (Ctrl-C, SIGTERM on preemption); runs end KILLED."""

    def __init__(self, signum: int):
        self.signum = signum
        name = signal.Signals(signum).name
        super().__init__("interrupted (Ctrl-C, SIGINT)" if name == "SIGINT" else f"received signal {signum} ({name})")

    @property
    def exit_code(self) -> int:
        return 128 + self.signum  # what a shell reports for a process the signal killed


_received: int | None = None  # the signal that asked this process to stop, until a job has stopped for it


def on_signal(signum: int, frame: Any) -> None:
    """The entry point's handler for SIGINT and SIGTERM: raise `Interrupted`, and remember it.

    Some libraries import optional parts under a bare `except:`, which swallows the exception a
    signal raises there (a Ctrl-C during the imports that start quantization, say);
    `raise_if_interrupted` raises it again at qexp's next step."""
    global _received
    _received = signum
    raise Interrupted(signum)


def raise_if_interrupted() -> None:
    """Raise `Interrupted` again when a signal came that the job has not stopped for."""
    if _received is not None:
        raise Interrupted(_received)


def interrupt_handled() -> None:
    """The job stopped for the signal (a worker process may run the next job)."""
    global _received
    _received = None


def install() -> None:
    """SIGINT and SIGTERM raise `Interrupted` in this process (the entry point's first step in a job)."""
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, on_signal)
