"""The tiny 2x2 sweep with the basic launcher (one job after another) and with two joblib workers.

    python benchmarks/parallel.py [overrides...]

Runs each in a fresh folder (fresh store, fresh qexp cache, so both pay the same one-time
costs: building the tiny model, indexing lm-eval's tasks), prints both wall times and their
ratio. The baseline is evaluated once, before the quantized jobs can start, so only the
quantized jobs run in parallel; on 2 cores the ratio also reflects that each job is itself
multi-threaded (torch), so two jobs at once share the same cores.
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

SWEEP = ["-m", "quant=gptq,awq", "calib.n=215,512", "model=tiny", "eval=fixtures"]


def timed(args: list[str], root: Path) -> float:
    env = {**os.environ, "QEXP_CACHE_DIR": str(root / "cache"), "HF_HUB_OFFLINE": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "qexp", *args], cwd=root, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(proc.stdout[-2000:] + proc.stderr[-2000:])
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("overrides", nargs="*", default=SWEEP, help="the sweep's arguments")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as serial_dir, tempfile.TemporaryDirectory() as parallel_dir:
        serial = timed(args.overrides, Path(serial_dir))
        print(f"basic launcher:     {serial:.1f} s")
        parallel = timed([*args.overrides, "launcher=local", "hydra.launcher.n_jobs=2"], Path(parallel_dir))
        print(f"2 joblib workers:   {parallel:.1f} s")
    print(f"parallel / serial = {parallel / serial:.2f} on {os.cpu_count()} cores")
    return 0


if __name__ == "__main__":
    with tee("parallel"):  # docs/results/parallel.md
        status = main()
    sys.exit(status)
