"""The real offline study: SmolLM2-135M, GPTQ and AWQ at 16 and 32 samples, on this machine.

    python benchmarks/smollm2_sweep.py [--out DIR]

Runs `python -m qexp -m quant=gptq,awq calib.n=16,32 model=smollm2 eval=fixtures` in DIR
(default: a new temporary folder), prints its wall time, then the comparison report
(perplexity on held-out ShareGPT, size, time and memory per run). Too slow for CI: about
half an hour on 2 CPU cores, most of it AWQ's grid search.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SWEEP = ["-m", "quant=gptq,awq", "calib.n=16,32", "model=smollm2", "eval=fixtures"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="folder for the store and outputs (default: temporary)")
    args = parser.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="qexp-smollm2-"))
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "qexp", *SWEEP], cwd=out)
    print(f"sweep: {time.perf_counter() - started:.0f} s wall, exit {proc.returncode}, store {out / 'mlruns'}")
    if proc.returncode != 0:
        return proc.returncode
    return subprocess.run([sys.executable, "-m", "qexp.compare", "--format", "markdown"], cwd=out).returncode


if __name__ == "__main__":
    sys.exit(main())
