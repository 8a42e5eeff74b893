"""The SmolLM2 study again, evaluated sequentially: each run's verdict and documents beside the fixed study's.

    python benchmarks/sequential_study.py [--out DIR] [--looks 10] [--first-500 DIR/mlruns] [--resume] [overrides ...]

Runs three sweeps of `+experiment=smollm2_study` (the same models, tasks and 500-document budget),
each with an answers cache of its own that starts empty, so no answer of an earlier evaluation is
reused and the times are first-time costs (models, checkpoints and data come from the usual cache: a
checkpoint already quantized is reused, this compares evaluations):

1. sequential: `eval.order=shuffled eval.sequential.looks=10`, the defaults otherwise (stopping for
   futility at eval.sequential.futility), in DIR;
2. sequential without futility (`eval.sequential.futility=0`: an undecided run goes on to the
   budget), in DIR/no-futility;
3. fixed on the same documents: `eval.order=shuffled`, in DIR/fixed.

`--first-500` adds the verdicts of the fixed study as `benchmarks/smollm2_study.py` ran it (each task's
first 500 documents) from its store. `--resume` reuses a sweep whose store is already in DIR.
Then prints, per quantized run against the baseline:

- how the run stopped (worse, better, equivalent within ±1 point, each at alpha / m, m the sweep's
  quantized runs (eval.sequential.comparisons); or undecided at the budget), the documents it used, its
  repeated interval (at 1 - alpha/m) and p-value, and the verdict that survives Holm across the
  study's runs (what the report states);
- the fixed studies' verdicts on the average (z-test and two one-sided tests of equivalence, Holm
  across the comparisons with the baseline: the family the sequential runs share alpha in; the
  report's ranking adjusts across every pair and can say less), and whether the sequential one
  contradicts them;
- how the same run stopped without futility, and its documents;
- the documents and evaluation seconds of the sequential and the same-documents fixed study;
- what the design expected each run to use: the fixed study of the same documents taken as a pilot
  (`qexp.compare.plan.sequential_forecast`: its differences and disagreements as the truth, the same
  on every task, simulated with the same looks and alpha), beside what each run used.
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

SHARED = ("models", "checkpoints", "eval_data", "datasets", "downloads", "heldout", "library", "lm_eval_index", "envs")


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
    return {run_label(r.tags[TAGS.QUANT], r.tags.get(TAGS.CALIB_N, "0")): {**r.metrics, **r.tags, "started": r.start_time}
            for r in runs if r.status == "FINISHED"}


def sweep(out: Path, overrides: list[str], name: str, resume: bool, cache: Path | None = None) -> int:
    """The SmolLM2 study with `overrides`, in `out`, its answers cache empty at the start (or `cache`, another
    sweep's: `fresh_cache`)."""
    if resume and (out / "mlruns").is_dir():
        print(f"{name} sweep: reusing the store in {out}\n")
        return 0
    out.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "qexp", "-m", "+experiment=smollm2_study", *overrides,
               f"paths.cache_dir={cache or fresh_cache(out)}"]
    print("$ python " + " ".join(command[1:-1]))
    started = time.perf_counter()
    proc = subprocess.run(command, cwd=out)
    print(f"\n{name} sweep: {(time.perf_counter() - started) / 60:.1f} min wall, exit {proc.returncode}\n")
    return proc.returncode


