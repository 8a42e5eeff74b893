"""The offline study end to end: quantize, evaluate, log, reload."""

from __future__ import annotations

import json
import re

import pytest

from qexp.evaluation import evaluate, plan_tasks
from qexp.fixtures import FIXTURES_DIR
from qexp.files import read_jsonl
from qexp.tracking import results_metrics
from tests.e2e.conftest import SWEEP, assert_second_pass_redoes_nothing

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
