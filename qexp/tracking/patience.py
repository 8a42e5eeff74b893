"""Patience with a store that goes away: MLflow calls that wait out an outage, a first contact that
does not, and the retry of calls that are safe to repeat."""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from typing import Iterator

from ..errors import StoreAway
from .address import redact

log = logging.getLogger("qexp")


@contextlib.contextmanager
def first_contact() -> Iterator[None]:
    """No HTTP retries for the first request to a store: a server that is not there is refused at
    once (MLflow's two retries with back-off cost ~8 s and print a line each, measured by
    benchmarks/fail_fast.py); later requests keep MLflow's retries and qexp's outage patience."""
    before = os.environ.get("MLFLOW_HTTP_REQUEST_MAX_RETRIES")
    os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = "0"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("MLFLOW_HTTP_REQUEST_MAX_RETRIES")
        else:
            os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = before


class Patient:
    """An MlflowClient whose calls wait out an outage: a call that fails because the store is away
    (no connection, or server errors, after the client's own retries; nothing was stored) is tried
    again every few seconds, until `patience` seconds after the outage began; then `StoreAway`.

    Jobs' writes are what this protects. The heartbeat thread shares the outage's clock; a call that
    succeeds stops it, so a job that computes through a long outage logs once the store is back."""

    PAUSE_SECONDS = 5.0

    def __init__(self, client, uri: str, patience: float = 0.0):
        self._client, self._uri, self.patience = client, uri, patience
        self._away_since: float | None = None  # when the outage began; None while the store answers
        self._lock = threading.Lock()

    def __getattr__(self, name: str):
        attr = getattr(self._client, name)
        if not callable(attr):
            return attr

        def call(*args, **kwargs):
            while True:
                try:
                    result = attr(*args, **kwargs)
                except Exception as err:
                    if not is_outage(err):
                        raise
                    self._wait(name, err)
                    continue
                self._back()
                return result

        return call

    def _wait(self, call: str, err: Exception) -> None:
        with self._lock:
            now = time.time()
            if self._away_since is None:
                self._away_since = now
                if self.patience:
                    log.warning("The MLflow store at %s is not answering (%s); waiting up to %.0f s for it "
                                "(tracking.outage_seconds)", redact(self._uri), first_line(err), self.patience)
            away = now - self._away_since
        if away >= self.patience:  # the outage's clock keeps running: a later call that fails gives up at once
            where = f"The MLflow store at <tracking.uri={redact(self._uri)!r}>"
            if not self.patience:
                raise StoreAway(f"{where} stopped answering ({call}: {first_line(err)}). "
                                "Check that the server and its database are up, then try again.") from None
            raise StoreAway(
                f"{where} has not answered for {away:.0f} s (<tracking.outage_seconds={self.patience:g}>; "
                f"last call {call}: {first_line(err)}). What this job computed is kept (its checkpoint, and "
                "its evaluation once finished): run the same command again when the store is back, and it "
                "logs them without computing them again.") from None
        time.sleep(min(self.PAUSE_SECONDS, self.patience - away))

    def _back(self) -> None:
        if self._away_since is not None:
            with self._lock:
                if self._away_since is not None:
                    log.info("The MLflow store at %s answers again, after %.0f s", redact(self._uri),
                             time.time() - self._away_since)
                    self._away_since = None


REFUSALS = ("UNAUTHENTICATED", "PERMISSION_DENIED")  # the server answered: no credentials, or no permission
_OUTAGE_SIGNS = ("Max retries exceeded", "Failed to establish a new connection", "Connection aborted",
                 "Connection refused", "RemoteDisconnected", "OperationalError")


def is_outage(err: Exception) -> bool:
    """Whether `err` says the store is away (a call worth trying again) rather than refusing the call."""
    if getattr(err, "error_code", "") in (*REFUSALS, "RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE",
                                          "RESOURCE_ALREADY_EXISTS"):
        return False
    text = str(err)
    return any(sign in text for sign in _OUTAGE_SIGNS)


def first_line(err: Exception) -> str:
    return f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"


def retry(what: str, call, attempts: int, pause: float):
    """`call()`, tried up to `attempts` times `pause` seconds apart; each failure but the last is logged."""
    for attempt in range(attempts):
        try:
            return call()
        except StoreAway:
            raise  # waited out already
        except Exception as err:
            if attempt + 1 == attempts:
                raise
            first_line = str(err).splitlines()[0] if str(err) else ""
            log.warning("%s failed (%s: %s); trying again", what, type(err).__name__, first_line)
            time.sleep(pause)

