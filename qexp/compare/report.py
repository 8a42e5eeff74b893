"""The study's report, built once from a `Study`; as JSON here, as text or Markdown by `render`."""

from __future__ import annotations

import math

import pandas as pd

from .contents import Report
from .data import Study
from .stats import ALPHA
from .costs import cost_table, perplexity_table, size_table
from .paired import (calibration_comparison, deltas_vs_baseline, method_comparison, mmlu_categories, mmlu_subjects,
                     with_power)
from .power import Settings
from .ranking import average_tests, best_vs_others, ranking, recommendations, recovery_table
from .render import render, summary_text
from .scores import metric_for, repeats_table, scores, settings_warnings, summary_table
from .speed import speed_fronts, speed_recommendations, speed_table
from .stopped import sequential_table, sequential_task_table

__all__ = ["Report", "build_report", "render", "summary_text", "to_json"]


def build_report(study: Study, metric: str = "acc", overrides: dict[str, str] | None = None,
                 settings: Settings = Settings()) -> Report:
    tasks = study.tasks
    warnings = []
    if (study.runs["eval_data"] == "fixtures").any():
        labels = ", ".join(study.runs.index[study.runs["eval_data"] == "fixtures"])
        warnings.append(f"FIXTURE DATA: {labels} were evaluated on qexp's small fixture copies of the "
                        "datasets, not the real benchmarks. These scores say nothing about model quality.")
    warnings += settings_warnings(study)
    sequential, sequential_tasks = sequential_table(study), sequential_task_table(study)
    if len(sequential):
        per_task = (" and, for the tasks decided each on its own (eval.sequential.per_task), in \"Sequential "
                    "comparisons per task\"" if len(sequential_tasks) else "")
        warnings.append(f"SEQUENTIAL: {', '.join(sequential['label'])} stopped evaluating once decided against the "
                        "baseline (eval.sequential). Their verdicts, intervals and recovery bounds valid at the "
                        f"stopping time are in the table \"Sequential comparisons\"{per_task}; the other tables' "
                        "p-values, intervals and bounds treat the documents they used as a fixed sample, so for "
                        "these runs they are descriptive only.")
    summary = summary_table(study, tasks, metric, overrides)
    vs_baseline = with_power(study, deltas_vs_baseline(study, tasks, metric, overrides), settings)
    tests = average_tests(study, tasks, metric, overrides, settings)
    ranked = ranking(study, tasks, metric, overrides, tests, settings)
    rivals = with_power(study, best_vs_others(study, ranked, tasks, metric, overrides), settings)
    speed = speed_table(study)
    fronts = speed_fronts(study, summary, speed, tests)
    return Report(
        study=study,
        metrics={t: metric_for(study, t, metric, overrides) for t in tasks},
        scores=scores(study, tasks, metric, overrides),
        summary=summary,
        vs_baseline=vs_baseline,
        categories=with_power(study, mmlu_categories(study), settings),
        subjects=with_power(study, mmlu_subjects(study), settings),
        methods=with_power(study, method_comparison(study, tasks, metric, overrides), settings),
        calibration=with_power(study, calibration_comparison(study, tasks, metric, overrides), settings),
        average_tests=tests,
        ranking=ranked,
        recovery=recovery_table(study, vs_baseline, ranked),
        best_vs_others=rivals,
        recommendations=recommendations(study, ranked, tests, rivals, vs_baseline, settings)
        + speed_recommendations(study, ranked, speed, fronts),
        perplexity=perplexity_table(study),
        cost=cost_table(study),
        sizes=size_table(study, summary, tests),
        repeats=repeats_table(study, summary),
        speed=speed,
        speed_fronts=fronts,
        sequential=sequential,
        sequential_tasks=sequential_tasks,
        warnings=warnings,
        settings=settings,
    )


# ----------------------------------------------------------------------------- json
def _clean(value):
    if isinstance(value, float) and math.isnan(value):
        return None
    if hasattr(value, "item"):
        return _clean(value.item())
    return value


def to_json(report: Report) -> dict:
    study = report.study
    runs = []
    by_label: dict[str, list] = {}
    for r in report.scores.itertuples():
        by_label.setdefault(r.label, []).append(r)
    for label, run in study.runs.iterrows():
        mine = by_label.get(label, [])
        runs.append({
            "label": label, "run_id": run["run_id"], "method": run["method"], "calib_n": int(run["calib_n"]),
            "model": run["model"], "eval_data": run["eval_data"], "config_hash": run["config_hash"],
            "scores": {**{r.task: _clean(r.score) for r in mine},
                       "average": _clean(report.summary.loc[label, "average"])},
            "n_docs": {r.task: int(r.n) for r in mine},
            "ci95": {r.task: [_clean(r.ci_low), _clean(r.ci_high)] for r in mine},
        })
    comparisons = _records(report.comparisons)
    recovery = {}
    for r in report.recovery.itertuples():
        recovery.setdefault(r.label, {})[r.task] = {"recovery": _clean(r.recovery), "ci95": [_clean(r.ci_low),
                                                                                              _clean(r.ci_high)]}
    return {
        "metric": report.metrics,
        "alpha": ALPHA,
        "settings": {"power": report.settings.power, "difference": report.settings.difference,
                     "margin": report.settings.margin, "recovery": report.settings.recovery},
        "eval_data": sorted(set(study.runs["eval_data"])),
        "warnings": report.warnings,
        "notes": study.notes,
        "runs": runs,
        "comparisons": comparisons,
        "average_tests": _records(report.average_tests),
        "ranking": [{"label": label, **{k: _clean(v) for k, v in r.items()}, "rank": int(r["rank"])}
                    for label, r in report.ranking.iterrows()],
        "recovery": recovery,
        "recommendations": report.recommendations,
        "perplexity": _records(report.perplexity),
        "cost": {label: {k: _clean(v) for k, v in row.items()} for label, row in report.cost.iterrows()},
        "sizes": {label: {k: _clean(v) for k, v in row.items()} for label, row in report.sizes.iterrows()},
        "repeats": _records(report.repeats),
        "speed": {label: {k: _clean(v) for k, v in row.items()} for label, row in report.speed.iterrows()},
        "sequential": _records(report.sequential),
        "sequential_tasks": _records(report.sequential_tasks),
        "speed_fronts": {label: {k: _clean(v) for k, v in row.items()} for label, row in report.speed_fronts.iterrows()},
    }


def _records(frame: pd.DataFrame) -> list[dict]:
    """Rows as dicts of plain Python values, NaN as None (converted column-wise: large tables are long)."""
    names = list(frame.columns)  # plain strings: iterating a pandas Index per row is slow
    columns = [[None if missing else value for value, missing in zip(frame[c].tolist(), frame[c].isna().tolist())]
               for c in names]
    return [dict(zip(names, row)) for row in zip(*columns)]
