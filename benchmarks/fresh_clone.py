"""What a newcomer meets: a fresh clone, a fresh virtual environment and the README's three commands (install,
the offline study, the tests), as a normal user.

    python benchmarks/fresh_clone.py [--user NAME] [--python /usr/bin/python3]

Clones this repository's HEAD into a new temporary folder, creates a virtual environment there with
`--python` (default: the Python running this script), runs `pip install -e ".[dev]"`, the quick start's
study (`python -m qexp -m quant=gptq,awq calib.n=215,512 model=tiny eval=fixtures`, with an empty cache)
and `pytest` (the default selection: no SLURM, no vLLM environment), and prints each step's wall time
and pytest's summary. Root runs it as `--user` (a normal account, which must exist): the promise is that
no step needs root. Output: docs/results/fresh_clone.md, and the study's last job as the terminal showed
it in docs/results/quick_start.md.
"""

from __future__ import annotations

import argparse
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from record import Recorder

ROOT = Path(__file__).resolve().parents[1]
QUICK_START = "python -m qexp -m quant=gptq,awq calib.n=215,512 model=tiny eval=fixtures"
SYSTEM_TOOLS = ("initdb", "pg_ctl", "postgres", "sbatch", "slurmctld", "munged")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--user", help="the normal account to run as (required when run as root)")
    parser.add_argument("--python", default=sys.executable, help="the Python the environment is made with")
    parser.add_argument("--no-tests", action="store_true", help="stop after the quick start's study (its output only)")
    args = parser.parse_args()
    out = Recorder("fresh_clone")
    account = pwd.getpwnam(args.user) if args.user else pwd.getpwuid(os.getuid())
    if account.pw_uid == 0:
        parser.error("run it as a normal user, or as root with --user NAME (an existing normal account)")
    folder = Path(tempfile.mkdtemp(prefix="qexp-fresh-"))
    os.chown(folder, account.pw_uid, account.pw_gid) if os.geteuid() == 0 else None
    # The user's own environment: their home, no root-only folders on PATH; pip's settings (PIP_*) kept.
    env = {key: value for key, value in os.environ.items() if key.startswith(("PIP_", "LANG", "LC_", "TERM"))}
    env.update(HOME=account.pw_dir, USER=account.pw_name, PATH=f"{folder}/venv/bin:/usr/bin:/bin")
    found = {tool: path for tool in SYSTEM_TOOLS if (path := shutil.which(tool, path=env["PATH"]))}
    out.print(f"user {account.pw_name} (uid {account.pw_uid}); Python {args.python}")
    out.print("system tools on its PATH: " + (", ".join(f"{t} ({p})" for t, p in found.items()) or "none")
              + " (the default selection uses none of them)")

    def step(what: str, command: str) -> tuple[float, str]:
        started = time.perf_counter()
        shell = [shutil.which("runuser") or "/usr/sbin/runuser", "-u", account.pw_name, "--"] if os.geteuid() == 0 else []
        proc = subprocess.run([*shell, "/bin/bash", "-c", command], cwd=folder, env=env, capture_output=True, text=True)
        seconds = time.perf_counter() - started
        tail = [line for line in proc.stdout.splitlines() if line.strip()][-1:] or [""]
        out.print(f"{what}: exit status {proc.returncode}, {seconds / 60:.1f} min   {tail[0]}")
        if proc.returncode != 0:
            print(proc.stdout[-6000:] + proc.stderr[-3000:], file=sys.stderr)
            out.write()
            sys.exit(proc.returncode)
        return seconds, proc.stdout

    # The clone is this process's (git refuses to read another user's repository), handed to the user.
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(folder / "qexp")], check=True)
    subprocess.run(["chown", "-R", f"{account.pw_uid}:{account.pw_gid}", str(folder)], check=os.geteuid() == 0)
    step("python -m venv", f"{args.python} -m venv venv && venv/bin/python -m pip install --quiet --upgrade pip")
    install, _ = step('pip install -e ".[dev]"', 'cd qexp && pip install --quiet -e ".[dev]"')
    env["QEXP_CACHE_DIR"] = f"{folder}/cache"  # an empty cache: the tiny model is built, nothing is reused
    study, terminal = step("the quick start's study", f"cd qexp && {QUICK_START} 2>&1")
    env.pop("QEXP_CACHE_DIR")
    _write_quick_start(study, terminal, folder)
    if args.no_tests:
        shutil.rmtree(folder, ignore_errors=True)
        return 0
    tests, report = step("pytest", "cd qexp && pytest")
    slowest = report[report.find("slowest 25 durations"):].splitlines()[1:11]
    out.print("pytest's ten slowest steps:")
    for line in slowest:
        out.print("  " + line.replace(str(folder), "…"))
    out.print(f"install {install / 60:.1f} min, the study {study / 60:.1f} min, tests {tests / 60:.1f} min")

    shutil.rmtree(folder, ignore_errors=True)
    out.write()
    return 0


def _write_quick_start(seconds: float, terminal: str, folder: Path) -> None:
    """docs/results/quick_start.md: the study's wall time and the terminal from its last job on, paths shortened."""
    quick = Recorder("quick_start")
    quick.command = QUICK_START
    quick.print(f"# wall time {seconds / 60:.1f} min, with an empty cache; the terminal's last lines, paths shortened")
    start = terminal.rfind("qexp sweep: job ")
    last = terminal[start:] if start >= 0 else "\n".join(terminal.splitlines()[-40:])
    quick.lines += last.replace(str(folder), "…").splitlines()
    quick.write()


if __name__ == "__main__":
    sys.exit(main())
