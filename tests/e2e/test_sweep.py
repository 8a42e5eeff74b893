"""The offline study end to end: quantize, evaluate, log, reload; then what reads its store: `python -m
qexp.compare`, the notebook, and the manual's UI command (docs/running.md) serving its runs over REST.

They share the session's one sweep, and pytest-xdist's `--dist loadfile` keeps a file on one worker: in one
file, the sweep runs once.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import numpy as np
import pytest
from nbclient import NotebookClient

from qexp.compare.stats import mcnemar_exact
from qexp.evaluation import evaluate, plan_tasks
from qexp.fixtures import FIXTURES_DIR
from qexp.files import read_jsonl
from qexp.tracking import results_metrics
from tests.e2e.conftest import SWEEP, assert_second_pass_redoes_nothing, qexp_cli
from tests.e2e.servers import free_port, get

pytestmark = pytest.mark.e2e

NAMES = {"baseline", "gptq-8", "gptq-16", "awq-8", "awq-16"}


def test_sweep_logs_baseline_and_four_quantized_runs(sweep):
    runs = sweep.runs()
    assert set(runs) == NAMES
    assert {r.info.status for r in runs.values()} == {"FINISHED"}
    assert len({r.data.tags["qexp.sweep_id"] for r in runs.values()}) == 1
    assert len({r.data.tags["qexp.config_hash"] for r in runs.values()}) == 5
    for name, run in runs.items():
        tags = run.data.tags
        method, _, n = name.partition("-")
        assert tags["qexp.quant"] == ("none" if name == "baseline" else method)
        assert tags["qexp.calib_n"] == (n or "0")
        assert tags["qexp.model"] == "tiny-qwen3"
        assert tags["qexp.eval_data"] == "fixtures"
        assert "FIXTURE" in tags["mlflow.note.content"]
        assert run.data.params["quant.name"] == tags["qexp.quant"]
        assert run.data.params["eval.limit"] == "50"
        assert run.data.params["eval.batch_size"] == "8"  # null resolved for the CPU, and logged so
        if method == "awq":
            assert run.data.params["quant.offload_device"] == "none"  # auto on CPU
        if name != "baseline":  # quantized by this sweep: no other test's checkpoint was reused
            assert "qexp.checkpoint_reused" not in tags, name
    assert "qexp sweep: 4 jobs, 4 ok, 0 failed" in sweep.proc.stdout


def test_the_terminal_shows_qexps_lines_and_the_report_not_the_libraries(sweep):
    output = sweep.proc.stdout + sweep.proc.stderr
    live = re.compile(r"\] - ([\w-]+) (quantizing|evaluating) +(\d+)%, ")
    assert len([line for line in output.splitlines() if not live.search(line)]) < 150, output[-3000:]
    # qexp's progress lines may name a library's current step ("… about 5 s left: Grid search for …"):
    # the libraries' own lines are what must not reach the terminal
    said = "\n".join(line for line in output.splitlines() if not live.search(line))
    for noise in ("overrides existing task", "fatal: not a git repository", "Grid search for", "Traceback",
                  "monitoring system metrics", "Creating initial MLflow database tables", "Running upgrade",
                  "finished {", "is_fx_tracing", "Writing model shards:", "it/s]"):
        assert noise not in said
    # Not a terminal: no control characters; progress as plain lines, at most one per job, phase and counted
    # bar per 5% (and none at all for a phase of seconds: tests/unit/test_progress.py)
    assert not any(ch in output for ch in "\r\x1b")
    bars = {}
    for line in sweep.proc.stdout.splitlines():
        if found := live.search(line):
            counted = line.rsplit(": ", 1)[-1].rsplit(" ", 1)[0]  # "(2/3): Calibrating" or "Running ... requests"
            key = (found[1], found[2], counted if found[2] == "evaluating" else "")
            bars.setdefault(key, []).append(int(found[3]))
    for percents in bars.values():
        assert percents == sorted(percents) and len({p // 5 for p in percents}) == len(percents), bars
    progress = [line for line in sweep.proc.stdout.splitlines() if line.startswith("qexp sweep: job ")]
    assert [line.split(",")[0] for line in progress] == [f"qexp sweep: job {i} of 4" for i in (1, 2, 3, 4)]
    assert "no estimate of the time left yet" in progress[0]
    assert all(f"{i} done ({i} ok, 0 failed, 0 skipped); about " in line and " left (from " in line
               for i, line in enumerate(progress[1:], start=1))
    finished = [line for line in output.splitlines() if ": finished: average " in line]
    assert len(finished) == 5 and all("bits/byte" in line and " MB" in line for line in finished)
    assert "1. Summary" in sweep.proc.stdout and "Browse the runs: http://127.0.0.1:5000/#/experiments/" in sweep.proc.stdout
    assert "?workflowType=machine_learning" in sweep.proc.stdout
    libraries_log = sweep.artifact(sweep.runs()["awq-16"], "logs/libraries.log").read_text()
    assert "Grid search for" in libraries_log  # AWQ's progress bars, kept for whoever wants them


def test_metrics_cover_tasks_groups_and_subjects_and_equal_results_json(sweep):
    for run in sweep.runs().values():
        metrics = run.data.metrics
        for task in ("arc_challenge", "arc_easy", "hellaswag"):
            assert {f"{task}/acc", f"{task}/acc_norm", f"{task}/acc_stderr"} <= set(metrics)
        for group in ("mmlu", "mmlu_humanities", "mmlu_other", "mmlu_social_sciences", "mmlu_stem"):
            assert f"{group}/acc" in metrics
        assert len([m for m in metrics if m.startswith("mmlu_") and m.endswith("/acc")]) == 57 + 4
        results = sweep.artifact_json(run, "lm_eval/results.json")
        expected = results_metrics(results)
        assert {k: metrics[k] for k in expected} == pytest.approx(expected, abs=1e-9)


def test_artifacts_and_nested_shared_calibration(sweep):
    runs = sweep.runs()
    ids = {name: sweep.artifact_json(run, "calibration/sample_ids.json") for name, run in runs.items()
           if name != "baseline"}
    assert len(ids["gptq-16"]) == 16 and ids["gptq-8"] == ids["gptq-16"][:8]
    assert ids["awq-8"] == ids["gptq-8"] and ids["awq-16"] == ids["gptq-16"]
    for name, run in runs.items():
        config = sweep.artifact(run, "config.yaml").read_text()
        assert "quant:" in config
        samples = sweep.artifact(run, "lm_eval/samples")
        files = sorted(p.name for p in samples.iterdir())
        assert len(files) == 3 + 57 + 1 and {"mmlu_anatomy.jsonl", "sharegpt_heldout.jsonl"} <= set(files)
        records = read_jsonl(samples / "arc_easy.jsonl")
        assert len(records) == 10 and all("doc_hash" in r and r["acc"] in (0.0, 1.0) for r in records)
        if name != "baseline":
            modifier = "GPTQModifier" if name.startswith("gptq") else "AWQModifier"
            assert modifier in sweep.artifact(run, "recipe.yaml").read_text()


def test_heldout_perplexity_and_cost_are_logged(sweep):
    runs = sweep.runs()
    calibration = {i for name, run in runs.items() if name != "baseline"
                   for i in sweep.artifact_json(run, "calibration/sample_ids.json")}
    for name, run in runs.items():
        metrics = run.data.metrics
        assert {"sharegpt_heldout/word_perplexity", "sharegpt_heldout/bits_per_byte"} <= set(metrics)
        assert metrics["sharegpt_heldout/n_samples"] == 50
        heldout = sweep.artifact_json(run, "sharegpt_heldout/sample_ids.json")
        assert len(heldout) == 100 and not set(heldout) & calibration
        assert {"perf/eval_seconds", "perf/eval_peak_rss_mb", "perf/peak_rss_mb", "perf/checkpoint_mb",
                "perf/compression_ratio"} <= set(metrics)
        assert not any(key.startswith("perf/") and "gpu" in key for key in metrics)  # device=cpu
        if name == "baseline":
            assert metrics["perf/compression_ratio"] == 1.0
            assert "perf/quant_peak_rss_mb" not in metrics  # nothing was quantized
        else:
            assert metrics["perf/quant_seconds"] > 0 and metrics["perf/quant_peak_rss_mb"] > 0
            assert metrics["perf/compression_ratio"] == pytest.approx(
                metrics["perf/baseline_mb"] / metrics["perf/checkpoint_mb"], rel=1e-3)
            assert metrics["perf/checkpoint_mb"] < metrics["perf/baseline_mb"] / 2


def test_checkpoint_artifact_reloads_and_reproduces_the_scores(sweep, cache_dir):
    run = sweep.runs()["gptq-16"]
    checkpoint = sweep.checkpoint(run)
    config = json.loads((checkpoint / "config.json").read_text())
    assert config["quantization_config"]["quant_method"] == "compressed-tensors"
    plan = plan_tasks(["arc_challenge", "arc_easy", "hellaswag", "mmlu"], FIXTURES_DIR, cache_dir)
    dtype = run.data.params["eval.dtype"]  # eval.dtype=auto as the run resolved it (bfloat16 on this CPU)
    assert dtype in ("bfloat16", "float32")
    again = evaluate(checkpoint, plan, dtype=dtype, device="cpu", num_fewshot=0, limit=50,
                     batch_size=8, seed=0, cache_dir=cache_dir)
    logged = {k: v for k, v in run.data.metrics.items() if not k.startswith(("perf/", "system/", "sharegpt_heldout/"))}
    assert results_metrics(again.results) == pytest.approx(logged, abs=1e-9)


def test_second_pass_reuses_every_finished_run(sweep, cache_dir):
    assert_second_pass_redoes_nothing(sweep, SWEEP, cache_dir, jobs=4)


# ----------------------------------------------------------------------------- the report and the notebook
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


# ----------------------------------------------------------------------------- the MLflow UI
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
