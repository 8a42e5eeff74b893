"""`python -m qexp.compare.plan`: how many documents per task a study needs, from a finished pilot.

    python -m qexp.compare.plan [--difference 2] [--power 80] [--tracking-uri URI] [--experiment NAME]

Reads a finished study, as `python -m qexp.compare` does, and for each comparison its report makes
(each quantized run against the baseline, methods at equal calibration size, calibration sizes per
method) says what the pilot could have detected and how many documents per task would detect a
difference of --difference points with --power: on the average over tasks (the paired z-test the
ranking uses) and per task (the exact McNemar test), assuming the runs disagree on documents as
often as they did in the pilot. It ends with the `eval.limit` that sizes the next study, and what
that costs at the pilot's pace, and with what a sequential study of that budget (`sequential`: a look
after each tenth of it) is expected to spend on each quantized run, if the runs differ from the
baseline as they did in the pilot.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass

import pandas as pd

from ..cli import add_study_args, refusing, store_parser
from ..contract import METRICS
from .cells import detectable, docs_needed, table
from .data import Study, load_study
from .flags import add_settings_args, settings_from
from .paired import (
    average_differences,
    calibration_pairs,
    compare,
    method_pairs,
    pair_stats,
    with_power,
)
from .power import MAX_DOCS, Settings
from .scores import display_name, metric_for
from .sequential import FUTILITY, simulate
from .stats import ALPHA

__all__ = ["Plan", "plan_study", "sequential_forecast", "render_plan", "main"]


@dataclass
class Plan:
    settings: Settings
    average: pd.DataFrame  # family, a, b, docs (pilot per task), disagreement, mde, docs_needed
    tasks: pd.DataFrame  # family, task, a, b, docs, disagreement, mde, docs_needed
    limit: int | None  # documents per task the average needs for the headline family (None: more than MAX_DOCS)
    family: str | None  # the family the headline sizes for
    eval_seconds: float  # the pilot's slowest evaluation, in seconds (others may have reused cached answers)
    pilot_docs: int  # the pilot's documents per task (the largest)
    sequential: pd.DataFrame  # a, b, delta (the pilot's), documents (expected share of the budget), verdict, often
    budget: int  # documents per task the sequential figures are for: the limit, else the pilot's


LOOKS = 10  # a sequential study's looks: after each tenth of the budget
REPLICATES = 400  # simulated studies per quantized run

FAMILIES = ("methods", "calibration", "vs Baseline")  # the headline sizes for the first that has pairs


def _families(study: Study) -> dict[str, list[tuple[str, str]]]:
    baseline = [(label, study.baseline) for label in study.labels if study.baseline and label != study.baseline]
    return {"methods": method_pairs(study), "calibration": calibration_pairs(study), "vs Baseline": baseline}


def _disagreement(study: Study, a: str, b: str, tasks: list[str]) -> float:
    """The share of paired documents on which two runs disagree, over all tasks (0/1 scores)."""
    discordant = documents = 0.0
    for task in tasks:
        stats = pair_stats(study, task, metric_for(study, task))
        if stats is not None and stats.binary and a in stats.index and b in stats.index:
            paired = stats.pair(a, b)
            discordant += paired["a_only"] + paired["b_only"]
            documents += paired["n"]
    return discordant / documents if documents else math.nan


def plan_study(study: Study, settings: Settings = Settings()) -> Plan:
    averages, per_task = [], []
    for family, pairs in _families(study).items():
        if not pairs:
            continue
        tests = average_differences(study, pairs, study.tasks, settings=settings)
        tests.insert(0, "family", family)
        tests["docs_per_task"] = tests["n"] // max(1, len(study.tasks))
        tests["disagreement"] = [_disagreement(study, a, b, study.tasks) for a, b in pairs]
        averages.append(tests)
        rows = with_power(study, compare(study, pairs, study.tasks, family), settings)
        rows["disagreement"] = (rows["a_only"] + rows["b_only"]) / rows["n"].where(rows["n"] > 0)
        per_task.append(rows.rename(columns={"table": "family"}))
    average = pd.concat(averages, ignore_index=True) if averages else pd.DataFrame(
        columns=["family", "a", "b", "delta", "n", "docs_per_task", "disagreement", "mde", "docs_needed"])
    tasks = pd.concat(per_task, ignore_index=True) if per_task else pd.DataFrame(
        columns=["family", "task", "a", "b", "n", "disagreement", "mde", "docs_needed"])
    tested = average[average["delta"].notna()]
    family = next((f for f in FAMILIES if f in set(tested["family"])), None)
    limit = None
    if family is not None:  # pairs without documents both runs scored are left out: they tell nothing
        needed = tested.loc[tested["family"] == family, "docs_needed"]
        limit = None if needed.isna().any() else int(needed.max())
    seconds = study.runs[METRICS.EVAL_SECONDS].max() if METRICS.EVAL_SECONDS in study.runs else math.nan
    pilot = max((int(stats.n.diagonal().max()) for task in study.tasks
                 if (stats := pair_stats(study, task, metric_for(study, task))) is not None), default=0)
    budget = limit or pilot
    return Plan(settings, average, tasks, limit, family, float(seconds), pilot,
                sequential_forecast(average, len(study.tasks), budget, settings), budget)


def sequential_forecast(average: pd.DataFrame, tasks: int, budget: int, settings: Settings,
                        replicates: int = REPLICATES, futility: float = FUTILITY) -> pd.DataFrame:
    """Each quantized run against the baseline, simulated as a sequential study of `budget` documents
    per task would judge it if the true difference and disagreement were the pilot's: the expected
    share of the budget it uses and its most frequent verdict. Each decides at alpha / the number of
    them, as a sequential study of these runs would (eval.sequential.comparisons), and stops for
    futility at `futility` (eval.sequential.futility's default)."""
    rows = []
    against = average[(average["family"] == "vs Baseline") & average["delta"].notna() & average["disagreement"].notna()]
    for r in against.itertuples() if budget >= LOOKS and tasks else ():
        out = simulate(r.delta, r.disagreement, tasks, budget, LOOKS, settings.margin, replicates, seed=0,
                       alpha=ALPHA / len(against), futility=futility)
        verdicts = pd.Series(out.decided).replace("", "undecided").value_counts(normalize=True)
        rows.append({"a": r.a, "b": r.b, "delta": r.delta, "documents": out.documents.mean() / out.budget,
                     "verdict": verdicts.index[0], "often": verdicts.iloc[0]})
    return pd.DataFrame(rows, columns=["a", "b", "delta", "documents", "verdict", "often"])


def render_plan(plan: Plan, fmt: str = "text") -> str:
    s = plan.settings
    size = f"{100 * s.difference:g} points at {100 * s.power:g}% power"
    out = [f"Planning from a pilot of {plan.pilot_docs} documents per task: documents per task to detect {size}",
           "(two-sided α = 0.05 before Holm; the runs assumed to disagree as often as in the pilot).", ""]
    if plan.family is None:
        out.append("This study has no pair of runs with documents both scored (no baseline and a single quantized "
                   "run, or none): it is too small for any power statement. Run a baseline and at least one "
                   "quantized run on the same documents first.")
        return "\n".join(out) + "\n"
    rows = [{"comparison": r.family, "A": r.a, "B": r.b, "pilot docs/task": str(r.docs_per_task),
             "disagree %": "" if pd.isna(r.disagreement) else f"{100 * r.disagreement:.1f}",
             "detectable now ≥ pts": detectable(r.mde),
             f"docs/task for {100 * s.difference:g} pts": docs_needed(r.docs_needed, True)}
            for r in plan.average.itertuples()]
    out += ["On the average over tasks (what the ranking tests):", table(pd.DataFrame(rows), fmt), ""]
    rows = []
    for (family, task), part in plan.tasks.groupby(["family", "task"], sort=False):
        tested = part[part["n"] > 0]
        rows.append({"comparison": family, "task": display_name(task), "pairs": str(len(tested)),
                     "disagree % (median)": "" if tested.empty else f"{100 * tested['disagreement'].median():.1f}",
                     "detectable now ≥ pts (median)": detectable(tested["mde"].median()),
                     f"docs for {100 * s.difference:g} pts (largest)":
                     docs_needed(None if tested["docs_needed"].isna().any() else tested["docs_needed"].max(),
                                 not tested.empty)})
    out += ["Per task (the exact McNemar test of each table):", table(pd.DataFrame(rows), fmt), ""]
    pairs = int(((plan.average["family"] == plan.family) & plan.average["delta"].notna()).sum())
    if plan.limit is None:
        out.append(f"To tell apart {size} on the average for {plan.family} ({pairs} pairs) would take more than "
                   f"{MAX_DOCS:,} documents per task: out of reach; plan for a larger difference (--difference).")
    else:
        cost = ""
        if plan.pilot_docs and not math.isnan(plan.eval_seconds):
            minutes = plan.eval_seconds * plan.limit / plan.pilot_docs / 60
            cost = (f" At the pace of the pilot's slowest evaluation ({plan.eval_seconds:.0f} s for {plan.pilot_docs} "
                    f"documents per task) one at that size takes about {max(1, round(minutes))} min per run.")
        which = "its one pair" if pairs == 1 else f"the largest of its {pairs} pairs"
        out.append(f"Use eval.limit={plan.limit} to tell apart {size} on the average for {plan.family} "
                   f"({which}).{cost}")
    if len(plan.sequential):
        rows = [{"A": r.a, "B": r.b, "pilot difference pts": f"{100 * r.delta:+.1f}",
                 "expected documents": f"{100 * r.documents:.0f}%", "verdict (how often)": f"{r.verdict} ({100 * r.often:.0f}%)"}
                for r in plan.sequential.itertuples()]
        total = plan.sequential["documents"].mean()
        out += ["", f"Sequentially, at {plan.budget} documents per task with a look after each tenth (qexp.compare.sequential, "
                f"equivalence within ±{100 * s.margin:g} points, each run decided at α/{len(plan.sequential)} so its verdict "
                f"survives Holm, stopping for futility below {100 * FUTILITY:g}%), if each run differs from the baseline "
                f"as in the pilot "
                f"({REPLICATES} simulated studies each; documents as a share of the fixed study's):",
                table(pd.DataFrame(rows), fmt), f"The quantized runs would use about {100 * total:.0f}% of the fixed study's documents."]
    return "\n".join(out) + "\n"


@refusing
def main(argv: list[str] | None = None) -> int:
    parser, _ = store_parser("python -m qexp.compare.plan", __doc__)
    add_study_args(parser, "plan from")
    parser.add_argument("--format", choices=["text", "markdown"], default="text")
    add_settings_args(parser, equivalence=False)
    args = parser.parse_args(argv)
    settings = settings_from(args, "qexp.compare.plan")
    if isinstance(settings, int):
        return settings
    study = load_study(args.tracking_uri, args.experiment, model=args.model, sweep_id=args.sweep_id)
    print(render_plan(plan_study(study, settings), args.format))
    return 0


if __name__ == "__main__":
    sys.exit(main())
