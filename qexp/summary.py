"""The line a person reads when a run finishes: its average (and the change against the baseline),
held-out bits per byte, size, compression and each phase's time. The full metrics are in MLflow."""

from __future__ import annotations

import logging

from . import heldout
from .compare.stats import ALPHA
from .contract import METRICS, TAGS
from .spec import RunSpec
from .speed import SpeedOutcome
from .tracking import Store

__all__ = ["log_summary"]

log = logging.getLogger("qexp")


def _average(spec: RunSpec, metrics: dict[str, float]) -> float | None:
    """The unweighted average accuracy over the requested tasks that report one (as the report's)."""
    scores = [metrics[METRICS.task(t)] for t in spec.cfg.eval.tasks if METRICS.task(t) in metrics]
    return sum(scores) / len(scores) if scores else None


def log_summary(spec: RunSpec, metrics: dict[str, float], store: Store, reused: bool,
                speed: SpeedOutcome | None = None) -> None:
    """One line a person reads: average (and its change against the baseline), held-out bits per
    byte, size and compression, and each phase's time. The full metrics are in MLflow and the log."""
    parts = []
    average = _average(spec, metrics)
    if average is not None:
        part = f"average {100 * average:.1f}%"
        if not spec.is_baseline:
            base = _baseline_metrics(spec, store)
            base_average = _average(spec, base) if base else None
            if METRICS.SEQUENTIAL_DELTA in metrics:  # paired, on the documents the run used
                level = 100 * (1 - ALPHA / metrics.get(METRICS.SEQUENTIAL_COMPARISONS, 1))
                part += (f" ({metrics[METRICS.SEQUENTIAL_DELTA]:+.1f} points vs baseline on the same documents, "
                         f"repeated {level:.4g}% interval [{metrics[METRICS.SEQUENTIAL_LOW]:+.1f}, "
                         f"{metrics[METRICS.SEQUENTIAL_HIGH]:+.1f}], after {metrics[METRICS.SEQUENTIAL_DOCS]:,.0f} of "
                         f"{metrics[METRICS.SEQUENTIAL_BUDGET]:,.0f} documents)")
            elif base_average is not None:
                part += f" ({100 * (average - base_average):+.1f} points vs baseline)"
        parts.append(part)
    bits = METRICS.task(heldout.TASK, "bits_per_byte")
    if bits in metrics:
        parts.append(f"held-out {metrics[bits]:.4f} bits/byte")
    if METRICS.CHECKPOINT_MB in metrics:
        part = f"checkpoint {metrics[METRICS.CHECKPOINT_MB]:,.1f} MB"
        if not spec.is_baseline and METRICS.COMPRESSION_RATIO in metrics:
            part += f" ({metrics[METRICS.COMPRESSION_RATIO]:.1f}x smaller)"
        parts.append(part)
    if METRICS.QUANT_SECONDS in metrics:
        took = _duration(metrics[METRICS.QUANT_SECONDS])
        parts.append(f"checkpoint reused (quantized earlier in {took})" if reused else f"quantized in {took}")
    if METRICS.EVAL_SECONDS in metrics:
        parts.append(f"evaluated in {_duration(metrics[METRICS.EVAL_SECONDS])}")
    if speed is not None:
        parts.append(speed.line)
    log.info("%s: finished: %s", spec.run_name, ", ".join(parts))


def _baseline_metrics(spec: RunSpec, store: Store) -> dict[str, float] | None:
    """The finished baseline's metrics for this evaluation (same model, same eval hash)."""
    try:
        found = store.find_runs({TAGS.QUANT: "none", TAGS.MODEL: str(spec.cfg.model.name),
                                 TAGS.EVAL_HASH: spec.eval_hash})
    except Exception:  # the line is a courtesy: a store that cannot answer now must not fail the run
        return None
    return found[0].metrics if found else None


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"
