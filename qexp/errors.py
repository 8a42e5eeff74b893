"""One exception hierarchy; every message says what failed, `<key=value>`, and the fix."""

from __future__ import annotations

from typing import Any

__all__ = ["QexpError", "ConfigError", "DataError", "TrackingError", "StoreRefused", "StoreAway", "Interrupted",
           "config_error", "on_signal", "raise_if_interrupted", "interrupt_handled"]


class QexpError(Exception):
    """An error a user can act on. The entry points print it without a traceback."""

    refused = False  # raised before the job started anything: a setting to fix, exit status 2


class ConfigError(QexpError):
    """The composed configuration is unusable; raised before any model is loaded."""

    refused = True


class DataError(QexpError):
    """Calibration or evaluation data is missing or malformed."""


class TrackingError(QexpError):
    """The MLflow store cannot be reached or used."""


class StoreAway(TrackingError):
    """The store stopped answering while the job ran, for longer than tracking.outage_seconds."""


class StoreRefused(TrackingError):
    """The store refused the job before it started (no server, no or wrong credentials, no permission):
    like a ConfigError, a setting to fix, not a failed run."""

    refused = True


def config_error(key: str, value: Any, problem: str, fix: str) -> ConfigError:
    return ConfigError(f"{problem}: <{key}={value!r}>. {fix}")


class Interrupted(KeyboardInterrupt):
    """A signal asked the job to stop (Ctrl-C, SIGTERM on preemption); runs end KILLED."""

    def __init__(self, signum: int):
        import signal

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
