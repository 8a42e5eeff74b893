"""One job: prepare, claim or reuse, quantize, evaluate, measure, log.

`run(cfg)` is everything `python -m qexp` does for one job; it knows nothing of Hydra, so tests
and notebooks call it with a composed config. It reaches llmcompressor, lm-eval and MLflow only
through `quantization`, `evaluation` and `tracking`; what a run logs is `records`, and the baseline
it is compared with is settled by `baseline`.
"""

from __future__ import annotations

import json
import logging
import time
import traceback
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import DictConfig

from . import baseline, progress, quantization, records, shuffled, stopping
from .console import library_output
from .contract import ARTIFACTS, METRICS, TAGS
from .errors import QexpError
from .evaluation import EvalResult, evaluate
from .files import write_atomic
from .identity import responses_key
from .models import WEIGHT_SUFFIXES
from .perf import PhaseMemory, size_metrics
from .signals import raise_if_interrupted
from .spec import RunSpec, prepare
from .speed import SpeedOutcome, measure_checkpoint
from .summary import log_summary
from .tracking import Run, Store

__all__ = ["RunResult", "run", "execute"]

log = logging.getLogger("qexp")


@dataclass
class RunResult:
    name: str
    run_id: str | None
    status: str  # FINISHED | FAILED | KILLED | SKIPPED
    config_hash: str
    metrics: dict[str, float] = field(default_factory=dict)
    checkpoint: Path | None = None


def run(cfg: DictConfig, sweep_id: str | None = None, log_file: Path | None = None) -> RunResult:
    """Validate `cfg`, make sure the baseline it is compared with exists, then run it (or reuse a finished run)."""
    try:
        spec = prepare(cfg)
        store = Store.open(spec.cfg.tracking.uri, spec.cfg.tracking.experiment)
    except QexpError as err:
        err.refused = True  # nothing has started: the fix is a setting (the data, the store), not a rerun
        raise
    store.wait_out_outages(spec.cfg.tracking.outage_seconds)  # from here on, the store may restart
    sweep_id = sweep_id or uuid.uuid4().hex[:12]
    base = None
    if not spec.is_baseline:
        # A sequential run needs the baseline chunk by chunk, not whole: it evaluates what it needs itself
        # rather than wait for another job's baseline run (qexp.stopping).
        base = baseline.spec_for(spec)
        claimed = baseline.claim(spec, store, sweep_id, base, wait=not spec.sequential)
        if claimed:
            execute(base, store, sweep_id, log_file, run=claimed)
    baseline.reap(spec, store)
    return _previous(spec, store) or execute(spec, store, sweep_id, log_file, base=base)


def _previous(spec: RunSpec, store: Store) -> RunResult | None:
    """A finished (or live) run of the same configuration makes this one unnecessary, unless force=true."""
    if spec.cfg.force:
        return None
    finished = store.done_runs(spec.config_hash)
    if finished:
        why = "" if spec.is_baseline or spec.calibrated else f" (data-free: calib.n={spec.cfg.calib.n} does not apply)"
        log.info("%s: skipped%s, finished run %s has the same config_hash %s (force=true re-runs it)",
                 spec.run_name, why, finished[0].run_id, spec.config_hash)
        return RunResult(spec.run_name, finished[0].run_id, "SKIPPED", spec.config_hash, finished[0].metrics)
    running = store.running_runs(spec.config_hash)
    if running:
        log.info("%s: skipped, run %s with the same config_hash is running (heartbeat alive)",
                 spec.run_name, running[0].run_id)
        return RunResult(spec.run_name, running[0].run_id, "SKIPPED", spec.config_hash)
    return None


