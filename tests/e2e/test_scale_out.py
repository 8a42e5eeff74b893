"""A sweep's jobs in parallel (joblib) and into one shared tracking server on PostgreSQL: nothing
lost, one baseline, the same results as one job after another."""

from __future__ import annotations

import subprocess
import time

import pytest
from mlflow import MlflowClient

from qexp.tracking import Store
from tests.e2e.conftest import Sweep, download_model, qexp_cli, qexp_popen, run_sweep
from tests.e2e.servers import get, start_mlflow_server, start_postgres, stop_mlflow_server, start_slurm

pytestmark = pytest.mark.e2e

SAME = ("perf/", "system/")  # what legitimately differs between two executions of one configuration
# A sweep small enough to run four ways (basic, joblib, tracking server, SLURM), each quantizing.
SCALE = ["-m", "quant=gptq,awq", "calib.n=8", "model=tiny", "eval=fixtures", "eval.tasks=[arc_easy]",
         "model.max_seq_length=64", "device=cpu"]
NAMES = {"baseline": 1, "gptq-8": 1, "awq-8": 1}


@pytest.fixture(scope="module")
def serial(tmp_path_factory, cache_dir) -> Sweep:
    """The sweep with the basic launcher, one job after another: what every other launcher must match."""
    return run_sweep(SCALE, tmp_path_factory.mktemp("serial"), cache_dir)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    backend, stop_postgres = start_postgres()
    artifacts = tmp_path_factory.mktemp("server") / "artifacts"
    base, proc, _ = start_mlflow_server(backend, artifacts)
    try:
        yield base
    finally:
        stop_mlflow_server(proc)
        stop_postgres()


def _jobs(client: MlflowClient) -> dict[str, list]:
    experiment = client.get_experiment_by_name("qexp")
    runs = client.search_runs([experiment.experiment_id])
    out: dict[str, list] = {}
    for run in runs:
        if run.data.tags.get("qexp.role") != "sweep":
            out.setdefault(run.info.run_name, []).append(run)
    return out


def _quantized_here(runs) -> None:
    """Every quantized run made its checkpoint in this test, none reused another sweep's."""
    for run in runs:
        if run.data.tags["qexp.quant"] != "none":
            assert "qexp.checkpoint_reused" not in run.data.tags, run.info.run_name
            assert run.data.metrics["perf/quant_seconds"] > 0, run.info.run_name


def _scores(run) -> dict[str, float]:
    return {k: v for k, v in run.data.metrics.items() if not k.startswith(SAME)}


def _same_as_serial(jobs: dict[str, list], serial: Sweep) -> None:
    assert {name: len(runs) for name, runs in jobs.items()} == NAMES
    assert {run.info.status for runs in jobs.values() for run in runs} == {"FINISHED"}
    _quantized_here(run for runs in jobs.values() for run in runs)
    reference = serial.runs()
    for name, (run,) in jobs.items():
        assert run.data.tags["qexp.config_hash"] == reference[name].data.tags["qexp.config_hash"]
        assert _scores(run) == pytest.approx(_scores(reference[name]), abs=1e-9)


def test_two_joblib_workers_into_a_fresh_sqlite_store_lose_nothing(serial, tmp_path, cache_dir):
    proc = qexp_cli(*SCALE, "launcher=local", "hydra.launcher.n_jobs=2", cwd=tmp_path, cache_dir=cache_dir)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    _same_as_serial(_jobs(MlflowClient(f"sqlite:///{tmp_path}/mlruns/mlflow.db")), serial)
    assert "qexp sweep: 2 jobs, 2 ok, 0 failed" in proc.stdout


def test_a_sweep_into_the_tracking_server_reads_back_over_rest(server, serial, tmp_path, cache_dir):
    proc = qexp_cli(*SCALE, "tracking=server", f"tracking.uri={server}", cwd=tmp_path, cache_dir=cache_dir)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert not (tmp_path / "mlruns").exists()  # nothing written locally: the server owns the store
    experiment = get(f"{server}/api/2.0/mlflow/experiments/get-by-name?experiment_name=qexp")["experiment"]
    runs = get(f"{server}/api/2.0/mlflow/runs/search", {"experiment_ids": [experiment["experiment_id"]]})["runs"]
    by_name = {r["info"]["run_name"]: r for r in runs}
    assert set(NAMES) <= set(by_name)
    assert all(r["info"]["status"] == "FINISHED" for r in runs)
    _same_as_serial(_jobs(MlflowClient(server)), serial)  # the same runs, read through MLflow's client too
    run_id = by_name["awq-8"]["info"]["run_id"]
    metrics = {m["key"] for m in by_name["awq-8"]["data"]["metrics"]}
    assert {"arc_easy/acc", "perf/checkpoint_mb"} <= metrics
    samples = get(f"{server}/get-artifact?path=lm_eval/samples/arc_easy.jsonl&run_uuid={run_id}").decode()
    assert len(samples.splitlines()) == 10 and '"doc_hash"' in samples
    tags = {t["key"]: t["value"] for t in by_name["awq-8"]["data"]["tags"]}
    checkpoint = download_model(server, tags["qexp.model_id"], tmp_path / "dl")
    assert (checkpoint / "config.json").is_file() and (checkpoint / "model.safetensors").is_file()


def test_jobs_racing_through_the_server_evaluate_one_baseline(server, tmp_path, cache_dir):
    common = ["model=tiny", "eval=fixtures", "eval.tasks=[arc_easy]", "model.max_seq_length=64",
              "tracking=server", f"tracking.uri={server}", "tracking.experiment=race"]
    procs = [qexp_popen(*common, f"quant={method}", f"calib.n={n}", cwd=tmp_path, cache_dir=cache_dir)
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
    # they overlapped: the two that did not evaluate it found it under way and waited for it
    assert sum("waiting for the baseline another job is evaluating" in o for o in outputs) == 2
    _quantized_here(runs)


SLURM = ["launcher=slurm", "hydra.launcher.partition=debug", "hydra.launcher.gpus_per_node=null",
         "hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=4", "hydra.launcher.array_parallelism=2"]


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    stop = start_slurm(tmp_path_factory.mktemp("slurm"))
    try:
        yield
    finally:
        stop()


@pytest.mark.slurm
def test_a_sweep_on_slurm_gives_the_same_runs(slurm, serial, tmp_path, cache_dir):
    proc = qexp_cli(*SCALE, *SLURM, cwd=tmp_path, cache_dir=cache_dir)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    _same_as_serial(_jobs(MlflowClient(f"sqlite:///{tmp_path}/mlruns/mlflow.db")), serial)
    assert list((tmp_path / "multirun").rglob(".submitit"))  # the jobs ran as SLURM jobs


@pytest.mark.slurm
def test_scancel_ends_the_run_killed_and_resubmitting_finishes_it(slurm, tmp_path, cache_dir):
    job = ["-m", "quant=awq", "calib.n=32", "model=tiny", "eval=fixtures", "model.max_seq_length=64",
           "eval.tasks=[arc_easy]", *SLURM]
    uri = f"sqlite:///{tmp_path}/mlruns/mlflow.db"
    Store.open(uri, "qexp")  # the schema exists before this test polls the store the job writes
    sweep = qexp_popen(*job, cwd=tmp_path, cache_dir=cache_dir)
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
