"""A shared store that goes away while a job runs: the MLflow server restarting, or its PostgreSQL.
Within tracking.outage_seconds the job waits and its run ends FINISHED with everything logged once;
past it, the job stops with one clear error, and the rerun logs the kept work without quantizing or
evaluating again."""

from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from mlflow import MlflowClient

from tests.e2e.conftest import qexp_cli, qexp_popen
from tests.e2e.servers import Postgres, start_mlflow_server, stop_mlflow_server

pytestmark = pytest.mark.e2e

JOB = ["quant=rtn", "model=tiny", "eval=fixtures", "eval.tasks=[arc_easy,hellaswag]", "eval.limit=10",
       "model.max_seq_length=64", "tracking=server", "tracking.experiment=outage", "tracking.heartbeat_seconds=2",
       "tracking.system_metrics_seconds=null", "device=cpu"]
AWAY_SECONDS = 8


@dataclass
class Store:
    database: Postgres
    uri: str
    server: subprocess.Popen
    artifacts: Path

    def stop_server(self) -> None:
        stop_mlflow_server(self.server)

    def start_server(self) -> None:
        port = int(self.uri.rsplit(":", 1)[1])
        _, self.server, _ = start_mlflow_server(self.database.uri, self.artifacts, port=port)

    def runs(self, name: str) -> list:
        client = MlflowClient(self.uri)
        experiment = client.get_experiment_by_name("outage")
        return [r for r in client.search_runs([experiment.experiment_id]) if r.info.run_name == name]


@pytest.fixture
def store(tmp_path):
    database = Postgres()
    artifacts = tmp_path / "server" / "artifacts"
    uri, server, _ = start_mlflow_server(database.uri, artifacts)
    found = Store(database, uri, server, artifacts)
    try:
        yield found
    finally:
        stop_mlflow_server(found.server)
        database.destroy()


def _experiment_id(client: MlflowClient) -> str:
    return client.get_experiment_by_name("outage").experiment_id


def _read_until(proc: subprocess.Popen, marker: str, seen: list[str]) -> None:
    """Read the job's output into `seen` until a line holds `marker`."""
    deadline = time.time() + 600
    for line in proc.stdout:
        seen.append(line)
        if marker in line:
            return
        assert time.time() < deadline, f"no {marker!r} in time"
    pytest.fail(f"the job ended before {marker!r}: {''.join(seen)[-3000:]}")


def test_a_server_and_then_its_database_restarting_mid_job_lose_nothing(store, tmp_path, cache_dir):
    sweep_of_one = ["-m", *JOB, f"tracking.uri={store.uri}"]
    proc, seen = qexp_popen(*sweep_of_one, cwd=tmp_path, cache_dir=cache_dir), []
    _read_until(proc, "baseline: evaluating", seen)
    store.stop_server()  # the baseline evaluates and logs with no server
    time.sleep(AWAY_SECONDS)
    store.start_server()
    _read_until(proc, "rtn: evaluating", seen)
    store.database.stop()  # the quantized run evaluates and logs with the server up, its database down
    time.sleep(AWAY_SECONDS)
    store.database.start()
    seen.append(proc.communicate(timeout=600)[0])
    output = "".join(seen)
    assert proc.returncode == 0, output[-3000:]
    outages = output.count("is not answering")  # a restarting database may blink twice
    assert outages >= 2 and output.count("answers again") == outages, output[-3000:]

    client = MlflowClient(store.uri)
    for name in ("baseline", "rtn"):
        (run,) = store.runs(name)
        assert run.info.status == "FINISHED"
        for key in ("arc_easy/acc", "hellaswag/acc", "perf/eval_seconds"):
            assert len(client.get_metric_history(run.info.run_id, key)) == 1, (name, key)  # logged once
        assert {f.path for f in client.list_artifacts(run.info.run_id, "lm_eval")} == {
            "lm_eval/results.json", "lm_eval/samples"}
    (parent,) = [r for r in client.search_runs([_experiment_id(client)]) if r.data.tags.get("qexp.role") == "sweep"]
    assert parent.info.status == "FINISHED"  # the sweep's parent run outlived both outages, with its report
    assert "report/report.json" in {f.path for f in client.list_artifacts(parent.info.run_id, "report")}
    (rtn,) = store.runs("rtn")
    models = client.search_logged_models(experiment_ids=[rtn.info.experiment_id])
    assert [m.model_id for m in models if m.source_run_id == rtn.info.run_id] == [rtn.data.tags["qexp.model_id"]]


def test_a_store_away_past_the_limit_stops_the_job_and_the_rerun_logs_its_kept_work(store, tmp_path, cache_dir):
    job = [*JOB, f"tracking.uri={store.uri}", "tracking.outage_seconds=5"]
    first = qexp_cli(*job, cwd=tmp_path, cache_dir=cache_dir)  # the baseline, and rtn's checkpoint
    assert first.returncode == 0, first.stderr[-3000:]
    client = MlflowClient(store.uri)
    client.delete_run(store.runs("rtn")[0].info.run_id)  # so rtn runs again, its checkpoint on disk

    proc, seen = qexp_popen(*job, cwd=tmp_path, cache_dir=cache_dir), []
    _read_until(proc, "rtn: evaluating", seen)
    store.stop_server()
    seen.append(proc.communicate(timeout=600)[0])
    output = "".join(seen)
    assert proc.returncode == 1, output[-3000:]
    (error,) = [line for line in output.splitlines() if "has not answered for" in line]
    assert f"<tracking.uri='{store.uri}'>" in error and "<tracking.outage_seconds=5>" in error
    assert "run the same command again" in error and "Traceback" not in output
    kept = list((cache_dir / "lm_eval_responses").glob("*.evaluation.json"))
    assert len(kept) == 1  # rtn's; the baseline's was removed once logged

    store.start_server()
    rerun = qexp_cli(*job, cwd=tmp_path, cache_dir=cache_dir)
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
    log = rerun.stdout + rerun.stderr
    assert "reusing the complete checkpoint" in log and "using the evaluation an earlier attempt finished" in log
    assert "quantizing" not in log and "rtn: evaluating" not in log
    runs = [r for r in store.runs("rtn") if r.info.lifecycle_stage == "active"]
    assert sorted(r.info.status for r in runs) == ["FINISHED", "KILLED"]  # the stopped attempt, reaped
    (finished,) = [r for r in runs if r.info.status == "FINISHED"]
    assert finished.data.metrics["arc_easy/n_samples"] == 10
    assert not kept[0].exists()
