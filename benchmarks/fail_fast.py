"""How fast the mission's command fails when what it needs is not there.

    python benchmarks/fail_fast.py [--case hub|server|both] [--repeat 3]

`hub`: runs `python -m qexp -m quant=gptq,awq calib.n=215,512` (the default model, Qwen/Qwen3-4B) in
a fresh folder with an empty Hugging Face cache and HF_HUB_OFFLINE unset, as a new user without
network would. `server`: the same sweep on the project's own tiny model and fixture data (so only the
store can fail; qexp's usual cache, where the tiny model is built once beforehand), with
`tracking.uri` naming a port where no MLflow server listens. Each attempt prints its wall time, its
exit status and its error line. Goal for both: under 10 s, exit status 2, one line, no run and no
store folder left behind. (Tests check the exit status and the line; the time is measured here,
since tests assert no timings.)
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from record import tee  # docs/results/: this script's output

COMMAND = ["-m", "qexp", "-m", "quant=gptq,awq", "calib.n=215,512"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def attempt(case: str) -> tuple[float, int, list[str], bool]:
    with tempfile.TemporaryDirectory() as tmp:
        env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
        command = [sys.executable, *COMMAND]
        if case == "server":
            command += ["model=tiny", "eval=fixtures", f"tracking.uri=http://127.0.0.1:{free_port()}"]
        else:
            env.update(HF_HOME=str(Path(tmp) / "hf"), QEXP_CACHE_DIR=str(Path(tmp) / "qexp"))
        started = time.perf_counter()
        proc = subprocess.run(command, cwd=tmp, env=env, capture_output=True, text=True)
        seconds = time.perf_counter() - started
        lines = [line for line in (proc.stdout + proc.stderr).splitlines() if line.strip()]
        return seconds, proc.returncode, lines, (Path(tmp) / "mlruns").exists()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", choices=["hub", "server", "both"], default="both")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    if args.case != "hub":
        from qexp.models import resolve_model

        resolve_model("qexp:tiny-qwen3")  # built once, as any earlier run would have
    for case in (["hub", "server"] if args.case == "both" else [args.case]):
        what = "no hub, empty caches" if case == "hub" else "no MLflow server at tracking.uri"
        print(f"python {' '.join(COMMAND)}  ({what})")
        for i in range(args.repeat):
            seconds, status, lines, store = attempt(case)
            print(f"  attempt {i + 1}: {seconds:.1f} s, exit status {status}, {len(lines)} line(s) of output, "
                  f"store folder {'left behind' if store else 'none'}")
        print(f"  the line: {lines[-1] if lines else '(none)'}")


if __name__ == "__main__":
    with tee("fail_fast"):  # docs/results/fail_fast.md
        main()
