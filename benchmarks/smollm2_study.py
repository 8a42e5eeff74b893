"""Real studies on this machine: SmolLM2-135M quantized and evaluated on the real benchmark data.

    python benchmarks/smollm2_study.py [--experiment NAME] [--out DIR] [--report FILE] [overrides ...]

Runs `python -m qexp -m +experiment=NAME` (conf/experiment/NAME.yaml; any extra Hydra overrides
are passed on) in DIR (default: a new temporary folder) and prints, after the sweep, its wall
time, each run's phases (quantization and evaluation seconds, from the runs' `perf/*` metrics),
the comparison report in Markdown and what the study could detect (`python -m qexp.compare.plan`), which --report also writes to FILE. The manual includes this
output from docs/results/<experiment>.md (the report's headings set three levels down, under the page's
own), and the ranking table alone from docs/results/<experiment>_ranking.md (the README shows it). The
manual's real studies:
- `smollm2_study` (default): GPTQ and AWQ at 16 and 32 samples, 500 documents per task; about 31
  minutes on 2 CPU cores (bfloat16 evaluation).
- `smollm2_methods`: RTN, GPTQ, AWQ and AutoRound at 32 samples.
- `smollm2_speed`: RTN, GPTQ, AWQ and W8A8 at 16 samples, each also served and timed in vLLM.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from record import Recorder, tee


def phases(store: Path) -> str:
    """Each run's phase times as a Markdown table, from the store the sweep wrote."""
    from qexp.contract import METRICS, TAGS
    from qexp.tracking import Store

    runs = Store.open(f"sqlite:///{store / 'mlflow.db'}", "qexp", create=False).find_runs(where=[f"tags.`{TAGS.QUANT}` != ''"])
    served = any(METRICS.EVAL_SERVED_PEAK_MB in run.metrics for run in runs)  # eval.backend=vllm
    rows = ["| run | quantize (s) | evaluate (s) | speed phase (s) | peak RSS (GB) |" + (" evaluation in vLLM, peak (GB) |"
                                                                                     if served else ""),
            "|---|---|---|---|---|" + ("---|" if served else "")]
    for run in sorted(runs, key=lambda r: r.start_time):
        m = run.metrics
        quant = f"{m[METRICS.QUANT_SECONDS]:.0f}" if METRICS.QUANT_SECONDS in m else "–"
        speed = f"{m[METRICS.SPEED_SECONDS]:.0f}" if METRICS.SPEED_SECONDS in m else "–"
        rows.append(f"| {run.name} | {quant} | {m.get(METRICS.EVAL_SECONDS, float('nan')):.0f} | {speed} | "
                    f"{m.get(METRICS.PEAK_RSS_MB, float('nan')) / 1024:.1f} |"
                    + (f" {m.get(METRICS.EVAL_SERVED_PEAK_MB, float('nan')) / 1024:.1f} |" if served else ""))
    return "\n".join(rows)


def demoted(markdown: str) -> str:
    """The report's headings three levels down (`#` -> `####`), to sit under a page's own headings."""
    return "\n".join("###" + line if line.startswith("#") else line for line in markdown.splitlines())


def ranking_table(markdown: str) -> list[str]:
    """The report's ranking table and the sentence that explains its ranks and intervals."""
    lines = markdown.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("## 6."))
    rule = next(line for line in lines[start:] if line.startswith("A run's rank"))
    return [*_first_table(lines[start + 1:]), "", rule]


def _first_table(lines: list[str]) -> list[str]:
    first = next(i for i, line in enumerate(lines) if line.startswith("|"))
    end = next((i for i in range(first, len(lines)) if not lines[i].startswith("|")), len(lines))
    return lines[first:end]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiment", default="smollm2_study", help="a preset under conf/experiment/")
    parser.add_argument("--out", type=Path, help="folder for the store and outputs (default: temporary)")
    parser.add_argument("--report", type=Path, help="also write the Markdown report here")
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides, e.g. eval.limit=50")
    args = parser.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="qexp-smollm2-"))
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "qexp", "-m", f"+experiment={args.experiment}", *args.overrides], cwd=out)
    wall = time.perf_counter() - started
    print(f"\nsweep: {wall / 60:.1f} min wall, exit {proc.returncode}, store {out / 'mlruns'}\n")
    if proc.returncode != 0:
        return proc.returncode
    print(phases(out / "mlruns") + "\n")
    report = subprocess.run([sys.executable, "-m", "qexp.compare", "--format", "markdown"], cwd=out,
                            capture_output=True, text=True)
    print(demoted(report.stdout), report.stderr, sep="")
    plan = subprocess.run([sys.executable, "-m", "qexp.compare.plan"], cwd=out, capture_output=True, text=True)
    print("#### What this study could detect (`python -m qexp.compare.plan`)\n\n```\n" + plan.stdout.rstrip()
          + "\n```\n" + plan.stderr)
    excerpt = Recorder(f"{args.experiment}_ranking")
    excerpt.lines = ranking_table(report.stdout)
    excerpt.write(markdown=True)
    if args.report:
        args.report.write_text(f"sweep wall time: {wall / 60:.1f} min\n\n{phases(out / 'mlruns')}\n\n{report.stdout}")
    return report.returncode


if __name__ == "__main__":
    experiment = next((sys.argv[i + 1] for i, a in enumerate(sys.argv[:-1]) if a == "--experiment"), "smollm2_study")
    with tee(experiment, markdown=True):  # docs/results/<experiment>.md
        status = main()
    sys.exit(status)
