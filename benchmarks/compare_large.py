"""How long `python -m qexp.compare` takes on a large study, cold and warm.

    python benchmarks/compare_large.py [--counts 50] [--docs 50] [--out DIR]

Builds, through MLflow's own client, a study following qexp's naming contract: a baseline
plus GPTQ and AWQ at `--counts` calibration sizes (101 runs by default), each scored on
ARC-Challenge, ARC-Easy, HellaSwag and MMLU's 57 subjects with `--docs` documents per task.
Then it times `python -m qexp.compare --format json` twice: cold (an empty qexp cache) and
warm (the parsed samples of the finished runs cached by the first call). Target: warm <= 5 s
on a 2-core machine.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from qexp.fixtures import MMLU_SUBJECTS

from record import tee  # docs/results/: this script's output

CATEGORY_OF = {s: ("mmlu_stem", "mmlu_humanities", "mmlu_social_sciences", "mmlu_other")[i % 4]
               for i, s in enumerate(MMLU_SUBJECTS)}
TASKS = ["arc_challenge", "arc_easy", "hellaswag", "mmlu"]
VERSIONS = {"torch": "2.13.0", "transformers": "5.17.0", "lm_eval": "0.4.13"}


def build(root: Path, counts: int, docs: int) -> str:
    from mlflow import MlflowClient
    from mlflow.entities import Metric, Param

    uri = f"sqlite:///{root}/mlruns/mlflow.db"
    client = MlflowClient(uri)
    experiment = client.create_experiment("qexp", artifact_location=(root / "mlruns" / "artifacts").as_uri())
    leaves = ["arc_challenge", "arc_easy", "hellaswag"] + [f"mmlu_{s}" for s in MMLU_SUBJECTS]
    groups = {"mmlu": sorted(set(CATEGORY_OF.values()))}
    for subject, category in CATEGORY_OF.items():
        groups.setdefault(category, []).append(f"mmlu_{subject}")
    evaluation = {"tasks": TASKS, "num_fewshot": 0, "limit": docs, "seed": 0, "data": "hub", "own_data": {}}
    eval_hash = hashlib.sha256(json.dumps({**evaluation, "dtype": "bfloat16", "versions": VERSIONS},
                                          sort_keys=True).encode()).hexdigest()[:16]
    rng = np.random.default_rng(0)
    truth = {leaf: rng.random(docs) < 0.6 for leaf in leaves}
    configs = [("none", 0)] + [(m, 16 * (i + 1)) for m in ("gptq", "awq") for i in range(counts)]
    for quant, n in configs:
        flip = 0.0 if quant == "none" else 0.1
        correct = {leaf: np.where(rng.random(docs) < flip, ~truth[leaf], truth[leaf]) for leaf in leaves}
        metrics = {f"{leaf}/acc": float(c.mean()) for leaf, c in correct.items()}
        for group, members in groups.items():
            pooled = [c for m in members for c in (correct[m] if m in correct else
                                                   np.concatenate([correct[x] for x in groups[m]]))]
            metrics[f"{group}/acc"] = float(np.mean(pooled))
        run = client.create_run(experiment, run_name="baseline" if quant == "none" else f"{quant}-{n}", tags={
            "qexp.quant": quant, "qexp.calib_n": str(n), "qexp.model": "qwen3-4b", "qexp.eval_data": "hub",
            "qexp.config_hash": f"{quant}{n}", "qexp.eval_hash": eval_hash, "qexp.sweep_id": "bench"})
        run_id = run.info.run_id
        now = int(time.time() * 1000)
        client.log_batch(run_id, metrics=[Metric(k, v, now, 0) for k, v in metrics.items()],
                         params=[Param("eval.tasks", json.dumps(TASKS)), Param("eval.limit", str(docs))])
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            (folder / "samples").mkdir()
            (folder / "results.json").write_text(json.dumps({"group_subtasks": groups}))
            for leaf, values in correct.items():
                (folder / "samples" / f"{leaf}.jsonl").write_text("".join(
                    json.dumps({"doc_id": i, "doc_hash": f"{leaf}-{i}", "filter": "none", "acc": float(v)}) + "\n"
                    for i, v in enumerate(values)))
            client.log_artifacts(run_id, str(folder), "lm_eval")
        client.log_text(run_id, json.dumps({"model": {"hub": "Qwen/Qwen3-4B", "dtype": "bfloat16"},
                                            "eval": evaluation, "versions": VERSIONS}), "identity.json")
        client.set_terminated(run_id, "FINISHED")
    return uri


def timed_report(uri: str, cache: Path) -> tuple[float, str]:
    env = {**os.environ, "QEXP_CACHE_DIR": str(cache)}
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "qexp.compare", "--tracking-uri", uri, "--format", "json"],
                          env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(proc.stderr[-3000:])
    return seconds, proc.stdout


BREAKDOWN = """
import json, sys, time
started = time.perf_counter()
from mlflow import MlflowClient
imported = time.perf_counter()
MlflowClient(tracking_uri=sys.argv[1]).get_experiment_by_name("qexp")
opened = time.perf_counter()
from qexp.compare import build_report, load_study, to_json
study = load_study(sys.argv[1], "qexp")
loaded = time.perf_counter()
report = build_report(study)
built = time.perf_counter()
json.dumps(to_json(report))
written = time.perf_counter()
print(f"warm, in one process: import MLflow {imported - started:.1f} s, open the store {opened - imported:.1f} s, "
      f"load the study {loaded - opened:.1f} s (qexp's imports and MLflow's queries), "
      f"build the report {built - loaded:.1f} s, its JSON {written - built:.1f} s")
"""


def breakdown(uri: str, cache: Path) -> str:
    """Where a warm report's time goes, phase by phase, in a fresh process."""
    env = {**os.environ, "QEXP_CACHE_DIR": str(cache)}
    proc = subprocess.run([sys.executable, "-c", BREAKDOWN, uri], env=env, capture_output=True, text=True)
    return proc.stdout.strip() or proc.stderr[-2000:]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--counts", type=int, default=50, help="calibration sizes per method (runs = 1 + 2 * counts)")
    parser.add_argument("--docs", type=int, default=50, help="documents per task and MMLU subject")
    parser.add_argument("--out", type=Path, help="folder for the store (default: temporary)")
    args = parser.parse_args()
    root = args.out or Path(tempfile.mkdtemp(prefix="qexp-compare-bench-"))
    started = time.perf_counter()
    uri = build(root, args.counts, args.docs)
    print(f"built {1 + 2 * args.counts} runs in {time.perf_counter() - started:.0f} s: {uri}")
    cache = root / "cache"
    cold, first = timed_report(uri, cache)
    warm, second = timed_report(uri, cache)
    data = json.loads(first)
    print(f"python -m qexp.compare --format json: cold {cold:.1f} s, warm {warm:.1f} s "
          f"({len(data['runs'])} runs, {len(data['comparisons'])} comparisons, "
          f"{len(data['average_tests'])} average tests); warm target <= 5 s")
    print("cold and warm reports identical:", first == second)
    print(breakdown(uri, cache))
    return 0 if first == second else 1


if __name__ == "__main__":
    with tee("compare_large"):  # docs/results/compare_large.md
        status = main()
    sys.exit(status)
