"""The SmolLM2 study again, evaluated sequentially: each run's verdict and documents beside the fixed study's.

    python benchmarks/sequential_study.py --fixed-store DIR/mlruns [--out DIR] [--looks 10] [overrides ...]

Runs `python -m qexp -m +experiment=smollm2_study eval.order=shuffled eval.sequential.looks=10` (the same
models, tasks and 500-document budget) with a cache folder of its own for lm-eval's answers, so no
answer of an earlier evaluation is reused and the times are what a first sequential study costs;
the models, checkpoints and data come from the usual cache (a checkpoint already quantized is reused:
this compares evaluations). Then prints, per quantized run against the baseline:

- the sequential verdict (worse, better, equivalent within ±1 point, or undecided at the budget), the
  documents it used and its repeated 95% interval and p-value (Holm across the runs);
- the fixed study's verdict on its average (Holm-adjusted z-test, equivalence by two one-sided tests),
  read from `--fixed-store` (`benchmarks/smollm2_study.py`'s store), and whether the two contradict;
- the documents and evaluation seconds of both studies.

The fixed study evaluated each task's first 500 documents; the sequential one draws 500 at random from
the whole task, so the two test the same difference on different documents.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from record import tee  # docs/results/sequential_study.md

SHARED = ("models", "checkpoints", "eval_data", "datasets", "downloads", "heldout", "library", "lm_eval_index")


def fresh_cache(out: Path) -> Path:
    """A cache folder whose answers start empty; everything else is the usual cache's, linked."""
    usual = Path(os.environ.get("QEXP_CACHE_DIR") or Path.home() / ".cache" / "qexp")
    cache = out / "cache"
    cache.mkdir(parents=True, exist_ok=True)
    for name in SHARED:
        if (usual / name).exists() and not (cache / name).exists():
            (cache / name).symlink_to(usual / name)
    return cache


def fixed_verdicts(store: Path) -> tuple[dict[str, str], dict[str, float], dict[str, float]]:
    """The fixed study's verdict on each quantized run's average against the baseline, its documents
    (accuracy tasks) and its evaluation seconds, per run label."""
    from qexp.compare import load_study
    from qexp.compare.paired import average_differences
    from qexp.contract import METRICS

    study = load_study(f"sqlite:///{store / 'mlflow.db'}", "qexp")
    runs = [label for label in study.labels if label != study.baseline]
    frame = average_differences(study, [(label, study.baseline) for label in runs])
    verdicts = {}
    for row in frame.itertuples():
        verdicts[row.a] = ("worse" if row.delta < 0 else "better") if row.significant else (
            "equivalent" if row.equivalent else "not shown to differ")
    documents = {label: float(sum(study.correctness(t)[label].notna().sum() for t in study.tasks))
                 for label in study.labels}
    seconds = {label: float(study.runs.loc[label, METRICS.EVAL_SECONDS]) for label in study.labels}
    return verdicts, documents, seconds


def sequential_runs(store: Path) -> dict[str, dict]:
    from qexp.compare import run_label
    from qexp.contract import TAGS
    from qexp.tracking import Store

    runs = Store.open(f"sqlite:///{store / 'mlflow.db'}", "qexp", create=False).find_runs(
        where=[f"tags.`{TAGS.QUANT}` != ''"])
    return {run_label(r.tags[TAGS.QUANT], r.tags.get(TAGS.CALIB_N, "0")): {**r.metrics, **r.tags} for r in runs
            if r.status == "FINISHED"}


