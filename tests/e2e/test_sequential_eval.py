"""A sequential study end to end on the tiny model: what each run logs, the report's table, a killed
evaluation resuming at its last chunk, and answers of a fixed-size evaluation of the same documents reused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from qexp import evaluation, shuffled, stopping
from qexp.compare.stats import holm
from qexp.contract import ARTIFACTS, METRICS, TAGS
from qexp.evaluation import load_tasks
from qexp.pipeline import _model
from qexp.spec import prepare
from tests.conftest import compose_config
from tests.e2e.conftest import qexp_cli, run_sweep

pytestmark = pytest.mark.e2e

LIMIT, LOOKS = 6, 3
SHUFFLED = ["model=tiny", "eval=fixtures", "model.max_seq_length=64", "device=cpu", "eval.order=shuffled",
            f"eval.limit={LIMIT}"]
SEQUENTIAL = [*SHUFFLED, f"eval.sequential.looks={LOOKS}"]


def test_a_sequential_sweep_logs_each_runs_verdict_and_documents_and_the_report_states_them(tmp_path, cache_dir):
    sweep = run_sweep(["-m", "quant=gptq,rtn", "calib.n=8", *SEQUENTIAL], tmp_path, cache_dir)
    runs = sweep.runs()
    assert set(runs) == {"baseline", "gptq-8", "rtn"} and {r.info.status for r in runs.values()} == {"FINISHED"}
    base = runs["baseline"]
    assert base.data.tags[TAGS.SEQUENTIAL] == "baseline"
    assert base.data.metrics[METRICS.SEQUENTIAL_DOCS] == base.data.metrics[METRICS.SEQUENTIAL_BUDGET]
    sizes = {"arc_easy": 10, "arc_challenge": 10, "hellaswag": 10}  # the fixture copies' test splits
    budget = stopping.budget(sizes, LIMIT, 0)
    samples = [json.loads(line) for line in sweep.artifact(base, f"{ARTIFACTS.SAMPLES}/arc_easy.jsonl").read_text().splitlines()]
    assert sorted(s["doc_id"] for s in samples) == sorted(budget["arc_easy"]) != list(range(LIMIT))  # the seeded sample
    for name in ("gptq-8", "rtn"):
        tags, metrics = runs[name].data.tags, runs[name].data.metrics
        assert tags[TAGS.SEQUENTIAL] in {"worse", "better", "equivalent", "undecided"}
        record = sweep.artifact_json(runs[name], ARTIFACTS.SEQUENTIAL)
        assert record["verdict"] == tags[TAGS.SEQUENTIAL] and record["reason"] == tags[TAGS.SEQUENTIAL_REASON]
        assert len(record["looks"]) == metrics[METRICS.SEQUENTIAL_LOOKS] <= LOOKS
        assert metrics[METRICS.SEQUENTIAL_DOCS] + metrics[METRICS.SEQUENTIAL_SAVED] == metrics[METRICS.SEQUENTIAL_BUDGET]
        assert metrics[METRICS.SEQUENTIAL_DOCS] == sum(record["documents"].values())
        used = [json.loads(line) for line in sweep.artifact(runs[name], f"{ARTIFACTS.SAMPLES}/arc_easy.jsonl")
                .read_text().splitlines()]
        assert len(used) == metrics[METRICS.sequential_docs("arc_easy")] == record["documents"]["arc_easy"]
        assert {s["doc_id"] for s in used} <= set(budget["arc_easy"])  # the baseline's documents: they pair
        assert metrics[METRICS.SEQUENTIAL_LOW] <= metrics[METRICS.SEQUENTIAL_DELTA] <= metrics[METRICS.SEQUENTIAL_HIGH]
        assert metrics[METRICS.SEQUENTIAL_COMPARISONS] == 2  # the sweep's quantized jobs share alpha
        assert metrics.get(METRICS.SEQUENTIAL_FUTILE) == record["futile"]  # logged when it stopped for futility
        assert (record["futile"] is not None) == ("futility" in tags[TAGS.SEQUENTIAL_REASON])
    report = qexp_cli("--format", "json", cwd=tmp_path, cache_dir=cache_dir, module="qexp.compare")
    assert report.returncode == 0, report.stderr[-3000:]
    table = {row["label"]: row for row in json.loads(report.stdout)["sequential"]}
    assert set(table) == {"GPTQ-8", "RTN"}
    p = [runs["gptq-8"].data.metrics[METRICS.SEQUENTIAL_P], runs["rtn"].data.metrics[METRICS.SEQUENTIAL_P]]
    assert [table["GPTQ-8"]["p_adjusted"], table["RTN"]["p_adjusted"]] == pytest.approx(list(holm(p)))
    text = qexp_cli(cwd=tmp_path, cache_dir=cache_dir, module="qexp.compare").stdout
    assert "Sequential comparisons" in text and "SEQUENTIAL: GPTQ-8, RTN stopped evaluating" in text


def test_a_per_task_sequential_run_logs_each_tasks_verdict_and_the_report_states_them(tmp_path, cache_dir):
    sweep = run_sweep(["-m", "quant=rtn", *SEQUENTIAL, "eval.sequential.per_task=true"], tmp_path, cache_dir)
    run = sweep.runs()["rtn"]
    tags, metrics = run.data.tags, run.data.metrics
    record = sweep.artifact_json(run, ARTIFACTS.SEQUENTIAL)
    tasks = record["tasks"]
    assert set(tasks) == {"arc_easy", "arc_challenge", "hellaswag", "mmlu"}  # the requested accuracy tasks
    assert f"of {len(tasks)} tasks decided, each at alpha/{len(tasks)}" in tags[TAGS.SEQUENTIAL_REASON]
    for task, own in tasks.items():
        assert tags[TAGS.sequential_task(task)] == own["verdict"] in {"worse", "better", "equivalent", "undecided"}
        assert metrics[METRICS.sequential_task(task, "looks")] == len(own["looks"]) <= LOOKS
        assert metrics[METRICS.sequential_task(task, "docs")] == own["documents"] > 0
        assert metrics[METRICS.sequential_task(task, "ci_low")] <= metrics[METRICS.sequential_task(task, "delta")]
        assert metrics.get(METRICS.sequential_task(task, "futile")) == own["futile"]  # logged when it stopped so
    assert sum(own["documents"] for own in tasks.values()) == sum(record["documents"].values()) \
        == metrics[METRICS.SEQUENTIAL_DOCS]
    report = qexp_cli("--format", "json", cwd=tmp_path, cache_dir=cache_dir, module="qexp.compare")
    assert report.returncode == 0, report.stderr[-3000:]
    rows = json.loads(report.stdout)["sequential_tasks"]
    assert sorted(r["task"] for r in rows) == sorted(tasks) and {r["label"] for r in rows} == {"RTN"}
    assert {r["task"]: r["p_value"] for r in rows} == pytest.approx({t: own["p_value"] for t, own in tasks.items()})
    text = qexp_cli(cwd=tmp_path, cache_dir=cache_dir, module="qexp.compare").stdout
    assert "Sequential comparisons per task" in text and 'in "Sequential comparisons per task"' in text


class Died(RuntimeError):
    pass


def _baseline(root: Path, overrides=SEQUENTIAL):
    """The tiny model's baseline spec, with an answers cache and chunk folders of this test's own (the
    session's cache may hold another test's chunks of the same model)."""
    spec = prepare(compose_config("quant=none", *overrides))
    shared = _model(spec, Path(spec.model_path))
    return spec, shuffled.Model(shared.path, root / "responses" / shared.responses.name,
                                root / "chunks" / shared.folder.name)


def test_a_killed_sequential_evaluation_resumes_at_its_last_chunk(tmp_path, monkeypatch):
    spec, model = _baseline(tmp_path)
    real, calls = evaluation.evaluate, []

    def dies_in_the_second_chunk(*args, **kwargs):
        calls.append(kwargs["documents"])
        if len(calls) == 2:
            raise Died("killed in chunk 2")
        return real(*args, **kwargs)

    monkeypatch.setattr(evaluation, "evaluate", dies_in_the_second_chunk)
    with pytest.raises(Died):
        shuffled.evaluate_shuffled(spec, model, None)
    assert [p.name for p in sorted(model.folder.glob("chunk-*.json"))] == ["chunk-000.json"]
    first = calls[0]
    calls.clear()
    monkeypatch.setattr(evaluation, "evaluate", lambda *a, **k: (calls.append(k["documents"]), real(*a, **k))[1])
    result, decision = shuffled.evaluate_shuffled(spec, model, None)
    assert first not in calls  # chunk 1 was read from its file, not evaluated again
    assert len(calls) == LOOKS - 1 + 1  # chunks 2 and 3, then lm-eval once on everything used
    assert decision.verdict == "" and sum(decision.documents.values()) == sum(decision.budget.values())
    assert len(result.samples["arc_easy"]) == LIMIT


def test_a_fixed_size_evaluation_of_the_same_documents_is_reused(tmp_path, monkeypatch):
    """eval.order=shuffled at a fixed size answers every request of the budget; the sequential evaluation of
    the same checkpoint afterwards sends none to the model."""
    from lm_eval.models.huggingface import HFLM

    fixed_spec, fixed = _baseline(tmp_path, SHUFFLED)
    spec, model = _baseline(tmp_path)
    assert fixed.responses == model.responses and fixed.folder != model.folder  # one answers cache, own chunks
    whole, _ = shuffled.evaluate_shuffled(fixed_spec, fixed, None)
    asked: list[int] = []
    loglikelihood = HFLM.loglikelihood
    monkeypatch.setattr(HFLM, "loglikelihood", lambda self, requests, *a, **k: (
        asked.append(len(requests)), loglikelihood(self, requests, *a, **k))[1])
    again, decision = shuffled.evaluate_shuffled(spec, model, None)
    assert sum(asked) == 0
    for task, records in whole.samples.items():
        assert [r.get("acc") for r in again.samples[task]] == [r.get("acc") for r in records]
    tasks, requested = load_tasks(spec.plan, spec.cache_dir)
    assert set(tasks) - {"sharegpt_heldout"} == set(decision.documents)  # every leaf counted, the held-out task not
    assert len(requested["mmlu"]) == 57 and requested["arc_easy"] == ["arc_easy"]  # a group: its leaves
