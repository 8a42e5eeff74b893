"""Speed and serving memory beside accuracy: each run's vLLM figures as ratios to the baseline's, with
their spread, and the Pareto fronts of accuracy against tokens per second and against memory.

A speed figure is the median of a run's timed repetitions, logged with their minimum and maximum.
The ratio of two runs' figures has the range [min_a / max_b, max_a / min_b]: a difference is called
one only when that range excludes 1, i.e. when no repetition of one run was as fast as the slowest
of the other. (Memory is one peak per run: its ratio is shown without a range.)
"""

from __future__ import annotations

import math

import pandas as pd

from ..contract import METRICS
from .costs import pareto_front, shown_better
from .data import Study

__all__ = ["batch_sizes", "same_path", "speed_table", "speed_fronts", "speed_ratio", "speed_missing", "speed_words",
           "speed_recommendations"]

def batch_sizes(study: Study) -> list[int]:
    """The batch sizes any run measured tokens per second at, smallest first."""
    return sorted({b for c in study.runs.columns if (b := METRICS.batch_of(str(c))) is not None})


def speed_ratio(study: Study, label: str, column: str) -> tuple[float, float, float]:
    """Metric `column` (a `speed/*` name of `qexp.contract.METRICS`) of run `label` over the baseline's:
    (ratio, low, high), NaN where either run lacks it. low/high: the range over repetitions (see the module's
    docstring), from the `_min` and `_max` figures logged beside a median."""
    runs, base = study.runs, study.baseline
    if base is None or column not in runs:
        return math.nan, math.nan, math.nan
    a, b = runs.loc[label], runs.loc[base]
    value = a[column] / b[column]
    low = a.get(f"{column}_min", math.nan) / b.get(f"{column}_max", math.nan)
    high = a.get(f"{column}_max", math.nan) / b.get(f"{column}_min", math.nan)
    return value, low, high


def _text(value) -> str:
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else str(value)


def same_path(run: pd.Series) -> bool:
    """Whether a run's accuracy and speed come from the same numeric path: evaluated in vLLM (eval.backend=vllm)
    on the path its speed was measured on. An accuracy from transformers never is: other kernels compute it."""
    backend, path = _text(run.get("eval_backend")), _text(run.get("eval_path"))
    return backend.startswith("vllm") and bool(path) and path == _text(run.get("speed_path"))


def _accuracy_from(run: pd.Series) -> str:
    backend, path = _text(run.get("eval_backend")), _text(run.get("eval_path"))
    return f"{backend or 'hf'}: {path}" if path else (backend or "hf (transformers)")


def speed_table(study: Study) -> pd.DataFrame:
    """One row per run: what it was measured with, its figures, and the ratios to the baseline.

    Columns: status, note, kernel, path, accuracy_from (what computed the accuracy: `qexp.eval_backend` and
    `qexp.eval_path`), same_path (accuracy and speed from one numeric path in one runtime), load_seconds,
    ttft_ms (+_min/_max), tpot_ms (+_min/_max),
    per batch size B: tps_b<B>, tps_b<B>_min, tps_b<B>_max, x_b<B>, x_b<B>_low, x_b<B>_high, differs_b<B>;
    memory_mb, x_memory. Empty when no run has a speed status (speed=none everywhere)."""
    runs = study.runs
    if "speed" not in runs or runs["speed"].isna().all():
        return pd.DataFrame()
    rows = []
    for label, run in runs.iterrows():
        row = {"label": label, "status": _text(run.get("speed")) or "not run", "note": _text(run.get("speed_note")),
               "kernel": _text(run.get("speed_kernel")), "path": _text(run.get("speed_path")),
               "accuracy_from": _accuracy_from(run), "same_path": same_path(run),
               "load_seconds": run.get(METRICS.SPEED_LOAD_SECONDS, math.nan)}
        for figure in ("ttft_ms", "tpot_ms"):
            for end in ("", "min", "max"):
                row[f"{figure}_{end}".rstrip("_")] = run.get(METRICS.speed(figure, end), math.nan)
        for b in batch_sizes(study):
            figure = METRICS.tokens_per_second(b, prefix=False)
            for end in ("", "min", "max"):
                row[f"tps_b{b}_{end}".rstrip("_")] = run.get(METRICS.speed(figure, end), math.nan)
            value, low, high = speed_ratio(study, label, METRICS.tokens_per_second(b))
            row.update({f"x_b{b}": value, f"x_b{b}_low": low, f"x_b{b}_high": high,
                        f"differs_b{b}": bool(low > 1 or high < 1)})
        row["memory_mb"] = run.get(METRICS.SPEED_PEAK_MEMORY_MB, math.nan)
        row["x_memory"] = speed_ratio(study, label, METRICS.SPEED_PEAK_MEMORY_MB)[0]
        rows.append(row)
    return pd.DataFrame(rows).set_index("label")


