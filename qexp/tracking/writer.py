"""One run being written: params, metrics, artifacts, datasets, the logged model, the heartbeat, its end."""

from __future__ import annotations

import contextlib
import json
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

from ..contract import TAGS
from ..files import write_jsonl
from .patience import retry

END_ATTEMPTS, END_RETRY_SECONDS = 3, 1.0  # ending a run: see Run.end


def flatten(node: Any, prefix: str = "") -> dict[str, str]:
    """`{"a": {"b": 1}}` -> `{"a.b": "1"}`, lists as JSON: the shape MLflow params take."""
    if isinstance(node, dict):
        out: dict[str, str] = {}
        for key, value in node.items():
            out.update(flatten(value, f"{prefix}{key}."))
        return out
    value = json.dumps(node) if isinstance(node, list) else str(node)
    return {prefix.rstrip("."): value}


@dataclass
class Run:
    """A run being written. It ends with `end(status)`: FINISHED, FAILED or KILLED."""

    client: Any  # the store's MlflowClient, behind `patience.Patient`
    experiment_id: str
    uri: str
    run_id: str

    @property
    def _client(self):
        return self.client

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

    def log_file_as_now(self, path: Path, artifact_dir: str) -> None:
        """A file that may still grow (a log being written) as it is now, from a copy that holds still.

        Uploaded in place, a file that grows during the upload sends more bytes than the length it
        declared: the server reads the rest as a malformed next request and answers it 400, and the
        next upload on that connection can read that answer as its own."""
        with tempfile.TemporaryDirectory() as tmp:
            copy = Path(tmp) / Path(path).name
            shutil.copyfile(path, copy)
            self.log_path(copy, artifact_dir)

    def log_dataset(self, name: str, source: str, digest: str, context: str, profile: dict | None = None) -> None:
        """An MLflow dataset input (the run's Dataset column): runs that share `digest` share the dataset."""
        from mlflow.entities import Dataset, DatasetInput, InputTag

        dataset = Dataset(name=name, digest=digest, source_type="local" if source.startswith("/") else "hub",
                          source=json.dumps({"uri": source}), profile=json.dumps(profile or {}))
        inputs = [DatasetInput(dataset, [InputTag("mlflow.data.context", context)])]
        # MLflow looks the dataset up, then inserts it: jobs logging the same new dataset together all
        # insert, and all but the first fail on its unique key. Once it is there, logging reuses it.
        retry(f"Logging dataset {name!r} to run {self.run_id} (another job may have just added it)",
               lambda: self._client.log_inputs(self.run_id, inputs), attempts=2, pause=0.0)

    def log_model(self, folder: Path, name: str, tags: dict[str, str]) -> str:
        """`folder` (a checkpoint) as an MLflow logged model whose source is this run; returns its id."""
        from mlflow.entities import LoggedModelOutput

        model = self._client.create_logged_model(self.experiment_id, name=name, source_run_id=self.run_id,
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
        retry(f"Ending MLflow run {self.run_id}", lambda: self._client.set_terminated(self.run_id, status),
               attempts=END_ATTEMPTS, pause=END_RETRY_SECONDS)

    @contextlib.contextmanager
    def monitor(self, heartbeat_seconds: float, system_metrics_seconds: float | None) -> Iterator[None]:
        """While the block runs: the heartbeat, and MLflow's system metrics (CPU, memory, GPU) every
        `system_metrics_seconds` (None: not recorded)."""
        monitor = None
        if system_metrics_seconds:
            from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

            monitor = SystemMetricsMonitor(self.run_id, sampling_interval=system_metrics_seconds,
                                           tracking_uri=self.uri)
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
