"""The GPU benchmark, run on CPU at one narrower layer in float32 so it cannot rot: every phase
measured, memory given back."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
HIDDEN, VOCAB = 1024, 131072  # the embeddings (512 MB in float32) are what a leaked model would keep


def test_gpu_study_runs_at_reduced_size_on_cpu(tmp_path, cache_dir):
    out = tmp_path / "figures.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "gpu_study.py"), "--device", "cpu", "--layers", "1",
         "--samples", "1", "2", "--seq-len", "32", "--eval-limit", "1", "--hidden-size", str(HIDDEN),
         "--intermediate-size", "3072", "--vocab-size", str(VOCAB), "--dtype", "float32", "--json", str(out),
         "--no-speed"],  # vLLM's speed phase has its own end-to-end test (test_speed.py)
        cwd=tmp_path, env={**os.environ, "QEXP_CACHE_DIR": str(cache_dir)}, capture_output=True, text=True,
        timeout=900)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    figures = json.loads(out.read_text())
    phases = [(r["phase"], r["method"], r["n"]) for r in figures["rows"]]
    assert phases == [("build", "-", 0), ("quant", "gptq", 1), ("quant", "gptq", 2), ("eval", "gptq", 2),
                      ("quant", "awq", 1), ("quant", "awq", 2), ("eval", "awq", 2)]
    for row in figures["rows"]:
        assert row["seconds"] > 0 and row["peak_rss_mb"] >= row["held_rss_mb"] > 0
    # nothing a phase loaded is kept: what later phases hold stays near the libraries' own footprint
    held = [r["held_rss_mb"] for r in figures["rows"] if r["phase"] != "build"]
    assert (figures["hidden_size"], figures["vocab_size"], figures["dtype"]) == (HIDDEN, VOCAB, "float32")
    embeddings_mb = VOCAB * HIDDEN * 4 / 2**20  # the smallest tensor a leaked model would keep
    assert max(held) - min(held) < embeddings_mb
    projected = {p["method"]: p for p in figures["extrapolated"]}
    assert set(projected) == {"gptq", "awq"} and all(p["seconds"] > 0 for p in projected.values())
    assert "quant at n=512" in proc.stdout and (tmp_path / "gpu_study.libraries.log").stat().st_size > 0
