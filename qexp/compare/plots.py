"""Figures a person would rather look at than read; each takes a `Report` and returns a Figure."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from ..identity import calibrated, method_name
from .contents import Report
from .scores import display_name

__all__ = ["plot_scores", "plot_category_deltas", "plot_calibration", "plot_accuracy_vs_size", "plot_accuracy_vs_speed",
           "save_plots"]


def _title(report: Report, text: str) -> str:
    fixtures = (report.study.runs["eval_data"] == "fixtures").any()
    return text + ("  [FIXTURE DATA: scores mean nothing]" if fixtures else "")


def plot_scores(report: Report):
    """Per-task scores with 95% confidence intervals, one bar per configuration."""
    study, long = report.study, report.scores
    tasks, labels = study.tasks, study.labels
    fig, ax = plt.subplots(figsize=(max(6, 1.8 * len(tasks) + 2), 4.5))
    width = 0.8 / max(1, len(labels))
    for i, label in enumerate(labels):
        part = long[long.label == label].set_index("task").reindex(tasks)
        x = np.arange(len(tasks)) + (i - (len(labels) - 1) / 2) * width
        err = np.vstack([part.score - part.ci_low, part.ci_high - part.score]) * 100
        ax.bar(x, part.score * 100, width, yerr=err, capsize=3, label=label)
    ax.set_xticks(np.arange(len(tasks)), [f"{display_name(t)}\n({report.metrics[t]})" for t in tasks])
    ax.set_ylabel("score (%) with 95% CI")
    ax.set_ylim(0, 100)
    ax.set_title(_title(report, "Scores per task"))
    ax.legend(ncol=min(5, len(labels)), fontsize="small")
    fig.tight_layout()
    return fig


def plot_category_deltas(report: Report):
    """Δ vs Baseline per MMLU category (points); hatched bars are not significant."""
    frame = report.categories
    fig, ax = plt.subplots(figsize=(8, 4.5))
    if not len(frame):
        ax.text(0.5, 0.5, "no MMLU categories or no Baseline", ha="center", va="center")
        return fig
    categories = list(dict.fromkeys(frame.task))
    labels = list(dict.fromkeys(frame.a))
    width = 0.8 / len(labels)
    for i, label in enumerate(labels):
        part = frame[frame.a == label].set_index("task").reindex(categories)
        x = np.arange(len(categories)) + (i - (len(labels) - 1) / 2) * width
        bars = ax.bar(x, part.delta * 100, width, label=label)
        for bar, significant in zip(bars, part.significant):
            if not significant:
                bar.set_hatch("//")
                bar.set_alpha(0.6)
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_xticks(np.arange(len(categories)), [display_name(c) for c in categories])
    ax.set_ylabel("Δ vs Baseline (points)")
    ax.set_title(_title(report, "MMLU categories vs Baseline (hatched: not significant)"))
    ax.legend(fontsize="small")
    fig.tight_layout()
    return fig


def plot_calibration(report: Report):
    """Accuracy against calibration size, one line per method, one panel per task and the average."""
    study, long = report.study, report.scores
    quantized = study.runs[study.runs.method != "none"]
    panels = study.tasks + ["average"]
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.6), squeeze=False)
    for ax, task in zip(axes[0], panels):
        for method, runs in quantized.groupby("method"):
            runs = runs.sort_values("calib_n")
            name = method_name(method)
            if not calibrated(method):  # data-free: one score whatever the calibration size
                for label in runs.index:
                    ax.axhline(report.summary.loc[label, task] * 100, linestyle=":", color="black", label=label)
                continue
            if task == "average":
                y = report.summary.loc[runs.index, "average"] * 100
                ax.plot(runs.calib_n, y, marker="o", label=name)
                continue
            part = long[(long.task == task)].set_index("label").loc[runs.index]
            ax.errorbar(runs.calib_n, part.score * 100,
                        yerr=np.vstack([part.score - part.ci_low, part.ci_high - part.score]) * 100,
                        marker="o", capsize=3, label=name)
        if study.baseline:
            base = report.summary.loc[study.baseline, task] * 100
            ax.axhline(base, color="gray", linestyle="--", label="Baseline")
        ax.set_title(display_name(task))
        ax.set_xlabel("calibration samples")
    axes[0][0].set_ylabel("score (%)")
    axes[0][-1].legend(fontsize="small")
    fig.suptitle(_title(report, "Score vs calibration size"))
    fig.tight_layout()
    return fig


def _accuracy_error(report: Report, label: str) -> list[list[float]] | None:
    """Error bars (in points) for a run's average: the Holm-adjusted interval of its difference to the baseline,
    the interval the ranking prints; none for the baseline itself or without one."""
    ranking = report.ranking
    if "vs_baseline_adj_low" not in ranking or label == report.study.baseline:
        return None
    row = ranking.loc[label]
    if pd.isna(row.vs_baseline_adj_low):
        return None
    return [[100 * (row.vs_baseline - row.vs_baseline_adj_low)], [100 * (row.vs_baseline_adj_high - row.vs_baseline)]]


def plot_accuracy_vs_size(report: Report):
    """Average accuracy (Holm-adjusted interval of the difference to the baseline, where there is one) and
    held-out bits per byte against checkpoint size; runs on the Pareto front are filled, the others hollow."""
    sizes = report.sizes
    panels = [("average", "average accuracy (%)", "accuracy_front", 100)]
    if "bits_per_byte" in sizes:
        panels.append(("bits_per_byte", "held-out bits per byte (lower is better)", "perplexity_front", 1))
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4.2), squeeze=False)
    for ax, (column, ylabel, front, scale) in zip(axes[0], panels):
        for label, r in sizes.iterrows():
            if pd.isna(r.checkpoint_mb) or pd.isna(r[column]):
                continue
            err = _accuracy_error(report, label) if column == "average" else None
            ax.errorbar(r.checkpoint_mb, r[column] * scale, yerr=err, marker="o", capsize=3, linestyle="none",
                        markerfacecolor=None if r[front] else "white", label=label)
            ax.annotate(label, (r.checkpoint_mb, r[column] * scale), textcoords="offset points", xytext=(5, 5),
                        fontsize="small")
        on_front = sizes[sizes[front]].sort_values("checkpoint_mb")
        ax.plot(on_front.checkpoint_mb, on_front[column] * scale, color="gray", linewidth=0.8, zorder=0)
        ax.set_xlabel("checkpoint size (MB)")
        ax.set_ylabel(ylabel)
    fig.suptitle(_title(report, "Accuracy against size (filled: Pareto front)"))
    fig.tight_layout()
    return fig


def plot_accuracy_vs_speed(report: Report):
    """Average accuracy against vLLM's output tokens per second at each batch size, and against peak serving
    memory; horizontal bars span the repetitions' range, vertical ones the accuracy's Holm-adjusted interval
    against the baseline (`_accuracy_error`); runs on the front are filled."""
    fronts, table = report.speed_fronts, report.speed
    sizes = [int(c.split("_b")[1]) for c in fronts.columns if c.startswith("tps_b")] if len(fronts) else []
    panels = [(f"tps_b{b}", f"output tokens/s at batch {b} (higher is faster)", f"front_b{b}") for b in sizes]
    panels.append(("memory_mb", "peak serving memory (MB)", "front_memory"))
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4.2), squeeze=False)
    for ax, (column, xlabel, front) in zip(axes[0], panels):
        for label, r in fronts.iterrows():
            if pd.isna(r[column]) or pd.isna(r.average):
                continue
            xerr = None
            if column != "memory_mb":
                xerr = [[r[column] - table.loc[label, f"{column}_min"]], [table.loc[label, f"{column}_max"] - r[column]]]
            ax.errorbar(r[column], r.average * 100, xerr=xerr, yerr=_accuracy_error(report, label), marker="o",
                        capsize=3, linestyle="none",
                        markerfacecolor=None if r[front] else "white", label=label)
            ax.annotate(label, (r[column], r.average * 100), textcoords="offset points", xytext=(5, 5),
                        fontsize="small")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("average accuracy (%)")
    fig.suptitle(_title(report, "Accuracy against speed and memory in vLLM (filled: Pareto front)"))
    fig.tight_layout()
    return fig


def save_plots(report: Report, folder: str | Path) -> list[Path]:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, draw in (("scores", plot_scores), ("mmlu_category_deltas", plot_category_deltas),
                       ("calibration", plot_calibration), ("accuracy_vs_size", plot_accuracy_vs_size),
                       ("accuracy_vs_speed", plot_accuracy_vs_speed)):
        if name == "accuracy_vs_speed" and not len(report.speed_fronts):
            continue  # no run measured speed (speed=none)
        fig = draw(report)
        path = folder / f"{name}.png"
        fig.savefig(path, dpi=120)
        plt.close(fig)
        paths.append(path)
    return paths
