"""One exception hierarchy; every message says what failed, `<key=value>`, and the fix."""

from __future__ import annotations

from typing import Any

__all__ = ["QexpError", "ConfigError", "DataError", "TrackingError", "StoreRefused", "StoreAway",
           "config_error", "at_least", "one_of"]


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


# Value checks, one style for every group's settings (`checks`, `speed.plan`, `quantization`).
def at_least(key: str, value: Any, minimum: float, fix: str) -> None:
    """Refuse a number below `minimum` (None passes: "not set" is the schema's business)."""
    if value is not None and value < minimum:
        raise config_error(key, value, f"Expected a number >= {minimum}", fix)


def one_of(key: str, value: Any, choices: tuple, fix: str | None = None) -> None:
    if value not in choices:
        raise config_error(key, value, "Unknown value", fix or f"Use one of {list(choices)}.")
