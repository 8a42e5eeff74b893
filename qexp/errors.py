"""One exception hierarchy; every message says what failed, `<key=value>`, and the fix."""

from __future__ import annotations

from typing import Any

__all__ = ["QexpError", "ConfigError", "DataError", "TrackingError", "config_error"]


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