CONTRADICTS = {"worse": {"better", "equivalent"}, "better": {"worse", "equivalent"}, "equivalent": {"worse", "better"}}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="folder for the stores, outputs and answers (default: temporary)")
    parser.add_argument("--looks", type=int, default=10, help="chunks of the budget (eval.sequential.looks)")
    parser.add_argument("--first-500", type=Path, help="the store of the fixed study on each task's first 500 documents")
    parser.add_argument("--resume", action="store_true", help="reuse a sweep whose store is already in --out")
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides")
    args = parser.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="qexp-sequential-"))
    shuffled = ["eval.order=shuffled", *args.overrides]
    sequential = [*shuffled, f"eval.sequential.looks={args.looks}"]
    for folder, overrides, name in ((out, sequential, "sequential"),
                                    (out / "no-futility", [*sequential, "eval.sequential.futility=0"],
                                     "sequential without futility"),
                                    (out / "fixed", shuffled, "fixed (same documents)")):
        code = sweep(folder, overrides, name, args.resume)
        if code:
            return code
    from qexp.contract import METRICS, TAGS
    from qexp.compare import load_study
    from qexp.compare.stopped import sequential_table

    same, same_docs, same_seconds = fixed_verdicts(out / "fixed" / "mlruns")
    first = fixed_verdicts(args.first_500)[0] if args.first_500 else {}
    runs = sequential_runs(out / "mlruns")
    persistent = sequential_runs(out / "no-futility" / "mlruns")
    quantized = sorted(label for label in runs if runs[label].get(TAGS.SEQUENTIAL) not in (None, "baseline"))
    table = sequential_table(load_study(f"sqlite:///{out / 'mlruns' / 'mlflow.db'}", "qexp")).set_index("label")
    adjusted = table["p_adjusted"].to_dict()  # the report's own verdicts after Holm
    shares = sorted({int(runs[label].get(METRICS.SEQUENTIAL_COMPARISONS, 1)) for label in quantized})
    print(f"Each quantized run decided at α/{'/'.join(map(str, shares))} (eval.sequential.comparisons); "
          "its repeated interval is at 1 − that α. The fixed studies' verdicts are Holm-adjusted across the same "
          f"{len(quantized)} comparisons with the baseline (the report's ranking adjusts across every pair).\n")
    print("| run vs Baseline | stopped | documents used | Δ avg pts [repeated interval] | p (repeated) | p Holm | verdict "
          "(Holm) | without futility: stopped, documents | fixed, same documents | fixed, first 500 | contradicts | "
          "evaluate s (fixed, same documents) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    notes, used_total, fixed_total, persistent_total = [], 0.0, 0.0, 0.0
    for label in quantized:
        m = runs[label]
        verdict, others = m[TAGS.SEQUENTIAL], [same.get(label, "–"), first.get(label, "–")]
        held = table.loc[label, "verdict"]
        contradicts = any(v in CONTRADICTS.get(mine, set()) for v in others for mine in (verdict, held))
        used_total += m[METRICS.SEQUENTIAL_DOCS]
        fixed_total += same_docs.get(label, float("nan"))
        p = persistent.get(label, {})
        persistent_total += p.get(METRICS.SEQUENTIAL_DOCS, float("nan"))
        stopped = f"{verdict}, futile at look {m[METRICS.SEQUENTIAL_LOOKS]:.0f}" if "futility" in m[TAGS.SEQUENTIAL_REASON] \
            else verdict
        print(f"| {label} | {stopped} | {m[METRICS.SEQUENTIAL_DOCS]:,.0f} of {m[METRICS.SEQUENTIAL_BUDGET]:,.0f} "
              f"({100 * m[METRICS.SEQUENTIAL_DOCS] / m[METRICS.SEQUENTIAL_BUDGET]:.0f}%) | "
              f"{m[METRICS.SEQUENTIAL_DELTA]:+.1f} [{m[METRICS.SEQUENTIAL_LOW]:+.1f}, {m[METRICS.SEQUENTIAL_HIGH]:+.1f}] | "
              f"{m[METRICS.SEQUENTIAL_P]:.3g} | {adjusted[label]:.3g} | {held} | "
              f"{p.get(TAGS.SEQUENTIAL, '–')}, {p.get(METRICS.SEQUENTIAL_DOCS, float('nan')):,.0f} | {others[0]} | {others[1]} | "
              f"{'YES' if contradicts else 'no'} | "
              f"{m[METRICS.EVAL_SECONDS]:.0f} ({same_seconds.get(label, float('nan')):.0f}) |")
        for name, other in zip(("the fixed study of the same documents", "the first-500 fixed study"), others):
            if verdict in CONTRADICTS and held not in CONTRADICTS and other == verdict and label not in str(notes):
                share = int(m.get(METRICS.SEQUENTIAL_COMPARISONS, 1))
                notes.append(f"- {label}: stopped {verdict} at alpha/{share}, as {name} found it, but not {verdict} "
                             f"after Holm across the study's {len(quantized)} runs, whose first step asks for "
                             f"alpha/{len(quantized)}.")
            if verdict == "undecided" and other in CONTRADICTS and "futility" in m[TAGS.SEQUENTIAL_REASON]:
                notes.append(f"- {label}: {m[TAGS.SEQUENTIAL_REASON]}, where {name} found it {other}. Futility stops "
                             f"an undecided run on a prediction; without futility this run ended "
                             f"{p.get(TAGS.SEQUENTIAL, '–')}.")
            elif verdict == "undecided" and other in CONTRADICTS:
                notes.append(f"- {label}: undecided at the budget where {name} found it {other}. A repeated "
                             f"interval is wider at the last look than the fixed test's (the price of looking "
                             f"{args.looks} times), so a difference near the budget's detectable one can be "
                             f"decided by the fixed test and not by the sequential one.")
    base = next((label for label in runs if runs[label].get(TAGS.SEQUENTIAL) == "baseline"), None)
    print(f"\nQuantized runs: {used_total:,.0f} documents against the fixed study's {fixed_total:,.0f} "
          f"({100 * used_total / fixed_total:.0f}%); without futility {persistent_total:,.0f} "
          f"({100 * persistent_total / fixed_total:.0f}%).")
    if base:
        print(f"The baseline evaluates the whole budget in every sweep: {runs[base][METRICS.SEQUENTIAL_DOCS]:,.0f} documents.")
    seconds = {label: runs[label][METRICS.EVAL_SECONDS] for label in runs}
    print(f"Evaluation (the runs' perf/eval_seconds): quantized runs {sum(seconds[q] for q in quantized) / 60:.1f} min "
          f"sequential against {sum(same_seconds[q] for q in quantized) / 60:.1f} min fixed on the same documents; "
          f"all runs {sum(seconds.values()) / 60:.1f} against {sum(same_seconds.values()) / 60:.1f} min.")
    days = [min(r["started"] for r in sequential_runs(store).values()) for store in (out / "mlruns", out / "fixed" / "mlruns")]
    if base and abs(days[0] - days[1]) > 3600 * 1000:  # MLflow's start times are in milliseconds
        shares = [sum(times[q] for q in quantized) / times[base] for times in (seconds, same_seconds)]
        print(f"The two sweeps ran {abs(days[0] - days[1]) / 3.6e6:.0f} h apart, so their seconds are not measured under "
              f"one machine's conditions. Each baseline evaluated the same whole budget ({seconds[base]:.0f} s in the "
              f"sequential sweep, {same_seconds[base]:.0f} s in the fixed one): in units of its own sweep's baseline, the "
              f"quantized runs took {shares[0]:.2f} sequentially against {shares[1]:.2f} fixed "
              f"({100 * shares[0] / shares[1]:.0f}%).")
    print("\n".join(notes) or "No comparison ended undecided where a fixed study decided.")
    forecast(out / "fixed" / "mlruns", runs, persistent, quantized)
    return 0


def forecast(store: Path, runs: dict[str, dict], persistent: dict[str, dict], quantized: list[str],
             replicates: int = 2000) -> None:
    """What the design expected each run to use, with the fixed study of the same documents as the pilot."""
    from qexp.compare import load_study
    from qexp.compare.plan import plan_study, sequential_forecast
    from qexp.compare.sequential import FUTILITY
    from qexp.compare.power import Settings
    from qexp.contract import METRICS

    study = load_study(f"sqlite:///{store / 'mlflow.db'}", "qexp")
    budget = int(max(runs[label][METRICS.SEQUENTIAL_BUDGET] for label in quantized)) // len(study.tasks)
    average = plan_study(study).average
    expected = {futility: sequential_forecast(average, len(study.tasks), budget, Settings(), replicates, futility)
                .set_index("a") for futility in (FUTILITY, 0.0)}
    print(f"\nWhat the design expected, with the fixed study of the same documents as the pilot (its difference and "
          f"disagreement taken as the truth on every task; {replicates} simulated studies each, at α/{len(quantized)}), "
          f"with futility at {FUTILITY:g} and without:\n")
    print("| run vs Baseline | fixed Δ avg pts | expected documents | most frequent verdict | used | without futility: "
          "expected, used |")
    print("|---|---|---|---|---|---|")
    share = lambda m: 100 * m[METRICS.SEQUENTIAL_DOCS] / m[METRICS.SEQUENTIAL_BUDGET]  # noqa: E731
    for label in quantized:
        r, alone = expected[FUTILITY].loc[label], expected[0.0].loc[label]
        print(f"| {label} | {100 * r['delta']:+.1f} | {100 * r['documents']:.0f}% | {r['verdict']} "
              f"({100 * r['often']:.0f}%) | {share(runs[label]):.0f}% | {100 * alone['documents']:.0f}%, "
              f"{share(persistent[label]):.0f}% |")
    print(f"\nExpected for the quantized runs together: {100 * expected[FUTILITY].loc[quantized, 'documents'].mean():.0f}% "
          f"of the fixed study's documents; without futility "
          f"{100 * expected[0.0].loc[quantized, 'documents'].mean():.0f}%.")


if __name__ == "__main__":
    with tee("sequential_study", markdown=True):
        status = main()
    sys.exit(status)