# ----------------------------------------------------------------------------- one run
def execute(spec: RunSpec, store: Store, sweep_id: str, log_file: Path | None = None, run: Run | None = None,
            base: RunSpec | None = None) -> RunResult:
    """Run one validated spec as one MLflow run (`run`, or a new one), which ends FINISHED, FAILED or KILLED.
    `base`: the baseline it is compared with (a sequential evaluation stops once that is decided)."""
    status, killed_reason = "FAILED", None
    libraries_log = spec.output_dir / "libraries.log"
    memory = PhaseMemory.for_device(spec.device)
    run = run or store.start_run(spec.run_name, records.run_tags(spec, store, sweep_id))
    try:  # from here on, however the job ends (a signal included), the run ends with it
        log.info("%s: MLflow run %s (config_hash %s)", spec.run_name, run.run_id, spec.config_hash)
        spec.output_dir.mkdir(parents=True, exist_ok=True)
        with run.monitor(spec.cfg.tracking.heartbeat_seconds, spec.cfg.tracking.system_metrics_seconds), \
                library_output(libraries_log, spec.cfg.verbose):
            records.log_inputs(spec, run)
            checkpoint, perf, reused = _checkpoint(spec, run, memory)
            raise_if_interrupted()  # a signal a library swallowed while it quantized
            kept = _kept_evaluation(spec, checkpoint)
            evaluation, perf[METRICS.EVAL_SECONDS], decision = _evaluate(spec, checkpoint, memory, kept, base)
            raise_if_interrupted()
            speed = _measure_speed(spec, checkpoint)
            raise_if_interrupted()
            metrics = records.log_evaluation(run, evaluation)
            if decision is not None:
                metrics.update(records.log_sequential(run, decision))
            metrics.update({**perf, **memory.metrics(), **size_metrics(checkpoint, spec.model_path, spec.is_baseline),
                            **(speed.metrics if speed else {})})
            run.log_metrics(metrics)
            for key, value in {**records.eval_tags(spec, checkpoint, evaluation), **records.speed_tags(speed)}.items():
                run.set_tag(key, value)
            records.log_checkpoint(spec, run, checkpoint)
        kept.unlink(missing_ok=True)  # logged: the store has it now
        status = "FINISHED"
        log_summary(spec, metrics, store, reused, speed)
        return RunResult(spec.run_name, run.run_id, status, spec.config_hash, metrics,
                         None if spec.is_baseline else checkpoint)
    except KeyboardInterrupt as err:  # Ctrl-C, or a signal turned into signals.Interrupted by the entry point
        status, killed_reason = "KILLED", str(err) or "interrupted (Ctrl-C)"
        raise
    except BaseException:
        run.log_text(traceback.format_exc(), ARTIFACTS.ERROR)
        raise
    finally:
        try:
            for path in (log_file, libraries_log, _speed_log(spec), _served_log(spec)):
                if path and Path(path).is_file():
                    run.log_file_as_now(Path(path), ARTIFACTS.LOGS)
        finally:
            run.end(status, killed_reason)


def _checkpoint(spec: RunSpec, run: Run, memory: PhaseMemory) -> tuple[Path, dict[str, float], bool]:
    """What to evaluate: the model itself for the baseline, else the configuration's checkpoint,
    reused when an earlier attempt left it complete, quantized now (the `quant` phase) otherwise."""
    if spec.is_baseline:
        return Path(spec.model_path), {}, False
    cfg = spec.cfg
    found = None if cfg.force else quantization.complete_checkpoint(spec.checkpoint)
    if found:
        log.info("%s: reusing the complete checkpoint %s (quantized earlier in %.0f s)", spec.run_name,
                 found.path, found.quant_seconds)
        run.set_tag(TAGS.CHECKPOINT_REUSED, "true")
    else:
        data = (f"{len(spec.calibration)} calibration samples (<= {cfg.calib.max_seq_length} tokens each)"
                if spec.calibrated else "no calibration data")
        log.info("%s: quantizing %s with %s into %s", spec.run_name, spec.model_path, data, spec.checkpoint)
        with memory.phase("quant"), progress.phase(spec.run_name, "quantizing", "subgraphs", not cfg.verbose):
            found = quantization.quantize(spec.model_path, spec.calibration, cfg.quant, dtype=cfg.model.dtype,
                                          max_seq_length=cfg.calib.max_seq_length, out=spec.checkpoint)
    if (found.path / ARTIFACTS.RECIPE).is_file():
        run.log_path(found.path / ARTIFACTS.RECIPE)
    return found.path, {METRICS.QUANT_SECONDS: found.quant_seconds}, found.reused


def _kept_evaluation(spec: RunSpec, checkpoint: Path) -> Path:
    """Where a finished evaluation waits until the store has it: a job that evaluated but could not log
    (its store away past tracking.outage_seconds) leaves it there, and the rerun logs it instead of
    evaluating again. Keyed like the responses cache (the evaluated weight files) plus the evaluation
    settings."""
    responses = _responses(spec, checkpoint)
    return responses.with_name(f"{responses.name}.{spec.eval_hash}.evaluation.json")


