"""The report on a store with known numbers: a 6-point gap on 50 documents that is noise,
and a gap on 200 documents that is not."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from mlflow import MlflowClient

from qexp.compare import build_report, load_study, render, to_json

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


def test_json_scores_equal_mlflow_and_p_values_equal_mcnemar(store, tmp_path):
    """The report's numbers against MLflow read through its own client, and an exact McNemar test
    computed here from the logged samples, paired by document hash, with scipy."""
    from scipy.stats import binomtest

    data = to_json(build_report(load_study(store)))
    client = MlflowClient(store)
    runs = {(r.data.tags["qexp.quant"], r.data.tags["qexp.calib_n"]): r
            for r in client.search_runs([client.get_experiment_by_name("qexp").experiment_id])}
    labels = {"Baseline": ("none", "0"), "GPTQ-215": ("gptq", "215"), "AWQ-215": ("awq", "215")}
    assert {run["label"] for run in data["runs"]} == set(labels)
    for run in data["runs"]:
        logged = runs[labels[run["label"]]].data.metrics
        for task in ("arc_easy", "hellaswag", "mmlu"):
            assert run["scores"][task] == logged[f"{task}/acc"]

    def correct(key) -> dict[str, float]:
        path = client.download_artifacts(runs[key].info.run_id, "lm_eval/samples/hellaswag.jsonl",
                                         str(tmp_path / "_".join(key)))
        return {d["doc_hash"]: d["acc"] for d in map(json.loads, Path(path).read_text().splitlines())}

    base, mine = correct(("none", "0")), correct(("gptq", "215"))
    lost = sum(1 for h in base if base[h] == 1 and mine[h] == 0)
    gained = sum(1 for h in base if base[h] == 0 and mine[h] == 1)
    (gptq,) = [c for c in data["comparisons"] if c["table"] == "vs_baseline" and c["a"] == "GPTQ-215"
               and c["task"] == "hellaswag"]
    assert (lost, gained) == (40, 0)
    assert gptq["p_value"] == pytest.approx(binomtest(gained, lost + gained, 0.5).pvalue)
    assert gptq["delta"] == pytest.approx(-0.20)
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


def test_a_data_free_run_is_compared_with_every_method_at_every_calibration_size(tmp_path):
    client = MlflowClient(f"sqlite:///{tmp_path}/mlruns/mlflow.db")
    experiment_id = _experiment(client)
    scores = {"arc_easy": [1] * 30 + [0] * 20, "hellaswag": [1] * 150 + [0] * 50,
              "mmlu_anatomy": [1] * 10 + [0] * 10, "mmlu_philosophy": [1] * 5 + [0] * 5}
    better = {**scores, "hellaswag": [1] * 190 + [0] * 10}  # +20 points on 200 documents: real
    for quant, n, per_task in [("none", 0, scores), ("rtn", 0, better), ("gptq", 16, scores), ("gptq", 32, scores),
                               ("awq", 16, scores), ("awq", 32, scores)]:
        _log_run(client, experiment_id, quant, n, per_task)
    study = load_study(f"sqlite:///{tmp_path}/mlruns/mlflow.db")
    assert "RTN" in study.labels
    report = build_report(study)
    pairs = list(dict.fromkeys(zip(report.methods.a, report.methods.b)))
    assert pairs == [("AWQ-16", "GPTQ-16"), ("AWQ-16", "RTN"), ("GPTQ-16", "RTN"),
                     ("AWQ-32", "GPTQ-32"), ("AWQ-32", "RTN"), ("GPTQ-32", "RTN")]
    hellaswag = report.methods.query("task == 'hellaswag' and b == 'RTN'")
    assert len(hellaswag) == 4 and set(hellaswag.winner) == {"RTN"}
    assert set(zip(report.calibration.a, report.calibration.b)) == {("AWQ-16", "AWQ-32"), ("GPTQ-16", "GPTQ-32")}
    budget = [line for line in report.recommendations if line.startswith("With a limited calibration budget")]
    assert budget and budget[0].startswith("With a limited calibration budget (16 samples or none):")
    assert "best: RTN" in budget[0]  # the data-free run fits any budget


def test_cli_options_metric_model_sweep_and_output_and_a_warm_report_equals_the_cold_one(store, tmp_path, capsys):
    from qexp.compare.__main__ import main
    from qexp.files import default_cache_dir, digest

    def report(*args) -> tuple[int, str, str]:
        code = main(["--tracking-uri", store, *args])
        out = capsys.readouterr()
        return code, out.out, out.err

    entries = default_cache_dir() / "compare" / digest(store)  # this store's
    code, cold, _ = report("--format", "json")
    assert code == 0 and len(list(entries.glob("*.pkl"))) == 3  # one parsed-samples entry per run
    assert report("--format", "json")[1] == cold  # warm: read from the cache, the same report

    data = json.loads(report("--format", "json", "--metric", "acc_norm", "--metric", "mmlu=acc")[1])
    assert data["metric"] == {"arc_easy": "acc_norm", "hellaswag": "acc_norm", "mmlu": "acc"}
    assert json.loads(cold)["metric"] == {"arc_easy": "acc", "hellaswag": "acc", "mmlu": "acc"}

    same = json.loads(report("--format", "json", "--model", "m", "--sweep-id", "s1")[1])
    assert same["runs"] == json.loads(cold)["runs"]
    other_sweep = json.loads(report("--format", "json", "--sweep-id", "s2")[1])
    assert [r["label"] for r in other_sweep["runs"]] == ["Baseline"]  # a sweep's report takes any sweep's baseline
    code, out, err = report("--model", "other")
    assert code == 2 and out == "" and "No finished qexp runs" in err and len(err.strip().splitlines()) == 1

    code, out, err = report("--format", "markdown", "-o", str(tmp_path / "report.md"))
    assert code == 0 and out == "" and f"wrote {tmp_path / 'report.md'}" in err
    assert (tmp_path / "report.md").read_text().startswith("# Quantization study")

    # a finished run whose evaluation is logged again is read anew, not from its earlier cache entry
    client = MlflowClient(store)
    (gptq,) = client.search_runs([client.get_experiment_by_name("qexp").experiment_id], "tags.`qexp.quant` = 'gptq'")
    client.log_text(gptq.info.run_id, "".join(json.dumps(d) + "\n" for d in _docs([1] * 200, "hellaswag")),
                    "lm_eval/samples/hellaswag.jsonl")
    client.log_metric(gptq.info.run_id, "hellaswag/acc", 1.0)
    changed = json.loads(report("--format", "json")[1])
    (delta,) = [c["delta"] for c in changed["comparisons"]
                if c["table"] == "vs_baseline" and c["a"] == "GPTQ-215" and c["task"] == "hellaswag"]
    assert delta == pytest.approx(0.25)  # 100% now against the baseline's 75% (it was -20 points)
    assert len(list(entries.glob("*.pkl"))) == 4


def test_a_generative_task_is_scored_and_paired_by_the_metric_and_filter_asked_for(tmp_path, capsys):
    """lm-eval writes a record per document and filter for a generative task (gsm8k: strict-match and
    flexible-extract); `--metric gsm8k=exact_match,<filter>` reports and pairs that filter's records."""
    from scipy.stats import binomtest

    from qexp.compare.__main__ import main

    uri = f"sqlite:///{tmp_path}/mlruns/mlflow.db"
    client = MlflowClient(uri)
    experiment_id = _experiment(client)
    # 40 documents: under strict-match GPTQ loses 10 the baseline got right; under flexible-extract nothing changes
    correct = {"none": {"strict-match": [1] * 30 + [0] * 10, "flexible-extract": [1] * 30 + [0] * 10},
               "gptq": {"strict-match": [1] * 20 + [0] * 20, "flexible-extract": [1] * 30 + [0] * 10}}
    for quant, n in (("none", 0), ("gptq", 215)):
        evaluation = {"tasks": ["gsm8k"], "num_fewshot": 0, "limit": 40, "seed": 0, "data": {}, "own_data": {}}
        run_id = client.create_run(experiment_id, run_name=quant, tags={
            "qexp.quant": quant, "qexp.calib_n": str(n), "qexp.model": "m", "qexp.eval_data": "local",
            "qexp.config_hash": f"{quant}{n}", "qexp.eval_hash": "e", "qexp.sweep_id": "s1"}).info.run_id
        client.log_param(run_id, "eval.tasks", json.dumps(["gsm8k"]))
        records = []
        for filter_, values in correct[quant].items():
            client.log_metric(run_id, f"gsm8k/exact_match/{filter_}", float(np.mean(values)))
            records += [{"doc_id": i, "doc_hash": f"g{i}", "filter": filter_, "exact_match": float(v)}
                        for i, v in enumerate(values)]
        client.log_text(run_id, json.dumps({"model": {"hub": "m", "dtype": "float32"}, "eval": evaluation,
                                            "versions": VERSIONS}),
                        "identity.json")
        client.log_text(run_id, json.dumps({"group_subtasks": {}}), "lm_eval/results.json")
        client.log_text(run_id, "".join(json.dumps(r) + "\n" for r in records), "lm_eval/samples/gsm8k.jsonl")
        client.set_terminated(run_id, "FINISHED")

    def report(filter_: str) -> dict:
        assert main(["--tracking-uri", uri, "--format", "json", "--metric", f"gsm8k=exact_match,{filter_}"]) == 0
        return json.loads(capsys.readouterr().out)

    strict, flexible = report("strict-match"), report("flexible-extract")
    assert strict["metric"] == {"gsm8k": "exact_match,strict-match"}
    assert {r["label"]: r["scores"]["gsm8k"] for r in strict["runs"]} == {"Baseline": 0.75, "GPTQ-215": 0.5}
    assert {r["label"]: r["scores"]["gsm8k"] for r in flexible["runs"]} == {"Baseline": 0.75, "GPTQ-215": 0.75}
    (lost,) = [c for c in strict["comparisons"] if c["table"] == "vs_baseline" and c["task"] == "gsm8k"]
    (same,) = [c for c in flexible["comparisons"] if c["table"] == "vs_baseline" and c["task"] == "gsm8k"]
    assert lost["delta"] == pytest.approx(-0.25) and lost["p_value"] == pytest.approx(binomtest(0, 10, 0.5).pvalue)
    assert same["delta"] == 0 and same["p_value"] == 1.0


