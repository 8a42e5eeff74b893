"""What a sequential study decides and what it costs, by simulation: verdicts, coverage and documents used.

    python benchmarks/sequential_design.py [--replicates 20000] [--chunks 10]

Two runs that truly differ by 0, 1, 2 and 4 points, and by twice the fixed design's detectable
difference, are compared as the SmolLM2 study's runs are (four tasks of 500 documents, disagreeing
on a fifth of them): after each of `--chunks` equal chunks, by the report's own average test and
`qexp.compare.sequential.decide` (O'Brien-Fleming-type alpha-spending, equivalence within 1 point).
Printed per difference: how often each verdict is reached, how often the repeated interval at the
stop covers the truth, and the documents used as a share of the fixed design's. Then the same at a
budget of 4,000 documents per task, where equivalence within the margin can be shown, at a true
difference of 0 and of exactly the margin. Last, the price of sharing alpha: the 500-document design
again, each comparison decided at alpha/`--comparisons` as a study of that many quantized runs decides
them (eval.sequential.comparisons), so that every stop survives Holm across them. Then the same
design with each task also decided on its own (eval.sequential.per_task), at alpha/(comparisons x
tasks): how often some task claims a difference, how often each task is decided, whether every task's
interval covers, and the documents that costs. Last, the 500-document design at alpha/comparisons
with futility stopping (eval.sequential.futility, its default): an undecided comparison stops once a
decision by the budget is predicted below that probability; beside each rate, the same outcomes'
without it.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from qexp.compare.power import PairedMean, mean_mde
from qexp.compare.sequential import FUTILITY, simulate
from qexp.compare.stats import ALPHA
from record import tee  # docs/results/: this script's output

TASKS, DISAGREE, MARGIN = 4, 0.2, 0.01


def row(label: str, out) -> str:
    rates = {v: np.mean(out.decided == v) for v in ("better", "worse", "equivalent", "")}
    return (f"{label:>22} | {100 * rates['better']:6.1f} | {100 * rates['worse']:5.1f} | {100 * rates['equivalent']:10.1f} | "
            f"{100 * rates['']:9.1f} | {100 * out.covered.mean():7.1f} | {100 * out.documents.mean() / out.budget:8.0f}%")


def detectable(budget: int, disagree: float) -> float:
    """The fixed design's detectable average difference (80% power, the report's own computation)."""
    return mean_mde(PairedMean(np.full((1, TASKS), float(budget)), np.full((1, TASKS), disagree),
                               np.ones(TASKS, dtype=bool), np.zeros(1), True))


def differences(mde: float) -> list[tuple[str, float]]:
    """The true differences simulated at 500 documents: 0, 1, 2 and 4 points, and twice `mde`."""
    return [(f"{p} points", p / 100) for p in (0, 1, 2, 4)] + [(f"2 x detectable ({200 * mde:.1f})", 2 * mde)]


def per_task(args) -> None:
    """The 500-document design at alpha/comparisons, each task also decided at alpha/(comparisons x tasks)."""
    shared = args.comparisons
    mde = detectable(500, DISAGREE)
    print(f"Per task (eval.sequential.per_task): the same {TASKS} tasks x 500 documents, the average at alpha/{shared}, "
          f"each task also at alpha/{shared * TASKS}; a task is evaluated until both it and the average are decided. "
          f"Rates in % (\"tasks\": of all tasks of all replicates), documents as a share of the fixed design's:")
    print(f"{'true difference':>22} | average decided | some task claims | tasks decided | tasks equivalent | "
          f"all covered | documents (average only)\n{'-' * 22} | --------------- | ---------------- | ------------- | "
          f"---------------- | ----------- | ------------------------")
    for seed, (label, delta) in enumerate(differences(mde)):
        both = dict(replicates=args.replicates, seed=seed, alpha=ALPHA / shared)
        out = simulate(delta, DISAGREE, TASKS, 500, args.chunks, MARGIN, per_task=True, **both)
        alone = simulate(delta, DISAGREE, TASKS, 500, args.chunks, MARGIN, **both)
        tasks = out.task_decided
        print(f"{label:>22} | {100 * np.mean(out.decided != ''):15.1f} | "
              f"{100 * np.isin(tasks, ['better', 'worse']).any(axis=1).mean():16.1f} | "
              f"{100 * np.mean(tasks != ''):13.1f} | {100 * np.mean(tasks == 'equivalent'):16.1f} | "
              f"{100 * out.tasks_covered.mean():11.1f} | {100 * out.documents.mean() / out.budget:8.0f}% "
              f"({100 * alone.documents.mean() / alone.budget:.0f}%)")
    print()


def futility(args) -> None:
    """The 500-document design at alpha/comparisons, with and without stopping for futility."""
    shared = args.comparisons
    mde = detectable(500, DISAGREE)
    print(f"Futility (eval.sequential.futility={FUTILITY:g}, the default): the same {TASKS} tasks x 500 documents at "
          f"alpha/{shared}; an undecided comparison stops once a decision by the budget is predicted below "
          f"{100 * FUTILITY:g}%. Rates in %, documents as a share of the fixed design's; in brackets, the same "
          f"outcomes without futility:")
    print(f"{'true difference':>22} | decided      | covered | documents  | stopped for futility | of those, decided "
          f"without\n{'-' * 22} | ------------ | ------- | ---------- | -------------------- | ----------------------")
    for seed, (label, delta) in enumerate(differences(mde)):
        both = dict(replicates=args.replicates, seed=seed, alpha=ALPHA / shared)
        out = simulate(delta, DISAGREE, TASKS, 500, args.chunks, MARGIN, futility=FUTILITY, **both)
        alone = simulate(delta, DISAGREE, TASKS, 500, args.chunks, MARGIN, **both)
        stopped = (out.decided == "") & (out.documents < out.budget)
        would = f"{100 * np.mean(alone.decided[stopped] != ''):22.1f}" if stopped.any() else f"{'-':>22}"
        print(f"{label:>22} | {100 * np.mean(out.decided != ''):5.1f} ({100 * np.mean(alone.decided != ''):4.1f}) | "
              f"{100 * out.covered.mean():7.1f} | {100 * out.documents.mean() / out.budget:3.0f}% "
              f"({100 * alone.documents.mean() / alone.budget:3.0f}%) | {100 * stopped.mean():20.1f} | {would}")
    print()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replicates", type=int, default=20000, help="simulated comparisons per difference")
    parser.add_argument("--chunks", type=int, default=10, help="looks per comparison (equal chunks of the budget)")
    parser.add_argument("--comparisons", type=int, default=4, help="a study's comparisons sharing alpha (the SmolLM2 study's: 4)")
    args = parser.parse_args()
    header = (f"{'true difference':>22} | better | worse | equivalent | undecided | covered | documents\n"
              f"{'-' * 22} | ------ | ----- | ---------- | --------- | ------- | ---------")
    for budget, shared in ((500, 1), (4000, 1), (500, args.comparisons)):
        disagree = DISAGREE if budget == 500 else 0.1
        mde = detectable(budget, disagree)
        each = f"each decided at alpha/{shared} (one of a study's {shared} comparisons), " if shared > 1 else ""
        print(f"{TASKS} tasks x {budget} documents, disagreeing on {100 * disagree:g}%, {args.chunks} looks, "
              f"{args.replicates} replicates; {each}the fixed design detects {100 * mde:.1f} points (80% power, "
              f"alpha {ALPHA}); rates in %, documents as a share of the fixed design's:")
        print(header)
        deltas = differences(mde)
        if budget == 4000:
            deltas = [("0 points", 0.0), ("the margin (1 point)", MARGIN), ("minus the margin", -MARGIN)]
        for seed, (label, delta) in enumerate(deltas):
            print(row(label, simulate(delta, disagree, TASKS, budget, args.chunks, MARGIN, args.replicates, seed=seed,
                                      alpha=ALPHA / shared)))
        print()
    per_task(args)
    futility(args)
    error = 100 * np.sqrt(0.05 * 0.95 / args.replicates)
    share = ALPHA / args.comparisons
    print(f"A rate near 5% is measured to +-{error:.2f} points (one Monte Carlo standard error), near 95% likewise; "
          f"a rate near alpha/{args.comparisons} = {100 * share:g}% to +-{100 * np.sqrt(share * (1 - share) / args.replicates):.2f}.")
    return 0


if __name__ == "__main__":
    with tee("sequential_design"):  # docs/results/sequential_design.md
        status = main()
    sys.exit(status)
