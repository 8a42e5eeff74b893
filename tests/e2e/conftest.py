"""A real offline sweep on the tiny model, run once per module through the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

SWEEP = ["-m", "quant=gptq,awq", "calib.n=8,16", "model=tiny", "eval=fixtures", "model.max_seq_length=64",
         "tracking.system_metrics_seconds=1", "device=cpu"]


@dataclass
class Sweep:
    root: Path
    proc: subprocess.CompletedProcess

    @property
    def uri(self) -> str:
        return f"sqlite:///{self.root}/mlruns/mlflow.db"

    def client(self):
        from mlflow import MlflowClient

        return MlflowClient(self.uri)

    def runs(self):
        """The jobs' runs by name (the sweep's parent run left out)."""
        client = self.client()
        experiment = client.get_experiment_by_name("qexp")
        return {r.info.run_name: r for r in client.search_runs([experiment.experiment_id])
                if r.data.tags.get("qexp.role") != "sweep"}

    def checkpoint(self, run) -> Path:
        """The run's checkpoint, downloaded from its MLflow logged model."""
        return download_model(self.uri, run.data.tags["qexp.model_id"], self.root / "dl")

    def artifact(self, run, path: str) -> Path:
        return Path(self.client().download_artifacts(run.info.run_id, path, str(self.root / "dl" / run.info.run_id)))

    def artifact_json(self, run, path: str):
        return json.loads(self.artifact(run, path).read_text())


def download_model(tracking_uri: str, model_id: str, dst: Path) -> Path:
    """A logged model's files, as MLflow users fetch them (`models:/<id>` resolves through the
    tracking URI that `mlflow.set_tracking_uri` sets, so the model's location is looked up here)."""
    from mlflow import MlflowClient
    from mlflow.artifacts import download_artifacts

    location = MlflowClient(tracking_uri).get_logged_model(model_id).artifact_location
    return Path(download_artifacts(artifact_uri=location, dst_path=str(dst / model_id), tracking_uri=tracking_uri))


def qexp_cli(*args: str, cwd: Path, cache_dir: Path, module: str = "qexp", timeout: int = 900):
    env = {**os.environ, "QEXP_CACHE_DIR": str(cache_dir), "HF_HUB_OFFLINE": "1",
           "HF_DATASETS_CACHE": str(cache_dir / "hf-datasets")}
    env.pop("MLFLOW_TRACKING_URI", None)
    return subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture(scope="session")
def sweep(tmp_path_factory, cache_dir) -> Sweep:
    root = tmp_path_factory.mktemp("sweep")
    proc = qexp_cli(*SWEEP, cwd=root, cache_dir=cache_dir)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return Sweep(root, proc)