def test_holm_turns_a_raw_winner_into_no_winner_in_every_comparison_table(tmp_path):
    """On ARC-Easy GPTQ-215 is wrong on 8 documents the other runs get right and right on 1 they get
    wrong: exact McNemar p = 2 * 10 / 512 = 0.039, a winner before adjustment. Each table is one Holm
    family with a second row (HellaSwag, identical), so the adjusted p is 0.078: no winner, in the
    per-task, the method and the calibration table alike."""
    from tests.study_store import accuracy_run, new_store

    uri, client, experiment = new_store(tmp_path)
    others = {"arc_easy": [1] * 19 + [0], "hellaswag": [1] * 20}
    gptq = {"arc_easy": [0] * 8 + [1] * 12, "hellaswag": [1] * 20}
    for quant, n, docs in (("none", 0, others), ("gptq", 215, gptq), ("gptq", 512, others), ("awq", 215, others)):
        accuracy_run(client, experiment, quant, n, docs)
    report = build_report(load_study(uri, "qexp"))
    for name, table in (("vs_baseline", report.vs_baseline), ("methods", report.methods),
                        ("calibration", report.calibration)):
        row = table[((table.a == "GPTQ-215") | (table.b == "GPTQ-215")) & (table.task == "arc_easy")].iloc[0]
        assert row.p_value == pytest.approx(20 / 512), name
        assert row.p_adjusted >= 2 * row.p_value > 0.05 and row.winner == "not significant", name
