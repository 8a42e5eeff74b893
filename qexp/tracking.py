"""MLflow behind a few functions, and the naming contract every reader of the store relies on.

Tags `qexp.*` identify a run; metrics are `<task>/<metric>` (lm-eval's `acc,none` becomes
`arc_easy/acc`; a filter other than `none` is appended: `gsm8k/exact_match/strict-match`);
artifacts are `config.yaml`, `recipe.yaml`, `checkpoint/`, `lm_eval/results.json`,
`lm_eval/samples/<task>.jsonl`, `calibration/sample_ids.json`.
"""

from __future__ import annotations

import json
import os
import re
import socket
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Iterable
from urllib.parse import urlparse

from .errors import TrackingError, config_error

__all__ = [
    "TAGS",
    "check_uri",
    "default_tracking_uri",
    "connect",
    "ensure_experiment",
    "metric_name",
    "results_metrics",
    "find_runs",
    "start_run",
    "log_params",
    "log_metrics",
    "log_json",
    "log_text",
    "log_files",
    "read_jsonl",
    "end_run",
    "Heartbeat",
    "stale_runs",
    "reap_stale",
]


class TAGS:
    QUANT = "qexp.quant"  # none | gptq | awq
    CALIB_N = "qexp.calib_n"  # "0" for the baseline
    MODEL = "qexp.model"
    EVAL_DATA = "qexp.eval_data"  # hub | local | fixtures | mixed
    CONFIG_HASH = "qexp.config_hash"
    SWEEP_ID = "qexp.sweep_id"
    HOST = "qexp.host"
    PID = "qexp.pid"
    HEARTBEAT = "qexp.heartbeat"  # unix seconds, refreshed while the job runs
    KILLED_REASON = "qexp.killed_reason"


URI_SCHEMES = ("sqlite", "http", "https", "postgresql", "mysql", "mssql", "databricks")
_METRIC_UNSAFE = re.compile(r"[^/\w.\- :]")


def default_tracking_uri() -> str:
    """The store `python -m qexp` writes by default, unless MLFLOW_TRACKING_URI says otherwise."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path.cwd() / 'mlruns' / 'mlflow.db'}"


def check_uri(uri: Any) -> None:
    """Refuse tracking URIs that cannot work, before anything runs."""
    fix = ("Use sqlite:///<abs path>/mlflow.db (the default keeps it under ./mlruns), "
           "or an MLflow server, e.g. tracking.uri=http://127.0.0.1:5000.")
    if not isinstance(uri, str) or not uri:
        raise config_error("tracking.uri", uri, "Missing tracking URI", fix)
    scheme = urlparse(uri).scheme
    if scheme in ("", "file"):
        raise config_error("tracking.uri", uri, "MLflow's plain file store is in maintenance mode and "
                           "refuses to start without MLFLOW_ALLOW_FILE_STORE=true", fix)
    if scheme not in URI_SCHEMES:
        raise config_error("tracking.uri", uri, "Unknown tracking URI scheme", fix)
    if scheme == "sqlite":
        path = uri[len("sqlite:///"):]
        if not uri.startswith("sqlite:///") or not path:
            raise config_error("tracking.uri", uri, "A SQLite URI needs a file path", fix)
        try:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise config_error("tracking.uri", uri, f"Cannot create the store's folder ({err.strerror})",
                               "Choose a writable location.") from None


def connect(uri: str):
    """An MlflowClient that has answered once; TrackingError when the store is unusable."""
    from mlflow import MlflowClient

    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    client = MlflowClient(tracking_uri=uri)
    try:
        client.search_experiments(max_results=1)
    except Exception as err:
        raise TrackingError(
            f"Cannot use the MLflow store <tracking.uri={uri!r}>: {type(err).__name__}: "
            f"{str(err).splitlines()[0] if str(err) else ''}. Start the server, or fix tracking.uri."
        ) from None
    return client


def ensure_experiment(client, name: str) -> str:
    """The experiment's id, creating it (artifacts beside a SQLite store) when missing."""
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        uri = client.tracking_uri
        location = None
        if uri.startswith("sqlite:///"):
            location = (Path(uri[len("sqlite:///"):]).resolve().parent / "artifacts").as_uri()
        try:
            return client.create_experiment(name, artifact_location=location)
        except Exception:  # another job created it meanwhile
            experiment = client.get_experiment_by_name(name)
            if experiment is None:
                raise
    if experiment.lifecycle_stage == "deleted":
        raise config_error("tracking.experiment", name, "The experiment is deleted in this store",
                           "Restore it in the MLflow UI, or choose another tracking.experiment.")
    return experiment.experiment_id


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