def speed_fronts(study: Study, summary: pd.DataFrame, table: pd.DataFrame, tests: pd.DataFrame | None = None
                 ) -> pd.DataFrame:
    """Average accuracy against tokens per second at each batch size and against peak memory: True where no
    other run beats it, i.e. is better on one and worse on neither. With `tests` (the average's Holm family,
    `ranking.average_tests`), a run is more accurate only where the test showed it; a run is faster only
    beyond the repetitions' spread (its slowest repetition faster than the other's fastest)."""
    if not len(table):
        return pd.DataFrame()
    shown = None if tests is None else shown_better(tests)
    frame = pd.DataFrame({"average": summary["average"]}, index=study.labels)
    for b in batch_sizes(study):
        frame[f"tps_b{b}"] = table[f"tps_b{b}"]
        # pareto_front's x is smaller-is-better: slowness, whose range runs from -max to -min
        frame["_slowness"], frame["_low"], frame["_high"] = (-table[f"tps_b{b}"], -table[f"tps_b{b}_max"],
                                                             -table[f"tps_b{b}_min"])
        frame[f"front_b{b}"] = pareto_front(frame, "_slowness", "average", maximize_y=True, y_shown=shown,
                                            x_spread=("_low", "_high"))
    frame["memory_mb"] = table["memory_mb"]
    frame["front_memory"] = pareto_front(frame, "memory_mb", "average", maximize_y=True, y_shown=shown)
    return frame.drop(columns=["_slowness", "_low", "_high"], errors="ignore")


def speed_missing(table: pd.DataFrame) -> list[str]:
    """`FP8 (skipped: ...)`: each run whose speed figures are missing, with the reason."""
    if not len(table):
        return []
    missing = table[~table["status"].isin(["measured", "reused"])]
    return [f"{label} ({r.status}{': ' + r.note if r.note else ''})" for label, r in missing.iterrows()]


def _times(value: float) -> str:
    return f"{value:.2f}×"


def speed_words(table: pd.DataFrame, label: str, b: int) -> str:
    """`runs at 0.70× its speed at batch 16 [0.66×, 0.74×]`, or the same speed within the spread."""
    row = table.loc[label]
    value, low, high = row[f"x_b{b}"], row[f"x_b{b}_low"], row[f"x_b{b}_high"]
    if pd.isna(value):
        return f"has no speed figure at batch {b}"
    spread = f"[{_times(low)}, {_times(high)}]" if not (pd.isna(low) or pd.isna(high)) else "(no spread logged)"
    if row[f"differs_b{b}"]:
        return f"runs at {_times(value)} its speed at batch {b} {spread}"
    return f"is as fast as it at batch {b} within the spread of the repetitions ({_times(value)} {spread})"


def speed_recommendations(study: Study, ranked: pd.DataFrame, table: pd.DataFrame, fronts: pd.DataFrame) -> list[str]:
    """What speed and memory add to the choice: each quantized run's accuracy kept against its speed, the fronts,
    and which runs lack figures. Speed differences within the repetitions' spread are called no difference."""
    if not len(table):
        return []
    lines = []
    base = study.baseline
    sizes = batch_sizes(study)
    measured = [label for label in ranked.index if label != base and table.loc[label, "status"] in ("measured", "reused")
                and not pd.isna(ranked.loc[label, "average"])]
    if base is not None and table.loc[base, "status"] in ("measured", "reused"):
        base_average = ranked.loc[base, "average"]
        for label in measured:
            kept = ranked.loc[label, "average"] / base_average if base_average else math.nan
            bound = ranked.loc[label, "recovery_bound"] if "recovery_bound" in ranked else math.nan
            at_least = "" if pd.isna(bound) else f" (at least {bound:.0%}, one-sided 95% bound)"
            memory = table.loc[label, "x_memory"]
            speeds = " and ".join(speed_words(table, label, b) for b in sizes)
            paths = "" if table.loc[label, "same_path"] and table.loc[base, "same_path"] else (
                "; its accuracy and its speed come from different numeric paths (the speed table says which)")
            lines.append(f"{label} keeps {kept:.0%} of the Baseline's average accuracy{at_least} and {speeds}"
                         + ("" if pd.isna(memory) else f"; peak serving memory {_times(memory)} the Baseline's")
                         + paths + ".")
    elif base is not None:
        lines.append("The Baseline has no speed figures, so no run's speed is compared with it.")
    for b in sizes:
        front = list(fronts.index[fronts.get(f"front_b{b}", pd.Series(False, index=fronts.index)).fillna(False)])
        if front:
            lines.append(f"Accuracy against tokens per second at batch {b}: no run is shown better than "
                         f"{', '.join(front)} on one and worse on neither (the front).")
    missing = speed_missing(table)
    if missing:
        lines.append("Speed not measured for " + "; ".join(missing) + ".")
    return lines
