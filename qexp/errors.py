"""One exception hierarchy; every message says what failed, `<key=value>`, and the fix."""

from __future__ import annotations

from typing import Any

__all__ = ["QexpError", "ConfigError", "DataError", "TrackingError", "Interrupted", "config_error"]


class QexpError(Exception):
    """An error a user can act on. The entry points print it without a traceback."""


class ConfigError(QexpError):
    """The composed configuration is unusable; raised before any model is loaded."""


class DataError(QexpError):
    """Calibration or evaluation data is missing or malformed."""


class TrackingError(QexpError):
    """The MLflow store cannot be reached or used."""


def config_error(key: str, value: Any, problem: str, fix: str) -> ConfigError:
    return ConfigError(f"{problem}: <{key}={value!r}>. {fix}")


class Interrupted(KeyboardInterrupt):
    """A signal asked the job to stop (SIGTERM on preemption); runs end KILLED, as on Ctrl-C."""

    def __init__(self, signum: int):
        import signal

        self.signum = signum
        super().__init__(f"received signal {signum} ({signal.Signals(signum).name})")

    @property
    def exit_code(self) -> int:
        return 128 + self.signum  # what a shell reports for a process the signal killed
