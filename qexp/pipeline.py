"""One run: validate, make sure a baseline exists, quantize, evaluate, log.

`run(cfg)` is everything `python -m qexp` does for one job; it knows nothing of Hydra,
so tests and notebooks call it with a composed config.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import socket
import time
import traceback
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from omegaconf import DictConfig, OmegaConf

from . import calibration, tracking
from .config import RunSpec, baseline_config, flatten, prepare
from .evaluation import evaluate
from .perf import PeakMemory, weights_mb
from .quantization import CHECKPOINT_MARKER, is_complete, quantize
from .tracking import TAGS

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
    client = tracking.connect(spec.cfg.tracking.uri)
    experiment_id = tracking.ensure_experiment(client, spec.cfg.tracking.experiment)
    sweep_id = sweep_id or uuid.uuid4().hex[:12]
    if not spec.is_baseline:
        _ensure_baseline(spec, client, experiment_id, sweep_id, log_file)
    _reap(spec, client, experiment_id)
    existing = tracking.find_runs(client, experiment_id, {TAGS.CONFIG_HASH: spec.config_hash})
    running = tracking.find_runs(client, experiment_id, {TAGS.CONFIG_HASH: spec.config_hash}, status="RUNNING")
    if running and not existing and not spec.cfg.force:
        log.info("%s: skipped, run %s with the same config_hash is running (heartbeat alive)",
                 spec.run_name, running[0].info.run_id)
        return RunResult(spec.run_name, running[0].info.run_id, "SKIPPED", spec.config_hash)
    if existing and not spec.cfg.force:
        log.info("%s: skipped, finished run %s has the same config_hash %s (force=true re-runs it)",
                 spec.run_name, existing[0].info.run_id, spec.config_hash)
        return RunResult(spec.run_name, existing[0].info.run_id, "SKIPPED", spec.config_hash,
                         dict(existing[0].data.metrics))
    return execute(spec, client, experiment_id, sweep_id, log_file)


@contextmanager
def _lock(path: Path) -> Iterator[None]:
    """An exclusive file lock, so parallel jobs of one sweep evaluate the baseline once."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _reap(spec: RunSpec, client, experiment_id: str) -> None:
    """Runs of this configuration left RUNNING by a killed job are marked KILLED first."""
    for run, reason in tracking.reap_stale(client, experiment_id, spec.cfg.tracking.stale_after_seconds,
                                           {TAGS.CONFIG_HASH: spec.config_hash}):
        log.warning("%s: marked stale run %s KILLED (%s)", spec.run_name, run.info.run_id, reason)


def _ensure_baseline(spec: RunSpec, client, experiment_id: str, sweep_id: str, log_file: Path | None) -> None:
    base_cfg = baseline_config(spec.cfg)
    base_cfg.paths.output_dir = str(spec.output_dir / "baseline")
    base = prepare(base_cfg)
    with _lock(spec.cache_dir / "locks" / f"baseline-{base.config_hash}.lock"):
        _reap(base, client, experiment_id)
        if tracking.find_runs(client, experiment_id, {TAGS.CONFIG_HASH: base.config_hash}):
            return
        log.info("No finished baseline for %s with these evaluation settings: evaluating it first",
                 spec.cfg.model.name)
        execute(base, client, experiment_id, sweep_id, log_file)


def _tags(spec: RunSpec, sweep_id: str) -> dict[str, str]:
    tags = {
        TAGS.QUANT: spec.method,
        TAGS.CALIB_N: str(spec.calib_n),
        TAGS.MODEL: str(spec.cfg.model.name),
        TAGS.EVAL_DATA: spec.plan.eval_data,
        TAGS.CONFIG_HASH: spec.config_hash,
        TAGS.SWEEP_ID: sweep_id,
        TAGS.HOST: socket.gethostname(),
        TAGS.PID: str(os.getpid()),
        "mlflow.note.content": _description(spec),
    }
    if spec.cfg.model.get("note"):
        tags["qexp.model_note"] = str(spec.cfg.model.note)
    return tags


def _description(spec: RunSpec) -> str:
    what = "Unquantized baseline" if spec.is_baseline else (
        f"{spec.method.upper()} {spec.cfg.quant.scheme} (group size {spec.cfg.quant.group_size}), "
        f"{spec.calib_n} ShareGPT calibration samples")
    data = {"fixtures": "qexp's small FIXTURE data, not the real benchmarks: scores mean nothing",
            "local": f"local dataset mirrors under {spec.plan.data_dir}",
            "mixed": f"partly local mirrors under {spec.plan.data_dir}, partly the hub",
            "hub": "datasets from the Hugging Face hub"}[spec.plan.eval_data]
    note = f" {spec.cfg.model.note}" if spec.cfg.model.get("note") else ""
    return f"{what} of {spec.cfg.model.name} ({spec.cfg.model.path}). Evaluated on {data}.{note}"


def _run_config(spec: RunSpec) -> dict:
    config = OmegaConf.to_container(spec.cfg, resolve=True)
    if spec.is_baseline:
        config.pop("calib", None)  # no calibration happens: don't suggest otherwise
    return config