def find_runs(client, experiment_id: str, tags: dict[str, str], status: str | None = "FINISHED") -> list:
    """Runs whose tags all match, newest first."""
    clauses = [f"tags.`{k}` = '{v}'" for k, v in tags.items()]
    if status:
        clauses.append(f"attributes.status = '{status}'")
    return client.search_runs([experiment_id], " and ".join(clauses), order_by=["attributes.start_time DESC"])


def start_run(client, experiment_id: str, name: str, tags: dict[str, str]) -> str:
    run = client.create_run(experiment_id, run_name=name, tags=tags)
    return run.info.run_id


def log_params(client, run_id: str, params: dict[str, str]) -> None:
    from mlflow.entities import Param

    items = [Param(k, v[:6000]) for k, v in sorted(params.items())]
    for i in range(0, len(items), 100):
        client.log_batch(run_id, params=items[i:i + 100])


def log_metrics(client, run_id: str, metrics: dict[str, float]) -> None:
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    items = [Metric(k, v, now, 0) for k, v in sorted(metrics.items())]
    for i in range(0, len(items), 500):
        client.log_batch(run_id, metrics=items[i:i + 500])


def log_text(client, run_id: str, text: str, artifact_file: str) -> None:
    client.log_text(run_id, text, artifact_file)


def log_json(client, run_id: str, obj: Any, artifact_file: str) -> None:
    client.log_text(run_id, json.dumps(obj, indent=2, sort_keys=True), artifact_file)


def log_files(client, run_id: str, files: dict[str, Iterable[dict]], artifact_dir: str) -> None:
    """Write `{name: records}` as JSON Lines files and log them under `artifact_dir`."""
    with tempfile.TemporaryDirectory() as tmp:
        for name, records in files.items():
            with open(Path(tmp) / name, "w") as fh:
                for record in records:
                    fh.write(json.dumps(record) + "\n")
        client.log_artifacts(run_id, tmp, artifact_dir)


def read_jsonl(path: Path) -> list[dict]:
    """JSON Lines split on newlines only (`str.splitlines` would also split on U+2028 in the text)."""
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").split("\n") if line.strip()]


def end_run(client, run_id: str, status: str) -> None:
    client.set_terminated(run_id, status)


class Heartbeat:
    """Refresh a run's `qexp.heartbeat` tag from a daemon thread while the job works.

    SIGKILL and power loss cannot be caught; a heartbeat that stops is how a later
    command tells a dead run from a slow one.
    """

    def __init__(self, client, run_id: str, interval: float):
        self.client, self.run_id, self.interval = client, run_id, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="qexp-heartbeat", daemon=True)

    def _beat(self) -> None:
        while True:
            try:
                self.client.set_tag(self.run_id, TAGS.HEARTBEAT, f"{time.time():.0f}")
            except Exception:  # a busy store must not kill the job; the next beat retries
                pass
            if self._stop.wait(self.interval):
                return

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


def _process_gone(pid: int, started_ms: int) -> bool:
    """True when no process `pid` runs here, or it started after the run (the pid was reused)."""
    import psutil

    try:
        return psutil.Process(pid).create_time() * 1000 > started_ms + 2000
    except (psutil.NoSuchProcess, psutil.AccessDenied, ValueError):
        return True


def stale_runs(client, experiment_id: str, stale_after: float, tags: dict[str, str] | None = None) -> list:
    """RUNNING runs whose job is dead: its process here is gone, or its heartbeat is too old."""
    found = []
    host = socket.gethostname()
    for run in find_runs(client, experiment_id, tags or {}, status="RUNNING"):
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


def reap_stale(client, experiment_id: str, stale_after: float, tags: dict[str, str] | None = None) -> list:
    """Mark dead RUNNING runs KILLED (with the reason as a tag); returns (run, reason) pairs."""
    found = stale_runs(client, experiment_id, stale_after, tags)
    for run, reason in found:
        client.set_tag(run.info.run_id, TAGS.KILLED_REASON, reason)
        client.set_terminated(run.info.run_id, "KILLED")
    return found
