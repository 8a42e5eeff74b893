"""The README's UI command, started as written, serves the sweep's runs over its REST API."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

README = Path(__file__).resolve().parents[2] / "README.md"


def _ui_command() -> list[str]:
    line = next(line for line in README.read_text().splitlines() if line.strip().startswith("mlflow ui "))
    return line.split("#")[0].split()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str, data: dict | None = None):
    body = json.dumps(data).encode() if data is not None else None
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        raw = response.read()
    return json.loads(raw) if data is not None or "/api/" in url else raw


@pytest.fixture
def server(sweep):
    port = _free_port()
    command = _ui_command()
    exe = Path(sys.executable).with_name("mlflow")
    command[0] = str(exe) if exe.exists() else shutil.which("mlflow")
    proc = subprocess.Popen([*command, "--host", "127.0.0.1", "--port", str(port)], cwd=sweep.root,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=os.environ.copy())
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
            try:
                _get(f"{base}/health")
                break
            except OSError:
                time.sleep(0.5)
        else:
            pytest.fail("mlflow ui did not answer within 60 s")
        yield base
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_ui_serves_runs_metrics_and_checkpoint(server):
    experiment = _get(f"{server}/api/2.0/mlflow/experiments/get-by-name?experiment_name=qexp")["experiment"]
    runs = _get(f"{server}/api/2.0/mlflow/runs/search", {"experiment_ids": [experiment["experiment_id"]]})["runs"]
    by_name = {r["info"]["run_name"]: r for r in runs}
    assert set(by_name) == {"baseline", "gptq-8", "gptq-16", "awq-8", "awq-16"}
    metrics = {m["key"]: m["value"] for m in by_name["awq-16"]["data"]["metrics"]}
    assert {"arc_easy/acc", "mmlu/acc", "mmlu_stem/acc", "mmlu_anatomy/acc"} <= set(metrics)

    run_id = by_name["awq-16"]["info"]["run_id"]
    listing = _get(f"{server}/api/2.0/mlflow/artifacts/list?run_id={run_id}&path=checkpoint")
    assert {"checkpoint/config.json", "checkpoint/model.safetensors"} <= {f["path"] for f in listing["files"]}
    config = json.loads(_get(f"{server}/get-artifact?path=checkpoint/config.json&run_uuid={run_id}"))
    assert config["quantization_config"]["quant_method"] == "compressed-tensors"
