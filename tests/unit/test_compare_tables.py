"""The report on a store with known numbers: a 6-point gap on 50 documents that is noise,
and a gap on 200 documents that is not."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys

import numpy as np
import pytest
from mlflow import MlflowClient

from qexp.compare import build_report, load_study, render, to_json
from qexp.compare.stats import mcnemar_exact

SUBJECTS = {"mmlu_stem": ["mmlu_anatomy"], "mmlu_humanities": ["mmlu_philosophy"]}
VERSIONS = {"torch": "2.13.0", "transformers": "5.17.0", "lm_eval": "0.4.13"}


def _experiment(client) -> str:
    return client.create_experiment("qexp")


def _docs(correct: list[int], prefix: str) -> list[dict]:
    return [{"doc_id": i, "doc_hash": f"{prefix}{i}", "acc": float(c), "acc_norm": float(c)} for i, c in enumerate(correct)]


def _log_run(client, experiment_id, quant, n, per_task: dict[str, list[int]], eval_data="local", limit=50):
    """A finished run written with MLflow's own client, following qexp's naming contract."""
    evaluation = {"tasks": ["arc_easy", "hellaswag", "mmlu"], "num_fewshot": 0, "limit": limit, "seed": 0,
                  "data": {"arc_easy": "d1"}, "own_data": {}}
    identity = {"model": {"hub": "m", "dtype": "float32"}, "eval": evaluation, "versions": VERSIONS}
    eval_hash = hashlib.sha256(json.dumps([evaluation, "float32", VERSIONS], sort_keys=True).encode()).hexdigest()[:16]
    run = client.create_run(experiment_id, run_name="x", tags={
        "qexp.quant": quant, "qexp.calib_n": str(n), "qexp.model": "m", "qexp.eval_data": eval_data,
        "qexp.config_hash": f"{quant}{n}", "qexp.eval_hash": eval_hash, "qexp.sweep_id": "s1"})
    run_id = run.info.run_id
    for key, value in {"eval.tasks": json.dumps(evaluation["tasks"]), "eval.limit": str(limit),
                       "eval.num_fewshot": "0", "eval.batch_size": "8", "versions.lm_eval": "0.4.13"}.items():
        client.log_param(run_id, key, value)
    metrics = {}
    for task, correct in per_task.items():
        metrics[f"{task}/acc"] = float(np.mean(correct))
        metrics[f"{task}/acc_norm"] = float(np.mean(correct))
    leaves = [t for group in SUBJECTS.values() for t in group]
    pooled = [c for t in leaves for c in per_task[t]]
    metrics["mmlu/acc"] = float(np.mean(pooled))
    for group, members in SUBJECTS.items():
        metrics[f"{group}/acc"] = float(np.mean([c for t in members for c in per_task[t]]))
    for key, value in metrics.items():
        client.log_metric(run_id, key, value)
    client.log_text(run_id, json.dumps(identity), "identity.json")
    client.log_text(run_id, json.dumps({"group_subtasks": {"mmlu": list(SUBJECTS), **SUBJECTS}}), "lm_eval/results.json")
    for task, correct in per_task.items():
        client.log_text(run_id, "".join(json.dumps(d) + "\n" for d in _docs(correct, task)),
                        f"lm_eval/samples/{task}.jsonl")
    client.set_terminated(run_id, "FINISHED")
    return run_id


@pytest.fixture
def store(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlruns/mlflow.db"
    client = MlflowClient(uri)
    experiment_id = _experiment(client)
    base = {"arc_easy": [1] * 30 + [0] * 20,                    # 60% on 50 docs
            "hellaswag": [1] * 150 + [0] * 50,                  # 75% on 200 docs
            "mmlu_anatomy": [1] * 10 + [0] * 10, "mmlu_philosophy": [1] * 5 + [0] * 5}
    # GPTQ-215: +6 points on arc_easy from 3 lost and 6 gained documents (p = 0.51, noise);
    # -20 points on hellaswag from 40 lost documents (p < 1e-11, real)
    gptq = {"arc_easy": [0] * 3 + [1] * 27 + [1] * 6 + [0] * 14,
            "hellaswag": [1] * 110 + [0] * 40 + [0] * 50,
            "mmlu_anatomy": [1] * 10 + [0] * 10, "mmlu_philosophy": [1] * 5 + [0] * 5}
    awq = {"arc_easy": [1] * 30 + [0] * 20, "hellaswag": [1] * 148 + [0] * 52,
           "mmlu_anatomy": [1] * 9 + [0] * 11, "mmlu_philosophy": [1] * 5 + [0] * 5}
    _log_run(client, experiment_id, "none", 0, base)
    _log_run(client, experiment_id, "gptq", 215, gptq)
    _log_run(client, experiment_id, "awq", 215, awq)
    return uri


def test_study_rows_labels_and_scores(store):
    study = load_study(store)
    assert study.labels == ["Baseline", "AWQ-215", "GPTQ-215"]
    assert study.tasks == ["arc_easy", "hellaswag", "mmlu"]
    assert study.runs.loc["GPTQ-215", "arc_easy/acc"] == pytest.approx(0.66)
    assert study.leaves("mmlu") == ["mmlu_anatomy", "mmlu_philosophy"]


def test_six_points_on_fifty_documents_is_not_significant(store):
    report = build_report(load_study(store))
    row = report.vs_baseline.query("a == 'GPTQ-215' and task == 'arc_easy'").iloc[0]
    assert row.delta == pytest.approx(0.06)
    assert (row.a_only, row.b_only, row.n) == (6, 3, 50)
    assert row.p_value == pytest.approx(2 * 130 / 512)
    assert not row.significant and row.winner == "not significant"


def test_a_real_drop_is_significant_after_holm(store):
    report = build_report(load_study(store))
    row = report.vs_baseline.query("a == 'GPTQ-215' and task == 'hellaswag'").iloc[0]
    assert row.delta == pytest.approx(-0.20)
    assert row.p_adjusted < 1e-9 and row.significant and row.winner == "Baseline"
    methods = report.methods.query("task == 'hellaswag'").iloc[0]
    assert {methods.a, methods.b} == {"AWQ-215", "GPTQ-215"} and methods.winner == "AWQ-215"


def test_group_scores_are_tested_over_all_their_documents(store):
    report = build_report(load_study(store))
    row = report.vs_baseline.query("a == 'AWQ-215' and task == 'mmlu'").iloc[0]
    assert row.n == 30 and (row.a_only, row.b_only) == (0, 1)
    stem = report.categories.query("a == 'AWQ-215' and task == 'mmlu_stem'").iloc[0]
    assert stem.n == 20


def test_json_scores_equal_mlflow_and_p_values_equal_mcnemar(store):
    study = load_study(store)
    data = to_json(build_report(study))
    for run in data["runs"]:
        for task in ("arc_easy", "hellaswag", "mmlu"):
            assert run["scores"][task] == study.runs.loc[run["label"], f"{task}/acc"]
    gptq = [c for c in data["comparisons"] if c["table"] == "vs_baseline" and c["a"] == "GPTQ-215"
            and c["task"] == "hellaswag"][0]
    base = study.docs["Baseline"].query("task == 'hellaswag'")["acc"].to_numpy()
    mine = study.docs["GPTQ-215"].query("task == 'hellaswag'")["acc"].to_numpy()
    assert gptq["p_value"] == pytest.approx(mcnemar_exact(mine, base).p_value)
    assert set(gptq) >= {"a", "b", "task", "delta", "p_value", "p_adjusted", "significant"}


def test_report_has_all_six_parts_and_names_the_metric(store):
    text = render(build_report(load_study(store), "acc_norm"))
    for part in ("1. Summary", "2. Per task", "3. MMLU by category", "MMLU by subject", "4. Methods",
                 "5. Calibration", "6. Ranking"):
        assert part in text
    assert "ARC Easy=acc_norm" in text and "MMLU=acc" in text  # MMLU has no acc_norm


def test_fixture_data_and_differing_settings_are_flagged(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlruns/mlflow.db"
    client = MlflowClient(uri)
    experiment_id = _experiment(client)
    docs = {"arc_easy": [1, 0], "hellaswag": [1, 1], "mmlu_anatomy": [1], "mmlu_philosophy": [0]}
    _log_run(client, experiment_id, "none", 0, docs, eval_data="fixtures")
    _log_run(client, experiment_id, "gptq", 8, docs, eval_data="fixtures", limit=10)
    report = build_report(load_study(uri))
    text = render(report)
    assert text.index("FIXTURE DATA") < text.index("1. Summary")
    assert any("'limit' differs" in w for w in report.warnings)
    assert (report.vs_baseline["settings_differ"] == "limit").all()


def test_cli_json_markdown_and_plots(store, tmp_path):
    def cli(*args):
        return subprocess.run([sys.executable, "-m", "qexp.compare", "--tracking-uri", store, *args],
                              capture_output=True, text=True, timeout=300)

    out = cli("--format", "json")
    assert out.returncode == 0, out.stderr
    assert {r["label"] for r in json.loads(out.stdout)["runs"]} == {"Baseline", "GPTQ-215", "AWQ-215"}
    out = cli("--format", "markdown", "--plots", str(tmp_path / "plots"))
    assert out.returncode == 0 and out.stdout.startswith("# Quantization study")
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == [
        "accuracy_vs_size.png", "calibration.png", "mmlu_category_deltas.png", "scores.png"]
    missing = cli("--experiment", "nope")
    assert missing.returncode == 2 and "<tracking.experiment='nope'>" in missing.stderr
    assert "Traceback" not in missing.stderr
