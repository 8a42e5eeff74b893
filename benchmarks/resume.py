"""How much a second pass over a finished sweep costs, relative to the first.

    python benchmarks/resume.py            # the offline study's shape on the tiny model

Runs the same sweep twice in a fresh folder with a fresh cache and prints both wall
times and their ratio. The second pass must create no runs; the goal is a ratio <= 1/3.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from record import tee  # docs/results/: this script's output

SWEEP = ["-m", "quant=gptq,awq", "calib.n=32,64", "model=tiny", "eval=fixtures", "model.max_seq_length=128"]


def count_runs(root: Path) -> int:
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{root}/mlruns/mlflow.db")
    return len(client.search_runs([e.experiment_id for e in client.search_experiments()]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("overrides", nargs="*", default=SWEEP, help="the sweep's arguments")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        env = {**os.environ, "QEXP_CACHE_DIR": str(root / "cache"), "HF_HUB_OFFLINE": "1"}
        env.pop("MLFLOW_TRACKING_URI", None)  # the store under root/mlruns, which count_runs reads
        times, runs = [], []
        for attempt in ("first", "second"):
            started = time.perf_counter()
            proc = subprocess.run([sys.executable, "-m", "qexp", *args.overrides], cwd=root, env=env,
                                  capture_output=True, text=True)
            times.append(time.perf_counter() - started)
            if proc.returncode != 0:
                print(proc.stderr[-3000:], file=sys.stderr)
                return 1
            runs.append(count_runs(root))
            print(f"{attempt} pass: {times[-1]:.1f} s, {runs[-1]} runs in the store")
        ratio = times[1] / times[0]
        print(f"second/first = {ratio:.3f} (goal <= 0.333); new runs in second pass: {runs[1] - runs[0]}")
        return 0 if ratio <= 1 / 3 and runs[1] == runs[0] else 1


if __name__ == "__main__":
    with tee("resume"):  # docs/results/resume.md
        status = main()
    sys.exit(status)
