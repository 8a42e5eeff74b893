"""The manual's UI command (docs/running.md), started as written, serves the sweep's runs over its REST API."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.e2e.servers import free_port, get

pytestmark = pytest.mark.e2e

MANUAL = Path(__file__).resolve().parents[2] / "docs" / "running.md"


def _ui_command() -> list[str]:
    line = next(line for line in MANUAL.read_text().splitlines() if line.strip().startswith("mlflow ui "))
    return line.split("#")[0].split()


@pytest.fixture
def server(sweep):
    port = free_port()
    command = _ui_command()
    exe = Path(sys.executable).with_name("mlflow")
    command[0] = str(exe) if exe.exists() else shutil.which("mlflow")
    proc = subprocess.Popen([*command, "--host", "127.0.0.1", "--port", str(port)], cwd=sweep.root,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=os.environ.copy())
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180  # seconds on an idle machine; longer when the cores are busy
        while True:
            try:
                get(f"{base}/health")
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"mlflow ui did not answer (exit status {proc.poll()})")
                time.sleep(0.5)
        yield base
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _search_all(server: str) -> tuple[dict, list[dict]]:
    experiment = get(f"{server}/api/2.0/mlflow/experiments/get-by-name?experiment_name=qexp")["experiment"]
    return experiment, get(f"{server}/api/2.0/mlflow/runs/search", {"experiment_ids": [experiment["experiment_id"]]})["runs"]


def _search(server: str) -> tuple[dict, dict[str, dict]]:
    experiment, runs = _search_all(server)
    return experiment, {r["info"]["run_name"]: r for r in runs}


def _tags(run: dict) -> dict[str, str]:
    return {t["key"]: t["value"] for t in run["data"].get("tags", [])}


def test_ui_serves_the_sweep_as_one_parent_with_its_report(server, sweep):
    experiment, by_name = _search(server)
    assert {t["key"]: t["value"] for t in experiment["tags"]}["mlflow.experimentKind"] == "custom_model_development"
    # the fixture's sweep (running it again in the same folder adds no parent: nothing to do)
    sweep_id = _tags(by_name["baseline"])["qexp.sweep_id"]
    parents = [r for r in _search_all(server)[1] if _tags(r).get("qexp.role") == "sweep"
               and _tags(r).get("qexp.sweep_id") == sweep_id]
    assert len(parents) == 1 and parents[0]["info"]["status"] == "FINISHED"
    parent = parents[0]
    assert parent["info"]["run_name"] == "tiny-qwen3 · gptq,awq × 8,16"
    children = {name for name, r in by_name.items() if _tags(r).get("mlflow.parentRunId") == parent["info"]["run_id"]}
    assert children == {"baseline", "gptq-8", "gptq-16", "awq-8", "awq-16"}
    listing = get(f"{server}/api/2.0/mlflow/artifacts/list?run_id={parent['info']['run_id']}&path=report")
    assert {"report/report.md", "report/report.json", "report/members.json"} <= {f["path"] for f in listing["files"]}
    plots = get(f"{server}/api/2.0/mlflow/artifacts/list?run_id={parent['info']['run_id']}&path=report/plots")
    assert "report/plots/accuracy_vs_size.png" in {f["path"] for f in plots["files"]}
    report = json.loads(get(f"{server}/get-artifact?path=report/report.json&run_uuid={parent['info']['run_id']}"))
    assert {r["label"] for r in report["runs"]} == {"Baseline", "GPTQ-8", "GPTQ-16", "AWQ-8", "AWQ-16"}
    assert {m["key"] for m in parent["data"]["metrics"]} >= {"average/Baseline", "average/AWQ-16", "recovery/GPTQ-8"}
    ui = f"http://127.0.0.1:5000/#/experiments/{experiment['experiment_id']}?workflowType=machine_learning"
    assert ui in sweep.proc.stdout


def test_runs_carry_source_datasets_system_metrics_and_scores(server):
    _, by_name = _search(server)
    for name in ("baseline", "gptq-8", "awq-16"):
        tags = _tags(by_name[name])
        assert tags["mlflow.source.name"] == "python -m qexp" and tags["qexp.version"]
        assert "mlflow.source.git.commit" in tags  # the tests run from a git checkout
        metrics = {m["key"] for m in by_name[name]["data"]["metrics"]}
        assert any(m.startswith("system/cpu_utilization") for m in metrics)
        assert {"arc_easy/acc", "mmlu/acc", "mmlu_stem/acc", "mmlu_anatomy/acc"} <= metrics

    def inputs(name: str) -> dict[str, list[dict]]:
        out: dict[str, list[dict]] = {}
        for item in by_name[name]["inputs"]["dataset_inputs"]:
            context = {t["key"]: t["value"] for t in item["tags"]}["mlflow.data.context"]
            out.setdefault(context, []).append(item["dataset"])
        return out

    for n in (8, 16):
        gptq, awq = inputs(f"gptq-{n}")["calibration"], inputs(f"awq-{n}")["calibration"]
        assert len(gptq) == 1 and gptq[0]["name"] == "ShareGPT V3" and gptq[0]["digest"] == awq[0]["digest"]
        assert json.loads(gptq[0]["profile"])["num_rows"] == n
    assert inputs("gptq-8")["calibration"][0]["digest"] != inputs("gptq-16")["calibration"][0]["digest"]
    evaluation = {d["name"] for d in inputs("baseline")["evaluation"]}
    assert "calibration" not in inputs("baseline")
    assert "cais/mmlu (qexp fixtures, not the real benchmark)" in evaluation
    assert any(name.startswith("ShareGPT V3 held-out") for name in evaluation)


def test_each_checkpoint_is_a_logged_model_that_loads_and_generates(server, sweep, tmp_path):
    import mlflow
    import torch
    from mlflow import MlflowClient
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _, by_name = _search(server)
    client = MlflowClient(server)
    for name in ("gptq-16", "awq-16"):
        model_id = _tags(by_name[name])["qexp.model_id"]
        model = client.get_logged_model(model_id)
        assert model.source_run_id == by_name[name]["info"]["run_id"] and str(model.status) in ("READY", "LoggedModelStatus.READY")
        mlflow.set_tracking_uri(server)  # how an MLflow user resolves models:/<id>
        folder = Path(mlflow.artifacts.download_artifacts(f"models:/{model_id}", dst_path=str(tmp_path / name)))
        config = json.loads((folder / "config.json").read_text())
        assert config["quantization_config"]["quant_method"] == "compressed-tensors"
        tokenizer = AutoTokenizer.from_pretrained(folder)
        loaded = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
        prompt = tokenizer("hello", return_tensors="pt")
        output = loaded.generate(**prompt, max_new_tokens=4, do_sample=False)
        assert output.shape[1] == prompt["input_ids"].shape[1] + 4
