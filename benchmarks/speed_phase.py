"""What the speed phase costs a run, and how stable its figures are, read from a finished study's store.

    python benchmarks/speed_phase.py --store /tmp/speedstudy/mlruns     # after benchmarks/smollm2_study.py

Per run with a speed phase (speed=vllm): the run's wall time, the speed phase's (vLLM's load, warm-up
and timed passes; the environment's one-off build excluded) and its share; then, per figure, the
spread of the timed repetitions as (max - min) / median: how far one repetition can be from another,
and so how large a difference between two runs must be before the report calls it one.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

from record import tee  # docs/results/: this script's output

FIGURES = ("ttft_ms", "tpot_ms", "tokens_per_second_b1", "tokens_per_second_b16")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", type=Path, required=True, help="the study's mlruns folder (holding mlflow.db)")
    args = parser.parse_args()
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{args.store.resolve() / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("qexp")
    runs = [r for r in client.search_runs([experiment.experiment_id], "tags.`qexp.speed` = 'measured'")
            if r.data.tags.get("qexp.role") != "sweep"]
    if not runs:
        print(f"no run with a measured speed phase in {args.store}", file=sys.stderr)
        return 1
    header = ["run", "run wall (s)", "speed phase (s)", "share", "vLLM load (s)"] + [f"spread {f}" for f in FIGURES]
    print("| " + " | ".join(header) + " |\n|" + "---|" * len(header))
    spreads: dict[str, list[float]] = {f: [] for f in FIGURES}
    phase = []
    for run in sorted(runs, key=lambda r: r.info.start_time):
        m = run.data.metrics
        wall = (run.info.end_time - run.info.start_time) / 1000
        row = [run.info.run_name, f"{wall:.0f}", f"{m['perf/speed_seconds']:.0f}",
               f"{m['perf/speed_seconds'] / wall:.0%}", f"{m['speed/load_seconds']:.0f}"]
        phase.append(m["perf/speed_seconds"])
        for f in FIGURES:
            if f"speed/{f}" in m:
                spread = (m[f"speed/{f}_max"] - m[f"speed/{f}_min"]) / m[f"speed/{f}"]
                spreads[f].append(spread)
                row.append(f"{spread:.1%}")
            else:
                row.append("–")
        print("| " + " | ".join(row) + " |")
    print(f"\nspeed phase: median {statistics.median(phase):.0f} s, max {max(phase):.0f} s a run "
          f"({len(phase)} runs; goal: at most 180 s for a SmolLM2 run, the environment already built)")
    print("repetition spread, median over runs: " + ", ".join(
        f"{f} {statistics.median(v):.1%}" for f, v in spreads.items() if v))
    return 0


if __name__ == "__main__":
    with tee("speed_phase", markdown=True):  # docs/results/speed_phase.md
        status = main()
    sys.exit(status)
