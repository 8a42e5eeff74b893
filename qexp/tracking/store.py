"""One MLflow experiment as qexp sees it: runs found, created, reaped and read, as `RunRecord`s."""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable
from urllib.parse import urlparse

from ..contract import TAGS
from ..errors import QexpError, StoreRefused, TrackingError, config_error
from .address import UI_ADDRESS, redact, store_user
from .patience import REFUSALS, Patient, first_contact, is_outage
from .writer import Run


@dataclass(frozen=True)
class RunRecord:
    """A run as qexp reads it: its id, name, status and times (unix milliseconds), and its params,
    metrics and tags under the names of `qexp.contract`."""

    run_id: str
    name: str
    status: str  # RUNNING | FINISHED | FAILED | KILLED
    start_time: int
    end_time: int | None = None
    params: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    active: bool = True  # False once deleted (MLflow keeps deleted runs until garbage-collected)

    @classmethod
    def of(cls, run) -> RunRecord:
        """The record of an MLflow `Run`."""
        info, data = run.info, run.data
        return cls(info.run_id, info.run_name, info.status, info.start_time, info.end_time, dict(data.params),
                   dict(data.metrics), dict(data.tags), info.lifecycle_stage == "active")

    @property
    def done(self) -> bool:
        """A FINISHED run counts as done unless its speed phase failed (vLLM missing or crashing): the next
        attempt at its configuration runs again (checkpoint and answers reused) and measures anew."""
        return self.status == "FINISHED" and self.tags.get(TAGS.SPEED) != "failed"


def _store_error(uri: str, experiment: str, err: Exception, writing: bool) -> TrackingError:
    """What MLflow raised while qexp opened the store, said as one line with the fix; the refusals a
    job can do nothing about (no or wrong credentials, no permission, no server) are `StoreRefused`."""
    shown = redact(uri)
    code = getattr(err, "error_code", "")
    if code == "UNAUTHENTICATED":
        name = store_user(uri)
        who = f"the password of user {name!r}" if name else "a request without credentials"
        return StoreRefused(
            f"The MLflow server at <tracking.uri={shown!r}> refused {who} (401, not authenticated). "
            "Set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD to a user of that server "
            "(or put them in ~/.mlflow/credentials); its admin creates users (docs/scale-out.md, 'One shared store').")
    if code == "PERMISSION_DENIED":
        what = "write to" if writing else "read"
        return StoreRefused(
            f"User {store_user(uri)!r} may not {what} the experiment <tracking.experiment={experiment!r}> at "
            f"<tracking.uri={shown!r}> (403, permission denied). Ask the server's admin for "
            f"{'EDIT' if writing else 'READ'} permission on it (docs/scale-out.md, 'One shared store'), "
            "or choose an experiment you may use.")
    first = str(err).splitlines()[0] if str(err) else ""
    served = urlparse(uri).scheme in ("http", "https")
    if served and is_outage(err) and "error responses" in first:  # urllib3's "too many 503 error responses"
        return StoreRefused(f"The MLflow server at <tracking.uri={shown!r}> answers with server errors "
                            "(its database may be down). Check the server's log and its database.")
    if served and is_outage(err):
        return StoreRefused(f"No MLflow server answers at <tracking.uri={shown!r}> (connection failed). "
                            "Start the server, or fix tracking.uri (--tracking-uri for the command-line tools).")
    return TrackingError(
        f"Cannot use the MLflow store <tracking.uri={shown!r}>: {type(err).__name__}: {first}. "
        "Start the server, or fix tracking.uri (--tracking-uri for the command-line tools).")