CONTRADICTS = {"worse": {"better", "equivalent"}, "better": {"worse", "equivalent"}, "equivalent": {"worse", "better"}}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fixed-store", type=Path, required=True, help="the fixed study's mlruns folder")
    parser.add_argument("--out", type=Path, help="folder for the store, outputs and answers (default: temporary)")
    parser.add_argument("--looks", type=int, default=10, help="chunks of the budget (eval.sequential.looks)")
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides")
    args = parser.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="qexp-sequential-"))
    out.mkdir(parents=True, exist_ok=True)
    cache = fresh_cache(out)
    command = [sys.executable, "-m", "qexp", "-m", "+experiment=smollm2_study", "eval.order=shuffled",
               f"eval.sequential.looks={args.looks}", f"paths.cache_dir={cache}", *args.overrides]
    print("$ " + " ".join(command[1:]))
    started = time.perf_counter()
    proc = subprocess.run(command, cwd=out)
    wall = time.perf_counter() - started
    print(f"\nsequential sweep: {wall / 60:.1f} min wall, exit {proc.returncode}, store {out / 'mlruns'}\n")
    if proc.returncode != 0:
        return proc.returncode
    from qexp.contract import METRICS, TAGS
    from qexp.compare.stats import holm

    fixed, fixed_docs, fixed_seconds = fixed_verdicts(args.fixed_store)
    runs = sequential_runs(out / "mlruns")
    quantized = sorted(label for label in runs if TAGS.SEQUENTIAL in runs[label] and runs[label][TAGS.SEQUENTIAL] != "baseline")
    adjusted = dict(zip(quantized, holm([runs[label][METRICS.SEQUENTIAL_P] for label in quantized])))
    print("| run vs Baseline | sequential verdict | documents used | Δ avg pts [repeated 95%] | repeated p | p Holm "
          "| fixed study's verdict | contradicts | evaluate s (fixed) |")
    print("|---|---|---|---|---|---|---|---|---|")
    notes, used_total, fixed_total = [], 0.0, 0.0
    for label in quantized:
        m = runs[label]
        verdict, fixed_verdict = m[TAGS.SEQUENTIAL], fixed.get(label, "–")
        contradicts = fixed_verdict in CONTRADICTS.get(verdict, set())
        used_total += m[METRICS.SEQUENTIAL_DOCS]
        fixed_total += fixed_docs.get(label, float("nan"))
        print(f"| {label} | {verdict} | {m[METRICS.SEQUENTIAL_DOCS]:,.0f} of {m[METRICS.SEQUENTIAL_BUDGET]:,.0f} "
              f"({100 * m[METRICS.SEQUENTIAL_DOCS] / m[METRICS.SEQUENTIAL_BUDGET]:.0f}%) | "
              f"{m[METRICS.SEQUENTIAL_DELTA]:+.1f} [{m[METRICS.SEQUENTIAL_LOW]:+.1f}, {m[METRICS.SEQUENTIAL_HIGH]:+.1f}] | "
              f"{m[METRICS.SEQUENTIAL_P]:.3g} | {adjusted[label]:.3g} | {fixed_verdict} | {'YES' if contradicts else 'no'} | "
              f"{m[METRICS.EVAL_SECONDS]:.0f} ({fixed_seconds.get(label, float('nan')):.0f}) |")
        if verdict == "undecided" and fixed_verdict in CONTRADICTS:
            notes.append(f"- {label}: undecided at the budget where the fixed study found it {fixed_verdict}. The "
                         f"repeated interval at the last look is wider than the fixed test's (the price of looking "
                         f"{args.looks} times), and its documents are another random 500 per task.")
    base = next((label for label in runs if runs[label].get(TAGS.SEQUENTIAL) == "baseline"), None)
    seq_seconds = sum(runs[label][METRICS.EVAL_SECONDS] for label in runs)
    print(f"\nQuantized runs: {used_total:,.0f} documents against the fixed study's {fixed_total:,.0f} "
          f"({100 * used_total / fixed_total:.0f}%).")
    if base:
        print(f"The baseline evaluates the whole budget in both: {runs[base][METRICS.SEQUENTIAL_DOCS]:,.0f} documents "
              f"({fixed_docs.get(base, float('nan')):,.0f} in the fixed study).")
    print(f"Evaluation, all runs: {seq_seconds / 60:.1f} min sequential against "
          f"{sum(fixed_seconds.values()) / 60:.1f} min fixed (the runs' perf/eval_seconds).")
    print("\n".join(notes) or "No comparison ended undecided where the fixed study decided.")
    return 0


if __name__ == "__main__":
    with tee("sequential_study", markdown=True):
        status = main()
    sys.exit(status)
