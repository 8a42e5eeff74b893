"""The report's three kinds of sentence and the planning command, on stores whose truth is known:
"worse", "not shown to differ (could have detected >= X)", "equivalent within the margin"."""

from __future__ import annotations

import numpy as np
import pytest

from qexp.compare import build_report, load_study, render, to_json
from qexp.compare.plan import main as plan_main, plan_study, render_plan, sequential_forecast
from qexp.compare.power import PairedMean, Settings, mcnemar_docs, mcnemar_mde, mean_docs
from tests.study_store import accuracy_run, new_store


def _flip(correct: list[int], count: int, start: int = 0) -> list[int]:
    """`correct` with `count` documents from `start` answered the other way."""
    out = list(correct)
    for i in range(start, start + count):
        out[i] = 1 - out[i]
    return out


def test_a_lone_run_far_below_the_baseline_is_never_just_best(tmp_path):
    uri, client, exp = new_store(tmp_path)
    base = [1] * 120 + [0] * 80
    accuracy_run(client, exp, "none", 0, {"lambada_openai": base})
    accuracy_run(client, exp, "gptq", 16, {"lambada_openai": _flip(base, 60)})  # 60 of 120 right answers lost
    report = build_report(load_study(uri))
    first, detail = report.recommendations[:2]
    assert first.startswith("Overall, best: GPTQ-16 (average 30.0%), the only quantized run.")
    assert "Against Baseline, GPTQ-16 is worse (-30.0 points" in first
    assert "recovery 50.0%" in detail and "cannot show it keeps 95%" in detail
    ranked = report.ranking.loc["GPTQ-16"]
    assert ranked["significant"] and not ranked["equivalent"] and ranked["recovery_bound"] < 0.5
    assert "| worse" in render(report, "markdown")


def test_many_documents_and_few_disagreements_show_equivalence_and_recovery(tmp_path):
    uri, client, exp = new_store(tmp_path)
    rng = np.random.default_rng(0)
    tasks = {t: list(rng.integers(0, 2, 3000)) for t in ("arc_easy", "hellaswag", "piqa")}
    accuracy_run(client, exp, "none", 0, tasks)
    # 30 documents change per task, 15 each way: the same accuracy, 1% disagreement.
    accuracy_run(client, exp, "awq", 32, {t: _flip(c, 30) for t, c in tasks.items()})
    report = build_report(load_study(uri))
    ranked = report.ranking.loc["AWQ-32"]
    assert ranked["equivalent"] and not ranked["significant"] and ranked["recovery_bound"] > 0.97
    assert "Against Baseline, AWQ-32 is equivalent within ±1 point (" in report.recommendations[0]
    assert "keeps at least 95%" in report.recommendations[1]
    # Against a 0.1-point margin the same run cannot be shown equivalent (its 90% interval is about
    # ±0.17 points), and the report says so.
    strict = build_report(load_study(uri), settings=Settings(margin=0.001))
    assert not strict.ranking.loc["AWQ-32", "equivalent"]
    assert "nor shown equivalent within ±0.1 points" in strict.recommendations[0]


def test_a_tie_says_what_it_could_have_detected_and_how_many_documents_would_decide(tmp_path):
    uri, client, exp = new_store(tmp_path)
    base = [1] * 100 + [0] * 100
    accuracy_run(client, exp, "none", 0, {"arc_easy": base})
    accuracy_run(client, exp, "gptq", 16, {"arc_easy": _flip(base, 12, 94)})  # 6 lost, 6 gained: 12 disagree
    accuracy_run(client, exp, "awq", 16, {"arc_easy": _flip(base, 8, 96)})  # 4 lost, 4 gained
    report = build_report(load_study(uri))
    row = report.methods.iloc[0]
    assert not row.significant
    share = (row.a_only + row.b_only) / row.n
    assert row.mde == pytest.approx(mcnemar_mde(200, share)) and row.docs_needed == mcnemar_docs(share, 0.02)
    text = render(report)
    assert "detectable ≥ pts" in text and "docs for 2 pts" in text and "not shown to differ" in text
    first = report.recommendations[0]
    assert "not shown to differ on the average" in first and "each could have detected ≥" in first
    payload = to_json(report)
    assert payload["settings"] == {"power": 0.8, "difference": 0.02, "margin": 0.01, "recovery": 0.95}
    assert {"mde", "docs_needed"} <= set(payload["comparisons"][0]) and "recovery_bound" in payload["ranking"][1]


def test_one_document_is_too_few_for_any_power_statement(tmp_path):
    uri, client, exp = new_store(tmp_path)
    accuracy_run(client, exp, "none", 0, {"arc_easy": [1]})
    accuracy_run(client, exp, "rtn", 0, {"arc_easy": [0]})
    report = build_report(load_study(uri))
    assert np.isnan(report.vs_baseline.iloc[0].mde)
    assert "too few documents to detect any difference" in report.recommendations[0]


def _pilot(tmp_path) -> str:
    uri, client, exp = new_store(tmp_path)
    rng = np.random.default_rng(1)
    tasks = {t: list(rng.integers(0, 2, 200)) for t in ("arc_easy", "hellaswag")}
    accuracy_run(client, exp, "none", 0, tasks)
    accuracy_run(client, exp, "gptq", 16, {t: _flip(c, 30) for t, c in tasks.items()})
    accuracy_run(client, exp, "awq", 16, {t: _flip(c, 20, 100) for t, c in tasks.items()})
    return uri