def execute(spec: RunSpec, client, experiment_id: str, sweep_id: str, log_file: Path | None = None) -> RunResult:
    """Run one validated spec as one MLflow run, which ends FINISHED, FAILED or KILLED."""
    cfg = spec.cfg
    run_id = tracking.start_run(client, experiment_id, spec.run_name, _tags(spec, sweep_id))
    log.info("%s: MLflow run %s (config_hash %s)", spec.run_name, run_id, spec.config_hash)
    status, result = "FAILED", RunResult(spec.run_name, run_id, "FAILED", spec.config_hash)
    spec.output_dir.mkdir(parents=True, exist_ok=True)
    heartbeat = tracking.Heartbeat(client, run_id, cfg.tracking.heartbeat_seconds)
    heartbeat.start()
    memory = PeakMemory()
    memory.reset()
    try:
        config = _run_config(spec)
        tracking.log_params(client, run_id, flatten({**config, "versions": spec.identity["versions"]}))
        tracking.log_text(client, run_id, OmegaConf.to_yaml(OmegaConf.create(config)), "config.yaml")
        tracking.log_json(client, run_id, spec.identity, "identity.json")
        for task, data_file in spec.plan.own.items():
            ids = [record["id"] for record in tracking.read_jsonl(data_file)]
            tracking.log_json(client, run_id, ids, f"{task}/sample_ids.json")

        checkpoint, perf = Path(spec.model_path), {}
        if not spec.is_baseline:
            checkpoint, perf["perf/quant_seconds"] = _quantize(spec, client, run_id)

        log.info("%s: evaluating %s on %s (%s data, limit %s)", spec.run_name, checkpoint,
                 list(cfg.eval.tasks), spec.plan.eval_data, cfg.eval.limit)
        started = time.perf_counter()
        evaluation = evaluate(
            checkpoint, spec.plan, dtype=cfg.model.dtype, device=spec.device,
            num_fewshot=cfg.eval.num_fewshot, limit=cfg.eval.limit, batch_size=cfg.eval.batch_size,
            seed=cfg.seed, cache_dir=spec.cache_dir,
        )
        perf["perf/eval_seconds"] = time.perf_counter() - started
        perf.update(memory.metrics())
        perf.update(_sizes(spec, checkpoint))
        tracking.log_json(client, run_id, evaluation.results, "lm_eval/results.json")
        tracking.log_files(client, run_id, {f"{task}.jsonl": records for task, records in evaluation.samples.items()},
                           "lm_eval/samples")
        metrics = {**tracking.results_metrics(evaluation.results), **perf}
        tracking.log_metrics(client, run_id, metrics)

        if not spec.is_baseline and cfg.tracking.log_checkpoint:
            log.info("%s: logging the checkpoint as an artifact", spec.run_name)
            client.log_artifacts(run_id, str(checkpoint), "checkpoint")
        client.set_tag(run_id, "qexp.checkpoint_path", str(checkpoint))
        status = "FINISHED"
        result = RunResult(spec.run_name, run_id, status, spec.config_hash, metrics,
                           None if spec.is_baseline else checkpoint)
        headline = [f"{t}/{m}" for t in cfg.eval.tasks for m in ("acc", "word_perplexity")]
        summary = {k: round(metrics[k], 4) for k in headline + sorted(perf) if k in metrics}
        log.info("%s: finished %s", spec.run_name, json.dumps(summary))
        return result
    except KeyboardInterrupt as err:  # Ctrl-C, or SIGTERM turned into it by the entry point
        status = result.status = "KILLED"
        client.set_tag(run_id, TAGS.KILLED_REASON, str(err) or "interrupted (Ctrl-C)")
        raise
    except BaseException:
        tracking.log_text(client, run_id, traceback.format_exc(), "error.txt")
        raise
    finally:
        heartbeat.stop()
        try:
            if log_file and Path(log_file).is_file():
                client.log_artifact(run_id, str(log_file), "logs")
        finally:
            tracking.end_run(client, run_id, status)


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


def _quantize(spec: RunSpec, client, run_id: str) -> tuple[Path, float]:
    """Quantize into the configuration's checkpoint folder, or reuse it when a complete one is there."""
    from transformers import AutoTokenizer

    cfg, checkpoint = spec.cfg, spec.checkpoint
    samples = calibration.select(calibration.load_conversations(spec.calib_path), cfg.calib.n, cfg.calib.seed)
    tracking.log_json(client, run_id, [c.id for c in samples], "calibration/sample_ids.json")
    if is_complete(checkpoint) and not cfg.force:
        seconds = json.loads((checkpoint / CHECKPOINT_MARKER).read_text())["quant_seconds"]
        log.info("%s: reusing the complete checkpoint %s (quantized earlier in %.0f s)", spec.run_name,
                 checkpoint, seconds)
        client.set_tag(run_id, "qexp.checkpoint_reused", "true")
    else:
        tokenizer = AutoTokenizer.from_pretrained(spec.model_path)
        dataset = calibration.tokenize(samples, tokenizer, cfg.calib.max_seq_length)
        log.info("%s: quantizing %s with %d calibration samples (<= %d tokens each) into %s", spec.run_name,
                 spec.model_path, len(samples), cfg.calib.max_seq_length, checkpoint)
        seconds = quantize(spec.model_path, dataset, cfg.quant, dtype=cfg.model.dtype,
                           max_seq_length=cfg.calib.max_seq_length, out=checkpoint)
    if (checkpoint / "recipe.yaml").is_file():
        client.log_artifact(run_id, str(checkpoint / "recipe.yaml"))
    return checkpoint, seconds
