"""Sequential evaluation (eval.sequential.looks = K > 0): each run in chunks, each quantized run stopping
as soon as its comparison with the baseline is decided.

- **Which documents.** Each leaf task's documents are drawn in a random order seeded by `seed` and the
  task's name (`eval.order=shuffled`), the same for every run of a study, so runs pair on the same
  documents. The first `eval.limit` of that order are the budget; the budget is cut into K chunks.
- **A look per chunk.** After its chunk k, a quantized run's outcomes on chunks 1..k and the baseline's
  on the same chunks give the report's paired average difference (`compare.stats.weighted_mean_differences`,
  each requested task weighing the same) and `compare.sequential.decide` its verdict: worse, better,
  equivalent within ±`eval.sequential.margin`, or the next chunk. The baseline evaluates the whole budget.
- **α shared by the study.** Each run decides at alpha / `eval.sequential.comparisons` (the study's
  quantized runs), so a run that stops worse, better or equivalent is one the report, Holm-adjusted
  across those runs, still calls so.
- **Futility.** An undecided run also stops once deciding it by the budget has become unlikely: the
  probability of a decision at the last look, predicted from its looks so far, is below
  `eval.sequential.futility` (`compare.sequential.predictive_power`). It stops undecided, so the
  error rates hold; the cost is a little power (docs/report.md, "Sequential").
- **Per task, if asked** (`eval.sequential.per_task`). Each requested task is also decided on its own
  documents, at alpha / (comparisons × tasks), so Holm across the study's runs and tasks keeps it. A
  task is evaluated while the average is unsettled (its documents are the average's too, so the
  average's design holds) and after that only until it is settled itself (decided, or stopped for
  futility); the run ends when the average and every task are settled, or at the budget. The cost:
  the unsettled tasks' documents.
- **Shared chunks, no waiting on runs.** Each model's chunk outcomes are files under
  `<cache_dir>/sequential/<the model's answers key>/<eval_hash>/`. A run that needs a chunk of the
  baseline that is not there yet evaluates it itself, under the baseline's lock: a job waits for another
  at most while that one finishes a chunk, never for a whole run.
- **Resume.** A chunk's file is written once it is complete, and every answer is committed to the answers
  cache as it is computed: a killed run resumes at its last chunk, and documents a finished fixed-size
  evaluation of the same model already answered cost nothing.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from .compare.sequential import Look, Verdict, decide, futile, repeated_equivalence_p, repeated_p
from .compare.stats import ALPHA, weighted_mean_differences
from .evaluation import EvalResult
from .files import write_atomic

__all__ = ["order", "budget", "chunks", "Outcomes", "ChunkSource", "Decision", "TaskDecision", "look", "run_looks"]

log = logging.getLogger("qexp")

METRIC = "acc"  # the report's metric for every accuracy task; a task without it is not decided on


def order(n: int, task: str, seed: int) -> list[int]:
    """A task's `n` documents in the study's random order: the same for every run (seed and task name)."""
    stream = int.from_bytes(hashlib.sha256(task.encode()).digest()[:8], "little")
    return np.random.default_rng([seed, stream]).permutation(n).tolist()


def budget(sizes: dict[str, int], limit: int | None, seed: int) -> dict[str, list[int]]:
    """Each task's documents in the random order, the first `limit` of them (eval.order=shuffled)."""
    return {task: order(n, task, seed)[:n if limit is None else min(limit, n)] for task, n in sizes.items()}


def chunks(sizes: dict[str, int], limit: int, looks: int, seed: int) -> list[dict[str, list[int]]]:
    """Per look, each task's documents: its budget cut into `looks` nearly equal parts, sorted (lm-eval
    labels the documents of `samples` correctly only in index order). A task with fewer documents
    than looks has them in the first parts, so every look after the first has all tasks."""
    out: list[dict[str, list[int]]] = [{} for _ in range(looks)]
    for task, chosen in budget(sizes, limit, seed).items():
        for k, part in enumerate(np.array_split(np.array(chosen, dtype=np.int64), looks)):
            if len(part):
                out[k][task] = sorted(int(i) for i in part)
    return out


