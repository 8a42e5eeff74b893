"""`python -m qexp.compare` and the notebook on the store left by a real sweep."""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import numpy as np
import pytest
from nbclient import NotebookClient

from qexp.compare.stats import mcnemar_exact
from qexp.files import read_jsonl
from tests.e2e.conftest import qexp_cli

pytestmark = pytest.mark.e2e

NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "compare.ipynb"


def _acc(path: Path) -> dict[str, float]:
    return {r["doc_hash"]: r["acc"] for r in read_jsonl(path)}


def test_compare_cli_reads_the_default_store(sweep, cache_dir):
    proc = qexp_cli(cwd=sweep.root, cache_dir=cache_dir, module="qexp.compare")
    assert proc.returncode == 0, proc.stderr[-3000:]
    for part in ("FIXTURE DATA", "1. Summary", "Held-out perplexity", "Cost", "2. Per task", "3. MMLU by category", "MMLU by subject",
                 "4. Methods", "5. Calibration", "6. Ranking"):
        assert part in proc.stdout
    summary = proc.stdout.split("1. Summary", 1)[1].split("Held-out perplexity", 1)[0]
    rows = {line.split()[0]: line for line in summary.splitlines() if line[:1].isalpha()}
    for name, run in sweep.runs().items():  # each run's row shows its ARC-Easy score as MLflow holds it
        label = "Baseline" if name == "baseline" else name.replace("gptq", "GPTQ").replace("awq", "AWQ")
        assert f" {100 * run.data.metrics['arc_easy/acc']:.1f} [" in rows[label], rows


def test_compare_json_equals_mlflow_and_mcnemar_from_artifacts(sweep, cache_dir):
    proc = qexp_cli("--format", "json", cwd=sweep.root, cache_dir=cache_dir, module="qexp.compare")
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = json.loads(proc.stdout)
    runs = {r.info.run_name: r for r in sweep.runs().values()}
    by_label = {"Baseline": runs["baseline"], **{f"{n.split('-')[0].upper()}-{n.split('-')[1]}": r
                                                  for n, r in runs.items() if n != "baseline"}}
    for run in data["runs"]:
        for task in ("arc_challenge", "arc_easy", "hellaswag", "mmlu"):
            assert run["scores"][task] == by_label[run["label"]].data.metrics[f"{task}/acc"]
    compared = [c for c in data["comparisons"] if c["task"] == "arc_easy"]
    # each quantized run against the baseline, GPTQ against AWQ at 8 and 16, and 8 against 16 per method
    assert sorted((c["table"], c["a"], c["b"]) for c in compared if c["table"] != "best_vs_others") == sorted(
        [("vs_baseline", label, "Baseline") for label in ("GPTQ-8", "GPTQ-16", "AWQ-8", "AWQ-16")]
        + [("methods", "AWQ-8", "GPTQ-8"), ("methods", "AWQ-16", "GPTQ-16"),
           ("calibration", "GPTQ-8", "GPTQ-16"), ("calibration", "AWQ-8", "AWQ-16")])
    for comparison in compared:
        a = _acc(sweep.artifact(by_label[comparison["a"]], "lm_eval/samples/arc_easy.jsonl"))
        b = _acc(sweep.artifact(by_label[comparison["b"]], "lm_eval/samples/arc_easy.jsonl"))
        keys = sorted(a)
        expected = mcnemar_exact(np.array([a[k] for k in keys]), np.array([b[k] for k in keys]))
        assert comparison["p_value"] == pytest.approx(expected.p_value)


def test_notebook_executes_and_draws_its_plots(sweep, tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", sweep.uri)
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(notebook, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(NOTEBOOK.parent)}}).execute()
    images = [o for cell in notebook.cells for o in cell.get("outputs", []) if "image/png" in o.get("data", {})]
    assert len(images) == 4
    errors = [o for cell in notebook.cells for o in cell.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors
    stderr = "".join(o.get("text", "") for cell in notebook.cells for o in cell.get("outputs", [])
                     if o.get("name") == "stderr")
    assert "Warning" not in stderr, stderr[:2000]  # a notebook user sees the study, not a library's complaint