def _responses(spec: RunSpec, checkpoint: Path) -> Path:
    return spec.cache_dir / "lm_eval_responses" / responses_key(spec.identity, _weight_files(checkpoint))


def _evaluate(spec: RunSpec, checkpoint: Path, memory: PhaseMemory, kept: Path, base: RunSpec | None = None
              ) -> tuple[EvalResult, float, stopping.Decision | None]:
    """lm-eval on the checkpoint (the `eval` phase), or the evaluation an earlier attempt finished and
    kept; returns it, its seconds and, for a sequential evaluation, how it ended."""
    cfg = spec.cfg
    if kept.is_file():
        saved = json.loads(kept.read_text())
        log.info("%s: using the evaluation an earlier attempt finished (%.0f s) but could not log, from %s",
                 spec.run_name, saved["seconds"], kept)
        memory.phases["eval"] = saved["memory"]
        decision = saved.get("decision") and stopping.Decision.from_record(saved["decision"])
        return EvalResult(saved["results"], saved["samples"], saved.get("kernels", [])), saved["seconds"], decision
    log.info("%s: evaluating %s on %s (%s data, %s)", spec.run_name, checkpoint, list(cfg.eval.tasks),
             spec.plan.eval_data, f"limit {cfg.eval.limit}" if cfg.eval.order == "dataset" else
             f"{cfg.eval.limit} shuffled documents per task" + (f" in {cfg.eval.sequential.looks} looks"
                                                               if spec.sequential else ""))
    started = time.perf_counter()
    decision = None
    with memory.phase("eval"):
        if cfg.eval.order == "shuffled":
            evaluation, decision = shuffled.evaluate_shuffled(
                spec, _model(spec, checkpoint), _model(base, Path(base.model_path)) if base else None)
        else:
            with progress.phase(spec.run_name, "evaluating", "requests", not cfg.verbose) as live:
                evaluation = evaluate(
                    checkpoint, spec.plan, dtype=cfg.eval.dtype, device=spec.device, num_fewshot=cfg.eval.num_fewshot,
                    limit=cfg.eval.limit, batch_size=cfg.eval.batch_size,  # set per device
                    seed=cfg.seed, cache_dir=spec.cache_dir, responses=_responses(spec, checkpoint),
                    served=spec.served, log_path=_served_log(spec), on_bar=live.report if live else None)
    seconds = time.perf_counter() - started
    if evaluation.served_peak_mb:  # vLLM's processes, beside the job's own peak
        memory.phases["eval"]["served_peak_mb"] = evaluation.served_peak_mb
    write_atomic(kept, json.dumps({"results": evaluation.results, "samples": evaluation.samples,
                                   "kernels": evaluation.kernels, "seconds": seconds,
                                   "memory": memory.phases["eval"], "decision": decision and decision.record()}))
    return evaluation, seconds, decision


def _model(spec: RunSpec, checkpoint: Path) -> shuffled.Model:
    """A checkpoint with its answers cache and the folder of its chunks for these evaluation settings."""
    responses = _responses(spec, checkpoint)
    return shuffled.Model(checkpoint, responses, spec.cache_dir / "sequential" / responses.name / spec.eval_hash)


def _speed_log(spec: RunSpec) -> Path:
    return spec.output_dir / "speed.log"


def _served_log(spec: RunSpec) -> Path:
    """vLLM's and lm-eval's output while evaluating in vLLM (eval.backend=vllm)."""
    return spec.output_dir / "vllm_eval.log"


def _measure_speed(spec: RunSpec, checkpoint: Path) -> SpeedOutcome | None:
    """The `speed` phase: the checkpoint served by vLLM and timed (speed=vllm), or the measurement kept for
    the same weights and settings. Never fails the run: missing figures come with the reason."""
    if spec.speed is None:
        return None
    return measure_checkpoint(str(checkpoint), [str(checkpoint), _weight_files(checkpoint)], spec.speed,
                              cache_dir=spec.cache_dir, workdir=spec.output_dir / "speed", log_path=_speed_log(spec),
                              job=spec.run_name, show_progress=not spec.cfg.verbose)


def _weight_files(checkpoint: Path) -> list[tuple[str, int, int]]:
    """Name, size and modification time of each weight file of a local checkpoint (none for a hub id)."""
    folder = Path(checkpoint)
    if not folder.is_dir():
        return []
    return sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in folder.iterdir()
                  if p.is_file() and p.name.endswith(WEIGHT_SUFFIXES))
