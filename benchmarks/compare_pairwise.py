"""The warm 101-run report, timed pairwise against the code of an earlier commit.

    python benchmarks/compare_pairwise.py [--against 892888a] [--same-as REV] [--pairs 5]

Builds the study of `compare_large.py` (a baseline plus GPTQ and AWQ at 50 calibration sizes,
ARC-C/E, HellaSwag and MMLU's 57 subjects, 50 documents each), extracts the code of `--against`
into a temporary folder (`git archive`) and runs `python -m qexp.compare --format json` with each
code in turn, today's working tree first: one cold call each (each code has its own qexp cache),
then `--pairs` warm calls each, alternating, so a slow spell of the machine falls on both. It
prints every pair, the median of each side and the ratio of the medians (today / earlier; the
goal is <= 1.0). With `--same-as REV` it also runs that commit's code once and checks that today's
report is byte for byte the one that code prints: a speed-up must not change what is printed.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from compare_large import build
from record import tee  # docs/results/: this script's output

ROOT = Path(__file__).resolve().parents[1]


def extract(rev: str, into: Path) -> Path:
    """The files of commit `rev` under `into`, as git stores them (no checkout, no worktree)."""
    into.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev], capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def report(code: Path, uri: str, cache: Path) -> tuple[float, str]:
    """Seconds and stdout of `python -m qexp.compare --format json`, with qexp imported from `code`."""
    env = {**os.environ, "QEXP_CACHE_DIR": str(cache), "PYTHONPATH": str(code)}
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "qexp.compare", "--tracking-uri", uri, "--format", "json"],
                          env=env, capture_output=True, text=True, cwd=code)
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"the report failed with the code in {code}:\n{proc.stderr[-3000:]}")
    return seconds, proc.stdout


def short(rev: str) -> str:
    return subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", rev], capture_output=True, text=True,
                          check=True).stdout.strip()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--against", default="892888a", help="the earlier commit to time against")
    parser.add_argument("--same-as", help="a commit whose printed report today's must equal")
    parser.add_argument("--pairs", type=int, default=5, help="warm calls of each code, alternating")
    parser.add_argument("--counts", type=int, default=50, help="calibration sizes per method (runs = 1 + 2 * counts)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="qexp-pairwise-") as tmp:
        root = Path(tmp)
        started = time.perf_counter()
        uri = build(root / "store", args.counts, 50)
        print(f"built {1 + 2 * args.counts} runs in {time.perf_counter() - started:.0f} s")
        earlier = extract(args.against, root / "earlier")
        codes = {"today": ROOT, short(args.against): earlier}
        for name, code in codes.items():
            seconds, _ = report(code, uri, root / f"cache-{name}")
            print(f"{name:>8}: cold {seconds:.1f} s")
        times: dict[str, list[float]] = {name: [] for name in codes}
        outputs = {}
        for pair in range(args.pairs):
            order = list(codes) if pair % 2 == 0 else list(codes)[::-1]
            for name in order:
                seconds, outputs[name] = report(codes[name], uri, root / f"cache-{name}")
                times[name].append(seconds)
            today, before = times["today"][-1], times[short(args.against)][-1]
            print(f"pair {pair + 1}: today {today:.2f} s, {short(args.against)} {before:.2f} s, "
                  f"ratio {today / before:.2f}")
        median = {name: statistics.median(values) for name, values in times.items()}
        ratio = median["today"] / median[short(args.against)]
        print(f"warm medians: today {median['today']:.2f} s, {short(args.against)} {median[short(args.against)]:.2f} s; "
              f"today / {short(args.against)} = {ratio:.2f} (goal <= 1.0)")
        same = True
        if args.same_as:
            _, theirs = report(extract(args.same_as, root / "same"), uri, root / "cache-same")
            same = theirs == outputs["today"]
            print(f"today's report equals {short(args.same_as)}'s, byte for byte: {same} "
                  f"({len(theirs):,} and {len(outputs['today']):,} characters)")
    return 0 if same else 1


if __name__ == "__main__":
    with tee("compare_pairwise"):  # docs/results/compare_pairwise.md
        status = main()
    sys.exit(status)
