"""Write studies whose truth is known straight through MLflow's client, following qexp's naming
contract (tags, `<task>/<metric>` metrics, identity.json, lm_eval/ artifacts), never through qexp."""

from __future__ import annotations

import hashlib
import json
import tempfile
from pathlib import Path

import numpy as np
from mlflow import MlflowClient

VERSIONS = {"torch": "2.13.0", "transformers": "5.17.0", "lm_eval": "0.4.13"}


def new_store(folder: Path) -> tuple[str, MlflowClient, str]:
    uri = f"sqlite:///{folder}/mlruns/mlflow.db"
    client = MlflowClient(uri)
    return uri, client, client.create_experiment("qexp", artifact_location=(folder / "artifacts").as_uri())


def docs(correct: list[int], prefix: str, metric: str = "acc") -> list[dict]:
    """Per-document records as lm-eval writes them: `doc_hash` is `<prefix><i>`."""
    return [{"doc_id": i, "doc_hash": f"{prefix}{i}", metric: float(c), "filter": "none"} for i, c in enumerate(correct)]


def log_run(client: MlflowClient, experiment_id: str, quant: str, n: int, samples: dict[str, list[dict]] | None,
            metrics: dict[str, float], *, tasks: list[str], groups: dict | None = None, limit: int = 50,
            own_data: dict | None = None, extra_params: dict | None = None, model: str = "m",
            eval_data: str = "local", size_mb: float | None = None, backend: dict | None = None) -> str:
    """One FINISHED run; `samples` maps a task to its records (None: no samples artifact at all); `backend`: its
    evaluation's in vLLM (`speed.served.ServedPlan.identity`), None for transformers."""
    evaluation = {"tasks": tasks, "num_fewshot": 0, "limit": limit, "seed": 0, "data": {"t": "d1"},
                  "own_data": own_data or {}, **({"backend": backend} if backend else {})}
    identity = {"model": {"hub": model, "dtype": "float32"}, "eval": evaluation, "versions": VERSIONS}
    eval_identity = {**evaluation, "dtype": "float32", "versions": VERSIONS}
    eval_hash = hashlib.sha256(json.dumps(eval_identity, sort_keys=True).encode()).hexdigest()[:16]
    name = "baseline" if quant == "none" else f"{quant}-{n}"
    run_id = client.create_run(experiment_id, run_name=name, tags={
        "qexp.quant": quant, "qexp.calib_n": str(n), "qexp.model": model, "qexp.eval_data": eval_data,
        "qexp.config_hash": hashlib.sha256(f"{quant}{n}{limit}{extra_params}".encode()).hexdigest()[:16],
        "qexp.eval_hash": eval_hash, "qexp.sweep_id": "s1"}).info.run_id
    for key, value in {"eval.tasks": json.dumps(tasks), "eval.limit": str(limit), **(extra_params or {})}.items():
        client.log_param(run_id, key, value)
    for key, value in {**metrics, **({"perf/checkpoint_mb": size_mb} if size_mb else {})}.items():
        client.log_metric(run_id, key, value)
    client.log_text(run_id, json.dumps(identity), "identity.json")
    if samples is not None:
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            (folder / "samples").mkdir()
            (folder / "results.json").write_text(json.dumps({"group_subtasks": groups or {}}))
            for task, records in samples.items():
                (folder / "samples" / f"{task}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
            client.log_artifacts(run_id, str(folder), "lm_eval")
    client.set_terminated(run_id, "FINISHED")
    return run_id


def accuracy_run(client, experiment_id, quant, n, per_task: dict[str, list[int]], **kwargs) -> str:
    """A run scored on accuracy only: `per_task` gives each task's per-document 0/1 (hashes `<task><i>`)."""
    metrics = {f"{task}/acc": float(np.mean(c)) for task, c in per_task.items()}
    samples = {task: docs(c, task) for task, c in per_task.items()}
    return log_run(client, experiment_id, quant, n, samples, metrics, tasks=list(per_task), **kwargs)
