"""The speed phase: a checkpoint's speed and serving memory, measured in vLLM, the runtime that serves
llmcompressor's compressed-tensors checkpoints.

- `plan.py`: the `speed` settings checked before anything loads, and the measurement's identity;
- `environment.py`: vLLM in an environment of its own under qexp's cache, built once and reused;
- `bench.py`: the measurement, run by that environment's Python (qexp is not importable there);
- `measure.py`: runs it, watches its processes' memory, reads the kernel vLLM chose, summarises;
- `device.py`: what the figures were measured on (CPU model and instruction sets, or GPU name).

`measure_checkpoint` is what a run calls. It never fails the run: vLLM missing, crashing or
refusing the checkpoint leaves the speed figures missing (not zero), with the reason in one line,
and the run keeps its accuracy.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from .. import progress
from ..contract import METRICS
from ..files import write_atomic
from .device import label as device_label
from .environment import SpeedEnvError, interpreter
from .measure import SpeedError, measure, metric_names, numeric_path, speed_key
from .plan import SpeedPlan, plan_speed

__all__ = ["SpeedPlan", "SpeedOutcome", "plan_speed", "measure_checkpoint", "metric_names", "quantization_config"]

log = logging.getLogger("qexp")


@dataclass
class SpeedOutcome:
    status: str  # measured | reused (kept from an earlier run) | skipped (no fast kernel here) | failed
    metrics: dict[str, float] = field(default_factory=dict)  # speed/*, and perf/speed_seconds when measured
    labels: dict[str, str] = field(default_factory=dict)  # device, runtime, kernel, path
    note: str | None = None  # why the figures are missing, in one line

    @property
    def line(self) -> str:
        """The run summary's part: `speed 96.1 tok/s at batch 1, 412 at batch 16` or why there is none."""
        if self.note:
            return f"speed {self.status}: {self.note}"
        rates = sorted((b, v) for k, v in self.metrics.items() if (b := METRICS.batch_of(k)) is not None)
        text = ", ".join(f"{v:,.1f} tok/s at batch {b}" for b, v in rates)
        return f"speed {text}" + (" (kept from an earlier run)" if self.status == "reused" else "")


def measure_checkpoint(checkpoint: str, weights: list, plan: SpeedPlan, *, cache_dir: Path, workdir: Path,
                       log_path: Path, job: str, show_progress: bool) -> SpeedOutcome:
    """Measure `checkpoint` (whose weight files are `weights`: name, size, mtime) as `plan` says, or reuse the
    measurement kept for the same weights and plan; the outcome says which, or why there is none."""
    labels = {"device": device_label(plan.device)}
    if plan.skip:
        return SpeedOutcome("skipped", labels=labels, note=plan.skip)
    kept = Path(cache_dir) / "speed" / f"{speed_key(weights, plan)}.json"
    if kept.is_file():
        saved = json.loads(kept.read_text())
        log.info("%s: reusing the speed measurement of these weights with these settings (%s)", job, kept)
        return SpeedOutcome("reused", saved["metrics"], saved["labels"])
    started = time.perf_counter()
    try:
        python = interpreter(plan.python, plan.device["kind"], cache_dir, plan.version)
        if python.built_seconds is not None:  # once per environment: not part of this run's speed phase
            labels["env_build_seconds"] = f"{python.built_seconds:.0f}"
            started += python.built_seconds
        log.info("%s: measuring speed and memory in %s (batch sizes %s, %d+%d tokens, %d repetitions)", job,
                 python.runtime, plan.settings["batch_sizes"], plan.settings["prompt_tokens"],
                 plan.settings["output_tokens"], plan.settings["repetitions"])
        with progress.phase(job, "measuring speed", "passes", show_progress) as live:
            report = (lambda done, total: live.report("timed passes", done, total)) if live else None
            result = measure(checkpoint, plan, python, workdir, log_path, report)
    except (SpeedEnvError, SpeedError) as err:
        log.warning("%s: speed not measured: %s", job, err)
        return SpeedOutcome("failed", labels=labels, note=str(err))
    quantization = quantization_config(checkpoint)
    labels.update({"runtime": result.runtime,
                   "kernel": ", ".join(result.kernels) or ("dense" if not quantization else "not reported by vLLM"),
                   "path": numeric_path(quantization, result.kernels, plan)})
    metrics = {**result.metrics, METRICS.SPEED_SECONDS: time.perf_counter() - started}
    shared = {k: v for k, v in labels.items() if k != "env_build_seconds"}  # the build was this run's alone
    write_atomic(kept, json.dumps({"metrics": metrics, "labels": shared, "extra": result.extra}))
    return SpeedOutcome("measured", metrics, labels)


def quantization_config(checkpoint: str) -> dict | None:
    """The checkpoint's `quantization_config` (compressed-tensors'), None for a dense model."""
    config = Path(checkpoint) / "config.json"
    try:
        return json.loads(config.read_text()).get("quantization_config")
    except (OSError, ValueError):
        return None
