"""A sweep's jobs in parallel (joblib) and into one shared tracking server on PostgreSQL: nothing
lost, one baseline, the same results as one job after another."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
from mlflow import MlflowClient

from qexp.tracking import Store
from tests.e2e.conftest import SWEEP, download_model, qexp_cli
from tests.e2e.servers import get, start_mlflow_server, start_postgres, start_slurm

pytestmark = pytest.mark.e2e

SAME = ("perf/", "system/")  # what legitimately differs between two executions of one configuration


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    backend, stop_postgres = start_postgres()
    artifacts = tmp_path_factory.mktemp("server") / "artifacts"
    base, proc, _ = start_mlflow_server(backend, artifacts)
    try:
        yield base
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        stop_postgres()


def _jobs(client: MlflowClient) -> dict[str, list]:
    experiment = client.get_experiment_by_name("qexp")
    runs = client.search_runs([experiment.experiment_id])
    out: dict[str, list] = {}
    for run in runs:
        if run.data.tags.get("qexp.role") != "sweep":
            out.setdefault(run.info.run_name, []).append(run)
    return out


def _scores(run) -> dict[str, float]:
    return {k: v for k, v in run.data.metrics.items() if not k.startswith(SAME)}


def test_two_joblib_workers_into_a_fresh_sqlite_store_lose_nothing(sweep, tmp_path, cache_dir):
    proc = qexp_cli(*SWEEP, "launcher=local", "hydra.launcher.n_jobs=2", cwd=tmp_path, cache_dir=cache_dir)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    jobs = _jobs(MlflowClient(f"sqlite:///{tmp_path}/mlruns/mlflow.db"))
    assert {name: len(runs) for name, runs in jobs.items()} == {
        "baseline": 1, "gptq-8": 1, "gptq-16": 1, "awq-8": 1, "awq-16": 1}
    assert {run.info.status for runs in jobs.values() for run in runs} == {"FINISHED"}
    serial = sweep.runs()  # the same sweep with the basic launcher
    for name, (run,) in jobs.items():
        assert run.data.tags["qexp.config_hash"] == serial[name].data.tags["qexp.config_hash"]
        assert _scores(run) == pytest.approx(_scores(serial[name]), abs=1e-9)
    assert "qexp sweep: 4 jobs, 4 ok, 0 failed" in proc.stdout


def test_a_sweep_into_the_tracking_server_reads_back_over_rest(server, tmp_path, cache_dir):
    proc = qexp_cli(*SWEEP, "tracking=server", f"tracking.uri={server}", cwd=tmp_path, cache_dir=cache_dir)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert not (tmp_path / "mlruns").exists()  # nothing written locally: the server owns the store
    experiment = get(f"{server}/api/2.0/mlflow/experiments/get-by-name?experiment_name=qexp")["experiment"]
    runs = get(f"{server}/api/2.0/mlflow/runs/search", {"experiment_ids": [experiment["experiment_id"]]})["runs"]
    by_name = {r["info"]["run_name"]: r for r in runs}
    assert {"baseline", "gptq-8", "gptq-16", "awq-8", "awq-16"} <= set(by_name)
    assert all(r["info"]["status"] == "FINISHED" for r in runs)
    run_id = by_name["awq-16"]["info"]["run_id"]
    metrics = {m["key"] for m in by_name["awq-16"]["data"]["metrics"]}
    assert {"arc_easy/acc", "mmlu/acc", "mmlu_anatomy/acc"} <= metrics
    samples = get(f"{server}/get-artifact?path=lm_eval/samples/arc_easy.jsonl&run_uuid={run_id}").decode()
    assert len(samples.splitlines()) == 10 and '"doc_hash"' in samples
    tags = {t["key"]: t["value"] for t in by_name["awq-16"]["data"]["tags"]}
    checkpoint = download_model(server, tags["qexp.model_id"], tmp_path / "dl")
    assert (checkpoint / "config.json").is_file() and (checkpoint / "model.safetensors").is_file()


def test_jobs_racing_through_the_server_evaluate_one_baseline(server, tmp_path, cache_dir):
    env = {**os.environ, "QEXP_CACHE_DIR": str(cache_dir), "HF_HUB_OFFLINE": "1",
           "HF_DATASETS_CACHE": str(cache_dir / "hf-datasets")}
    common = ["model=tiny", "eval=fixtures", "eval.tasks=[arc_easy]", "model.max_seq_length=64",
              "tracking=server", f"tracking.uri={server}", "tracking.experiment=race"]
    procs = [subprocess.Popen([sys.executable, "-m", "qexp", *common, f"quant={method}", f"calib.n={n}"],
                              cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for method, n in (("gptq", 8), ("awq", 8), ("gptq", 16))]
    outputs = [proc.communicate(timeout=900)[0] for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0, 0], "\n".join(o[-2000:] for o in outputs)
    client = MlflowClient(server)
    experiment = client.get_experiment_by_name("race")
    runs = client.search_runs([experiment.experiment_id])
    baselines = [r for r in runs if r.data.tags["qexp.quant"] == "none"]
    assert [b.info.status for b in baselines] == ["FINISHED"]
    assert sorted(r.info.run_name for r in runs if r.data.tags["qexp.quant"] != "none") == ["awq-8", "gptq-16", "gptq-8"]
    assert sum("evaluating it first" in o for o in outputs) == 1


SLURM = ["launcher=slurm", "hydra.launcher.partition=debug", "hydra.launcher.gpus_per_node=null",
         "hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=4", "hydra.launcher.array_parallelism=2"]


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    stop = start_slurm(tmp_path_factory.mktemp("slurm"))
    try:
        yield
    finally:
        stop()


def test_a_sweep_on_slurm_gives_the_same_runs(slurm, sweep, tmp_path, cache_dir):
    proc = qexp_cli(*SWEEP, *SLURM, cwd=tmp_path, cache_dir=cache_dir)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    jobs = _jobs(MlflowClient(f"sqlite:///{tmp_path}/mlruns/mlflow.db"))
    assert {name: len(runs) for name, runs in jobs.items()} == {
        "baseline": 1, "gptq-8": 1, "gptq-16": 1, "awq-8": 1, "awq-16": 1}
    serial = sweep.runs()
    for name, (run,) in jobs.items():
        assert run.info.status == "FINISHED"
        assert run.data.tags["qexp.config_hash"] == serial[name].data.tags["qexp.config_hash"]
        assert _scores(run) == pytest.approx(_scores(serial[name]), abs=1e-9)
    assert list((tmp_path / "multirun").rglob(".submitit"))  # the jobs ran as SLURM jobs


def test_scancel_ends_the_run_killed_and_resubmitting_finishes_it(slurm, tmp_path, cache_dir):
    job = ["-m", "quant=awq", "calib.n=32", "model=tiny", "eval=fixtures", "model.max_seq_length=64",
           "eval.tasks=[arc_easy,hellaswag,mmlu]", *SLURM]
    env = {**os.environ, "QEXP_CACHE_DIR": str(cache_dir), "HF_HUB_OFFLINE": "1",
           "HF_DATASETS_CACHE": str(cache_dir / "hf-datasets")}
    env.pop("MLFLOW_TRACKING_URI", None)
    uri = f"sqlite:///{tmp_path}/mlruns/mlflow.db"
    Store.open(uri, "qexp")  # the schema exists before this test polls the store the job writes
    sweep = subprocess.Popen([sys.executable, "-m", "qexp", *job], cwd=tmp_path, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 600
    while time.time() < deadline:  # cancel once the quantized run is under way
        if any(r.info.status == "RUNNING" for r in _jobs(MlflowClient(uri)).get("awq-32", [])):
            break
        time.sleep(0.5)
    else:
        sweep.kill()
        pytest.fail("the SLURM job never started the awq-32 run: " + sweep.communicate()[0][-3000:])
    jobs = subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True).stdout.split()
    subprocess.run(["scancel", *jobs], check=True)
    output = sweep.communicate(timeout=600)[0]
    assert sweep.returncode != 0, output[-3000:]
    (killed,) = _jobs(MlflowClient(uri))["awq-32"]
    assert killed.info.status == "KILLED" and "signal 15" in killed.data.tags["qexp.killed_reason"]

    again = qexp_cli(*job, cwd=tmp_path, cache_dir=cache_dir)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert sorted(r.info.status for r in _jobs(MlflowClient(uri))["awq-32"]) == ["FINISHED", "KILLED"]