def test_the_plan_sizes_the_average_for_the_method_pairs(tmp_path):
    uri = _pilot(tmp_path)
    study = load_study(uri)
    plan = plan_study(study, Settings(difference=0.03))
    assert plan.family == "methods" and plan.pilot_docs == 200
    # Independently: GPTQ-16 vs AWQ-16 differ on documents 0-29 and 100-119 of each task: 50 of 200.
    a = {t: np.array(c) for t, c in study.docs["GPTQ-16"].groupby("task")["acc"]}
    b = {t: np.array(c) for t, c in study.docs["AWQ-16"].groupby("task")["acc"]}
    diffs = [a[t] - b[t] for t in ("arc_easy", "hellaswag")]
    pilot = PairedMean.from_sums([200, 200], [d.sum() for d in diffs], [(d * d).sum() for d in diffs])
    assert plan.limit == mean_docs(pilot, 0.03)
    text = render_plan(plan)
    assert f"Use eval.limit={plan.limit} to tell apart 3 points at 80% power on the average for methods" in text


def test_the_plan_says_what_a_sequential_study_of_its_budget_would_spend(tmp_path):
    uri, client, exp = new_store(tmp_path)
    base = {t: [1] * 120 + [0] * 80 for t in ("arc_easy", "hellaswag")}
    accuracy_run(client, exp, "none", 0, base)
    accuracy_run(client, exp, "gptq", 16, {t: _flip(c, 40) for t, c in base.items()})  # 20 points worse
    accuracy_run(client, exp, "awq", 16, {t: _flip(c, 40, 100) for t, c in base.items()})  # 20 lost, 20 gained: no difference
    plan = plan_study(load_study(uri))
    sequential = plan.sequential.set_index("a")
    assert set(sequential.index) == {"GPTQ-16", "AWQ-16"} and set(sequential["b"]) == {"Baseline"}
    assert sequential.loc["GPTQ-16", "verdict"] == "worse" and sequential.loc["GPTQ-16", "often"] > 0.95
    assert sequential.loc["GPTQ-16", "documents"] <= 0.3  # a 20-point loss is clear after a few looks
    # No difference, 20% disagreeing: undecided, and stopped for futility well before the budget ...
    assert sequential.loc["AWQ-16", "verdict"] == "undecided" and sequential.loc["AWQ-16", "documents"] < 0.8
    # ... where without futility it takes the whole budget.
    alone = sequential_forecast(plan.average, 2, plan.budget, Settings(), futility=0).set_index("a")
    assert alone.loc["AWQ-16", "documents"] > 0.9 and alone.loc["GPTQ-16", "documents"] <= 0.3
    text = render_plan(plan)
    assert f"Sequentially, at {plan.budget} documents per task" in text and "worse (" in text
    assert "stopping for futility below 5%" in text


def test_a_study_without_pairs_is_too_small_to_plan_from(tmp_path, capsys):
    uri, client, exp = new_store(tmp_path)
    accuracy_run(client, exp, "none", 0, {"arc_easy": [1, 0, 1]})
    assert plan_main(["--tracking-uri", uri]) == 0
    assert "too small for any power statement" in capsys.readouterr().out


@pytest.mark.parametrize("flags,word", [(["--power", "3"], "--power 3"), (["--difference", "-2"], "--difference -2")])
def test_the_plan_refuses_settings_that_make_no_sense(tmp_path, capsys, flags, word):
    uri = _pilot(tmp_path)
    assert plan_main(["--tracking-uri", uri, *flags]) == 2
    err = capsys.readouterr().err
    (line,) = [line for line in err.splitlines() if line.startswith("qexp.compare.plan:")]
    assert line.startswith(f"qexp.compare.plan: {word}") and "use e.g." in line


def test_the_reports_recovery_bound_is_the_one_sided_95_percent_lower_bound_computed_by_hand(tmp_path):
    """One task of 100 documents: the Baseline right on 80, RTN on 72 (10 documents only the Baseline got,
    2 only RTN). The bound inverts the one-sided test: the smallest d0 with delta - d0 <= z * se(d0), where
    z = z_0.95 and se(d0)^2 = max(s^2, |d0|(1 - |d0|)) / n. Here the floor binds, so d0 solves a quadratic."""
    import math

    from scipy.stats import norm

    from qexp.compare import build_report, load_study
    from qexp.compare.report import render
    from tests.study_store import accuracy_run, new_store

    uri, client, experiment = new_store(tmp_path)
    base = [1] * 70 + [1] * 10 + [0] * 2 + [0] * 18  # 80 right
    rtn = [1] * 70 + [0] * 10 + [1] * 2 + [0] * 18  # 72 right, 70 of them shared
    accuracy_run(client, experiment, "none", 0, {"arc_easy": base}, limit=100)
    accuracy_run(client, experiment, "rtn", 0, {"arc_easy": rtn}, limit=100)
    report = build_report(load_study(uri, "qexp"))

    n, delta, z = 100, -0.08, norm.ppf(0.95)  # one-sided 95%
    variance = (12 - n * delta**2) / (n - 1)
    # x = -d0 > 0 with x + delta = z * sqrt(x (1 - x) / n): (1 + z^2/n) x^2 + (2 delta - z^2/n) x + delta^2 = 0
    a, b, c = 1 + z**2 / n, 2 * delta - z**2 / n, delta**2
    x = (-b + math.sqrt(b * b - 4 * a * c)) / (2 * a)
    assert x * (1 - x) > variance  # the floor binds, as the docstring says
    expected = 1 - x / 0.80
    assert report.ranking.loc["RTN", "recovery_bound"] == pytest.approx(expected, abs=1e-4)
    assert abs(expected - 0.8294) < 1e-3  # by hand: x = 0.1365
    row = next(line for line in render(report, "markdown").splitlines() if line.startswith("| 2 ") and "RTN" in line)
    assert f"| {100 * expected:.1f} " in row  # the ranking prints that bound