Outcomes = dict[str, dict[str, float]]  # leaf task -> document index (as a string) -> the metric (0 or 1)


def outcomes(result: EvalResult) -> Outcomes:
    """The per-document metric of every task that has it, from lm-eval's samples."""
    return {task: {str(r["doc_id"]): float(r[METRIC]) for r in records if METRIC in r}
            for task, records in result.samples.items() if any(METRIC in r for r in records)}


@dataclass
class ChunkSource:
    """One model's chunk outcomes: read from `folder`, else evaluated by `evaluate(documents)` under
    the folder's lock (another process evaluating this model's chunk finishes it first), then written."""

    folder: Path
    evaluate: Callable[[dict[str, list[int]]], EvalResult]

    def path(self, k: int) -> Path:
        return self.folder / f"chunk-{k:03d}.json"

    def read(self, k: int, documents: dict[str, list[int]]) -> Outcomes | None:
        """Chunk `k`'s outcomes on file, if it holds these `documents`."""
        path = self.path(k)
        if not path.is_file():
            return None
        saved = json.loads(path.read_text())
        return saved["outcomes"] if saved["documents"] == documents else None

    def get(self, k: int, documents: dict[str, list[int]]) -> Outcomes:
        found = self.read(k, documents)
        if found is not None:
            return found
        with self.lock():
            found = self.read(k, documents)  # evaluated by the process that held the lock
            if found is None:
                found = outcomes(self.evaluate(documents))
                write_atomic(self.path(k), json.dumps({"documents": documents, "outcomes": found}))
        return found

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """The model's answers cache takes one writer at a time: evaluating any of its chunks holds this."""
        self.folder.mkdir(parents=True, exist_ok=True)
        with open(self.folder / ".lock", "w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)


def look(mine: list[Outcomes], base: list[Outcomes], groups: dict[str, list[str]], fraction: float) -> Look:
    """The paired average difference (as a fraction) over the chunks both have, tasks weighing the same."""
    sums = np.zeros((3, len(groups)))
    for j, leaves in enumerate(groups.values()):
        for a_chunk, b_chunk in zip(mine, base):
            for leaf in leaves:
                a, b = a_chunk.get(leaf, {}), b_chunk.get(leaf, {})
                d = np.array([a[doc] - b[doc] for doc in a.keys() & b.keys()])
                sums[:, j] += (len(d), d.sum(), (d**2).sum())
    decided = [j for j in range(len(groups)) if sums[0, j] > 0]  # tasks without the metric have no say
    tests = weighted_mean_differences(*(s[None, decided] for s in sums))
    return Look(fraction, float(tests["delta"][0]), float(tests["se"][0]))


@dataclass
class TaskDecision:
    """eval.sequential.per_task: one requested task's own comparison with the baseline, decided at
    alpha / (comparisons × tasks) so that Holm across the study's runs and tasks keeps it."""

    verdict: str  # worse | better | equivalent | undecided
    looks: list[Look] = field(default_factory=list)  # this task's looks, up to the one that decided it
    interval: tuple[float, float] = (float("nan"), float("nan"))  # repeated interval at that level, points
    p_value: float = float("nan")
    equivalence_p: float = float("nan")
    documents: int = 0  # its leaves' documents evaluated
    futile: float | None = None  # stopped for futility: the predicted probability of a decision then


@dataclass
class Decision:
    """How a sequential run ended: the verdict against the baseline, the looks it took, its documents."""

    verdict: str  # worse | better | equivalent | undecided (at the budget) | "" for the baseline
    looks: list[Look] = field(default_factory=list)  # the average's, up to the one that decided it
    planned: int = 0  # looks in the design
    documents: dict[str, int] = field(default_factory=dict)  # leaf task -> documents used
    budget: dict[str, int] = field(default_factory=dict)  # leaf task -> documents of the whole budget
    interval: tuple[float, float] = (float("nan"), float("nan"))  # repeated 1 - alpha/comparisons interval, points
    p_value: float = float("nan")  # the repeated p-value (valid at the stop; Holm applies across runs)
    equivalence_p: float = float("nan")  # the repeated p-value of equivalence within ±margin
    margin: float = 0.0  # points
    comparisons: int = 1  # the study's comparisons sharing alpha: decided at alpha / comparisons
    evaluated: int = 0  # chunks evaluated (per task, the run may go on after the average is decided)
    futile: float | None = None  # stopped for futility: the predicted probability of a decision then
    futility: float = 0.0  # eval.sequential.futility
    tasks: dict[str, TaskDecision] = field(default_factory=dict)  # per_task: requested task -> its decision

    @property
    def reason(self) -> str:
        if not self.verdict:
            return "the baseline: the whole budget"
        if self.verdict == "undecided" and self.futile is not None:
            reason = (f"stopped undecided at look {len(self.looks)} of {self.planned}: a decision by the budget "
                      f"was unlikely ({100 * self.futile:.1f}% < futility {100 * self.futility:g}%)")
        elif self.verdict == "undecided":
            reason = f"budget reached after {len(self.looks)} looks, not decided"
        else:
            reason = (f"decided {self.verdict} at look {len(self.looks)} of {self.planned}"
                      + (f", at alpha/{self.comparisons}" if self.comparisons > 1 else ""))
        if self.tasks:
            decided = sum(task.verdict != "undecided" for task in self.tasks.values())
            hopeless = sum(task.futile is not None for task in self.tasks.values())
            reason += (f"; {decided} of {len(self.tasks)} tasks decided, each at alpha/"
                       f"{self.comparisons * len(self.tasks)}" + (f", {hopeless} stopped for futility" if hopeless else "")
                       + f", in {self.evaluated} looks")
        return reason

    def record(self) -> dict:
        return {**asdict(self), "reason": self.reason}

    @classmethod
    def from_record(cls, record: dict) -> "Decision":
        fields = {k: v for k, v in record.items() if k not in ("reason", "looks", "interval", "tasks")}
        tasks = {name: TaskDecision(**{**task, "looks": [Look(**x) for x in task["looks"]],
                                       "interval": tuple(task["interval"])})
                 for name, task in record.get("tasks", {}).items()}
        return cls(looks=[Look(**x) for x in record["looks"]], interval=tuple(record["interval"]), tasks=tasks, **fields)


def _concluded(looks: list[Look], verdict: Verdict, margin: float) -> dict:
    """A comparison's verdict, interval (points) and repeated p-values after its `looks`."""
    return dict(verdict=verdict.decided or "undecided", interval=(100 * verdict.ci_low, 100 * verdict.ci_high),
                p_value=repeated_p(looks), equivalence_p=repeated_equivalence_p(looks, margin / 100))


def run_looks(parts: list[dict[str, list[int]]], own: ChunkSource, base: ChunkSource | None,
              groups: dict[str, list[str]], margin: float, announce: Callable[[int, str], object],
              name: str = "", comparisons: int = 1, per_task: bool = False, futility: float = 0.0
              ) -> tuple[Decision, list[dict[str, list[int]]]]:
    """Evaluate `own`'s chunks in turn; with a `base`line, stop at the first look that decides the
    average at alpha / `comparisons`, or at which deciding it by the budget has a predicted
    probability below `futility` (0: never). `per_task`: each of the `groups` (the requested tasks) is
    also decided on its own at alpha / (`comparisons` × tasks), by the same rules, and the run goes on
    until it and the average are settled: a task keeps being evaluated while the average is unsettled
    (its documents are the average's too), and after that only while it is unsettled itself.
    `announce(k, waiting_for)` runs before each chunk (progress). Returns the decision and the documents
    each chunk evaluated."""
    mine: list[Outcomes] = []
    theirs: list[Outcomes] = []
    used: list[dict[str, list[int]]] = []
    looks: list[Look] = []
    verdict: Verdict | None = None
    stopped: float | None = None  # the average stopped for futility: its predicted probability of a decision
    average_settled = False  # decided, or stopped for futility: its looks are over
    alpha = ALPHA / comparisons
    tasks: dict[str, list[Look]] = {}  # per_task: each task with the metric -> its looks
    settled: dict[str, tuple[Verdict, float | None]] = {}  # per_task: each task's verdict once settled, and its futility
    for k, chunk in enumerate(parts):
        if average_settled:  # per task, after the average: only the unsettled tasks
            chunk = {leaf: docs for leaf, docs in chunk.items()
                     if any(leaf in groups[task] and task not in settled for task in tasks)}
        announce(k, _waiting_for(verdict, stopped, [t for t in tasks if t not in settled], margin))
        mine.append(own.get(k, chunk) if chunk else {})  # empty: a small task's budget was all in earlier chunks
        used.append(chunk)
        if base is None:
            continue
        theirs.append(base.get(k, parts[k]))  # the baseline's whole chunk: the same file for every run
        fraction = (k + 1) / len(parts)
        if not average_settled:
            looks.append(look(mine, theirs, groups, fraction))
            verdict = decide(looks, margin / 100, alpha)
            stopped = _futile(looks, verdict, len(parts), margin, alpha, futility)
            average_settled = bool(verdict.decided) or stopped is not None
            log.info("%s: look %d/%d: %+.2f pts, repeated interval [%+.2f, %+.2f]%s", name, k + 1, len(parts),
                     100 * looks[-1].delta, 100 * verdict.ci_low, 100 * verdict.ci_high,
                     f": {verdict.decided}" if verdict.decided else
                     "" if stopped is None else f": futile ({100 * stopped:.1f}% to decide by the budget)")
        if per_task:
            if k == 0:  # the tasks with the metric (every task has documents in the first chunk)
                tasks = {task: [] for task, leaves in groups.items() if any(leaf in mine[0] for leaf in leaves)}
            for task in [t for t in tasks if t not in settled]:
                tasks[task].append(look(mine, theirs, {task: groups[task]}, fraction))
                task_verdict = decide(tasks[task], margin / 100, alpha / len(tasks))
                hopeless = _futile(tasks[task], task_verdict, len(parts), margin, alpha / len(tasks), futility)
                if task_verdict.decided or k == len(parts) - 1 or hopeless is not None:
                    settled[task] = (task_verdict, hopeless)
        if average_settled and all(task in settled for task in tasks):
            break
    documents = {task: sum(len(p.get(task, [])) for p in used) for task in {t for p in parts for t in p}}
    whole = {task: sum(len(p.get(task, [])) for p in parts) for task in documents}
    if base is None:
        return Decision("", [], len(parts), documents, whole, evaluated=len(used)), used
    average = _concluded(looks, verdict, margin)
    return Decision(average.pop("verdict"), looks, len(parts), documents, whole, **average, margin=margin,
                    comparisons=comparisons, evaluated=len(used), futile=stopped, futility=futility,
                    tasks={task: TaskDecision(looks=tasks[task], **_concluded(tasks[task], settled[task][0], margin),
                                              documents=sum(documents[leaf] for leaf in groups[task] if leaf in documents),
                                              futile=settled[task][1])
                           for task in tasks}), used


def _futile(looks: list[Look], verdict: Verdict, planned: int, margin: float, alpha: float, futility: float
            ) -> float | None:
    """`compare.sequential.futile` for a comparison not yet decided (margin in points); None when decided."""
    return None if verdict.decided else futile(looks, planned, margin / 100, alpha, futility)


def _waiting_for(verdict: Verdict | None, stopped: float | None, unsettled: list[str], margin: float) -> str:
    """What the next chunk is evaluated to decide, for the progress line."""
    if verdict is None:
        return ""
    if not verdict.decided and stopped is None:
        return (f"vs baseline {100 * (verdict.ci_low + verdict.ci_high) / 2:+.1f} pts, repeated interval "
                f"[{100 * verdict.ci_low:+.1f}, {100 * verdict.ci_high:+.1f}]; stops once it excludes 0 "
                f"or lies within ±{margin:g}")
    return f"the average {verdict.decided or 'stopped for futility'}; deciding {', '.join(unsettled)}"
