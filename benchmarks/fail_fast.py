"""How fast the mission's command fails on a machine that cannot reach the Hugging Face hub.

    python benchmarks/fail_fast.py [--repeat 3]

Runs `python -m qexp -m quant=gptq,awq calib.n=215,512` (the default model, Qwen/Qwen3-4B) in a
fresh folder with an empty Hugging Face cache and HF_HUB_OFFLINE unset, as a new user without
network would, and prints each attempt's wall time, its exit status and its error line. Goal:
under 10 s, exit status 2, one line, no run and no store folder left behind.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

COMMAND = ["-m", "qexp", "-m", "quant=gptq,awq", "calib.n=215,512"]


def attempt() -> tuple[float, int, list[str], bool]:
    with tempfile.TemporaryDirectory() as tmp:
        env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
        env.update(HF_HOME=str(Path(tmp) / "hf"), QEXP_CACHE_DIR=str(Path(tmp) / "qexp"))
        started = time.perf_counter()
        proc = subprocess.run([sys.executable, *COMMAND], cwd=tmp, env=env, capture_output=True, text=True)
        seconds = time.perf_counter() - started
        lines = [line for line in (proc.stdout + proc.stderr).splitlines() if line.strip()]
        return seconds, proc.returncode, lines, (Path(tmp) / "mlruns").exists()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    print(f"python {' '.join(COMMAND)}  (no hub, empty caches)")
    for i in range(args.repeat):
        seconds, status, lines, store = attempt()
        print(f"attempt {i + 1}: {seconds:.1f} s, exit status {status}, {len(lines)} line(s) of output, "
              f"store folder {'left behind' if store else 'none'}")
    print(f"the line: {lines[-1] if lines else '(none)'}")


if __name__ == "__main__":
    main()
