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


def _command(args: tuple[str, ...], cwd: Path, cache_dir: Path, module: str,
             env: dict[str, str | None] | None) -> tuple[list[str], dict[str, str]]:
    """The command line and environment of `python -m <module> <args>` in `cwd`, `env` added (None:
    removed). Jobs keep their checkpoints under `cwd`: the cache is shared by the session (the tiny
    model is built once), a checkpoint only by commands in one folder."""
    if module == "qexp" and not any(a.startswith("paths.checkpoint_dir=") for a in args):
        args = (*args, f"paths.checkpoint_dir={cwd}/checkpoints")
    env = {**os.environ, "QEXP_CACHE_DIR": str(cache_dir), "HF_HUB_OFFLINE": "1",
           "HF_DATASETS_CACHE": str(cache_dir / "hf-datasets"), "MLFLOW_TRACKING_URI": None, **(env or {})}
    return [sys.executable, "-m", module, *args], {key: value for key, value in env.items() if value is not None}


def qexp_cli(*args: str, cwd: Path, cache_dir: Path, module: str = "qexp", timeout: int = 900,
             env: dict[str, str | None] | None = None):
    """`python -m <module> <args>` in `cwd`, run to its end (see `_command`)."""
    command, env = _command(args, cwd, cache_dir, module, env)
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def qexp_popen(*args: str, cwd: Path, cache_dir: Path) -> subprocess.Popen:
    """`python -m qexp <args>` started in `cwd`, its output (stdout and stderr) read line by line as it comes."""
    command, env = _command(args, cwd, cache_dir, "qexp", {"PYTHONUNBUFFERED": "1"})
    return subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def run_sweep(args: list[str], root: Path, cache_dir: Path) -> Sweep:
    """`python -m qexp <args>` in `root`, which must succeed."""
    proc = qexp_cli(*args, cwd=root, cache_dir=cache_dir)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return Sweep(root, proc)


def assert_second_pass_redoes_nothing(sweep: Sweep, args: list[str], cache_dir: Path, jobs: int) -> None:
    """The same command again: it says every job is finished and points at the report, starts no job
    and creates no run (not even a parent run with the same report)."""
    client = sweep.client()
    experiment = client.get_experiment_by_name("qexp").experiment_id
    before = {r.info.run_id for r in client.search_runs([experiment])}
    parents = {r.info.run_id for r in client.search_runs([experiment], "tags.`qexp.role` = 'sweep'")}
    folders = set(sweep.root.glob("multirun/*/*"))
    proc = qexp_cli(*args, cwd=sweep.root, cache_dir=cache_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert {r.info.run_id for r in client.search_runs([experiment])} == before
    assert f"qexp sweep: nothing to do: all {jobs} jobs have a finished run with their config hash" in proc.stdout
    assert sum(int(line.split("(")[1].split()[0]) if line.endswith(" jobs)") else 1
               for line in proc.stdout.splitlines() if "  run " in line) == jobs
    parent = proc.stdout.split("(the sweep's report is on parent run ", 1)[1].split(")", 1)[0]
    assert parent in parents
    assert set(sweep.root.glob("multirun/*/*")) == folders  # no job folder: no job started
    log = proc.stdout + proc.stderr
    assert "quantizing" not in log and "evaluating" not in log  # the cost is bookkeeping only


@pytest.fixture(scope="session")
def sweep(tmp_path_factory, cache_dir) -> Sweep:
    return run_sweep(SWEEP, tmp_path_factory.mktemp("sweep"), cache_dir)