class Store:
    """One MLflow experiment in one store: where runs are found, created, reaped and read.

    Opening fails at once when the store does not answer. Once open, `wait_out_outages(seconds)`
    makes every call wait for a store that went away (a server restarting, its database failing
    over) for up to that long before `StoreAway` is raised."""

    def __init__(self, client, experiment_id: str, uri: str, experiment: str):
        self.client = Patient(client, uri)
        self.experiment_id, self.uri, self.experiment = experiment_id, uri, experiment

    @property
    def outage_seconds(self) -> float:
        return self.client.patience

    def wait_out_outages(self, seconds: float) -> None:
        self.client.patience = seconds

    @classmethod
    def open(cls, uri: str, experiment: str, create: bool = True) -> Store:
        """Connect and find, or create, the experiment; with `create` (a job, which writes runs), also
        check that this user may write to it. `StoreRefused` when the store cannot be used at all."""
        from mlflow import MlflowClient

        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
        # qexp says where its runs are (per job, and the UI address at the end of a sweep); MLflow's
        # own "View run" lines would cost a request at every run's end and crowd the terminal.
        os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        if create and uri.startswith("sqlite:///"):
            Path(uri[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
        client = MlflowClient(tracking_uri=uri)
        try:
            with first_contact():
                found = client.get_experiment_by_name(experiment)
            if found is None and not create:
                raise TrackingError(f"No experiment <tracking.experiment={experiment!r}> in "
                                    f"<tracking.uri={redact(uri)!r}>. Run `python -m qexp` first, or choose the "
                                    "store and experiment it wrote (--tracking-uri, --experiment).")
            if found is None:
                found = _create_experiment(client, uri, experiment)
            if found.lifecycle_stage == "deleted":
                raise config_error("tracking.experiment", experiment, "The experiment is deleted in this store",
                                   "Restore it in the MLflow UI, or choose another tracking.experiment.")
            if create:  # the UI opens classic experiments on the runs table; setting the tag is also the
                _set_experiment_kind(client, found.experiment_id)  # check that this user may write here
        except QexpError:
            raise
        except Exception as err:
            raise _store_error(uri, experiment, err, writing=create) from None
        return cls(client, found.experiment_id, uri, experiment)

    def ui_url(self) -> str:
        """The address that opens this experiment's runs table (`mlflow ui` for a local store)."""
        base = redact(self.uri) if self.uri.startswith(("http://", "https://")) else UI_ADDRESS
        return f"{base.rstrip('/')}/#/experiments/{self.experiment_id}?workflowType=machine_learning"

    def sweep_parent(self, sweep_id: str) -> RunRecord | None:
        """The parent run of a multirun, or None (a single run, or a sweep started by an older qexp)."""
        found = self.find_runs({TAGS.ROLE: "sweep", TAGS.SWEEP_ID: sweep_id}, status=None)
        return found[0] if found else None

    def find_runs(self, tags: dict[str, str] | None = None, status: str | None = "FINISHED",
                  where: Iterable[str] = ()) -> list[RunRecord]:
        """Runs whose tags all match (and the extra `where` clauses), newest first."""
        clauses = [f"tags.`{k}` = '{v}'" for k, v in (tags or {}).items()] + list(where)
        if status:
            clauses.append(f"attributes.status = '{status}'")
        found = self.client.search_runs([self.experiment_id], " and ".join(clauses),
                                        order_by=["attributes.start_time DESC"], max_results=5000)
        return [RunRecord.of(run) for run in found]

    def done_runs(self, config_hash: str) -> list[RunRecord]:
        """The finished runs of a configuration that make running it again unnecessary, newest first."""
        return [run for run in self.find_runs({TAGS.CONFIG_HASH: config_hash}) if run.done]

    def running_runs(self, config_hash: str) -> list[RunRecord]:
        """The RUNNING runs of a configuration (live, or dead and not reaped yet), newest first."""
        return self.find_runs({TAGS.CONFIG_HASH: config_hash}, status="RUNNING")

    def get_run(self, run_id: str) -> RunRecord:
        return RunRecord.of(self.client.get_run(run_id))

    def study_runs(self, sweep_id: str | None = None, include: Iterable[str] = ()) -> list[RunRecord]:
        """The FINISHED qexp runs (of one sweep, plus every baseline, which may come from an earlier sweep,
        plus the runs `include` names: those an earlier sweep finished for jobs this one skipped)."""
        qexp_run = [f"tags.`{TAGS.QUANT}` != ''"]
        if not sweep_id:
            return self.find_runs(where=qexp_run)
        found = (self.find_runs({TAGS.SWEEP_ID: sweep_id}, where=qexp_run)
                 + self.find_runs({TAGS.QUANT: "none"}, where=[f"tags.`{TAGS.SWEEP_ID}` != '{sweep_id}'"]))
        seen = {run.run_id for run in found}
        for run_id in dict.fromkeys(include):
            if run_id not in seen:
                run = self.get_run(run_id)
                if run.status == "FINISHED" and run.active:
                    found.append(run)
        return found

    def _run(self, run_id: str) -> Run:
        return Run(self.client, self.experiment_id, self.uri, run_id)

    def start_run(self, name: str, tags: dict[str, str]) -> Run:
        run = self.client.create_run(self.experiment_id, run_name=name, tags=tags)
        return self._run(run.info.run_id)

    def download(self, run_id: str, path: str, dst: Path) -> Path | None:
        """A run's artifact (file or folder) under `dst`; None when the run has no such artifact."""
        try:
            return Path(self.client.download_artifacts(run_id, path, str(dst)))
        except Exception:
            return None

    def stale_runs(self, stale_after: float, tags: dict[str, str] | None = None) -> list[tuple[RunRecord, str]]:
        """RUNNING runs whose job is dead: its process here is gone, or its heartbeat is too old."""
        found = []
        host = socket.gethostname()
        for run in self.find_runs(tags, status="RUNNING"):
            pid = run.tags.get(TAGS.PID, "")
            if run.tags.get(TAGS.HOST) == host and pid.isdigit():
                if _process_gone(int(pid), run.start_time):
                    found.append((run, f"process {pid} on {host} is gone"))
                continue  # alive here: slow, not dead
            beat = float(run.tags.get(TAGS.HEARTBEAT) or run.start_time / 1000)
            age = time.time() - beat
            if age > stale_after:
                found.append((run, f"no heartbeat for {age:.0f} s"))
        return found

    def reap_stale(self, stale_after: float, tags: dict[str, str] | None = None) -> list[tuple[RunRecord, str]]:
        """Mark dead RUNNING runs KILLED (with the reason as a tag); returns (run, reason) pairs."""
        found = self.stale_runs(stale_after, tags)
        for run, reason in found:
            self._run(run.run_id).end("KILLED", reason)
        return found


def _create_experiment(client, uri: str, name: str):
    """A new experiment; with a SQLite store its artifacts go in a folder beside the database."""
    location = None
    if uri.startswith("sqlite:///"):
        location = (Path(uri[len("sqlite:///"):]).resolve().parent / "artifacts").as_uri()
    try:
        client.create_experiment(name, artifact_location=location)
    except Exception:  # another job created it meanwhile
        pass
    found = client.get_experiment_by_name(name)
    if found is None:
        raise TrackingError(f"Cannot create the experiment <tracking.experiment={name!r}> in "
                            f"<tracking.uri={redact(uri)!r}>. Check that the store is writable.")
    return found


def _set_experiment_kind(client, experiment_id: str) -> None:
    """Tag the experiment as classic ML (idempotent). Jobs starting together on a fresh experiment all
    try; with a database store, all but the first insert fail on the tag's unique key, and that first
    one is enough. A refusal (no permission) is raised as it is."""
    try:
        client.set_experiment_tag(experiment_id, TAGS.EXPERIMENT_KIND, "custom_model_development")
    except Exception as err:
        if getattr(err, "error_code", "") in REFUSALS:
            raise
        if TAGS.EXPERIMENT_KIND not in client.get_experiment(experiment_id).tags:
            raise


def _process_gone(pid: int, started_ms: int) -> bool:
    """True when no process `pid` runs here, or it started after the run (the pid was reused)."""
    import psutil

    try:
        return psutil.Process(pid).create_time() * 1000 > started_ms + 2000
    except (psutil.NoSuchProcess, psutil.AccessDenied, ValueError):
        return True

