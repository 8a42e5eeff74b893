"""An evaluation with eval.order=shuffled: each task's seeded sample of eval.limit documents, in
eval.sequential.looks chunks (one chunk at a fixed size), each quantized run of a sequential study
stopping at the look that settles it against the baseline (`qexp.stopping`).

- **The models.** lm-eval loads each checkpoint once; a run that needs a baseline chunk nobody has
  evaluated loads the baseline too and evaluates it under the baseline's lock.
- **The result.** Once stopped, lm-eval runs once more on every document used (all answers from the
  cache), so the run logs lm-eval's own results and per-document samples, as a fixed-size run does.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from .evaluation import QEXP_TASKS, EvalResult
from .stopping import ChunkSource, Decision, chunks, run_looks

__all__ = ["Model", "evaluate_shuffled"]

log = logging.getLogger("qexp")


@dataclass(frozen=True)
class Model:
    """A model to evaluate: its checkpoint, its answers cache (`pipeline._responses`), its chunks' folder."""

    path: Path
    responses: Path
    folder: Path


def evaluate_shuffled(spec, mine: Model, base: Model | None) -> tuple[EvalResult, Decision | None]:
    """`spec`'s evaluation with eval.order=shuffled: the seeded sample of eval.limit documents per task,
    in eval.sequential.looks chunks (one chunk for a fixed size), then lm-eval once on the documents
    used. With a `base`line (a quantized run of a sequential study) it stops at the look that decides.
    Returns the evaluation and, for a sequential one, how it ended."""
    from . import progress
    from .evaluation import evaluate, load_model, load_tasks

    cfg = spec.cfg
    objects, requested = load_tasks(spec.plan, spec.cache_dir)
    sizes = {name: len(task.eval_docs) for name, task in objects.items()}
    leaves = {task: n for task, n in sizes.items() if task not in QEXP_TASKS}
    planned = cfg.eval.sequential.looks
    parts = chunks(leaves, cfg.eval.limit, max(planned, 1), cfg.seed)
    settings = dict(dtype=cfg.eval.dtype, device=spec.device, num_fewshot=cfg.eval.num_fewshot, limit=None,
                    batch_size=cfg.eval.batch_size, seed=cfg.seed, cache_dir=spec.cache_dir)
    loaded: dict[Path, object] = {}
    label, look_at = ["evaluating"], [0]

    def run(model: Model, documents: dict[str, list[int]] | None, what: str) -> EvalResult:
        if model.path not in loaded:
            loaded[model.path] = load_model(model.path, dtype=settings["dtype"], device=settings["device"],
                                            batch_size=settings["batch_size"])
        final = what == "final"  # lm-eval's own results (standard errors included) of everything used
        with progress.phase(spec.run_name, "evaluating the documents used, together" if final else what,
                            "requests", not cfg.verbose):
            return evaluate(model.path, spec.plan, **settings, responses=model.responses, documents=documents,
                            tasks=None if final else [objects[task] for task in sorted(documents)],
                            model=loaded[model.path], **({} if final else {"bootstrap_iters": 0}))

    def announce(k: int, waiting_for: str) -> None:
        look_at[0], label[0] = k, f"evaluating chunk {k + 1}/{len(parts)}" if planned else "evaluating"
        if waiting_for:
            label[0] += f" ({waiting_for})"

    own = ChunkSource(mine.folder, lambda documents: run(mine, documents, label[0]))
    other = None if base is None or not planned else ChunkSource(
        base.folder, lambda documents: run(base, documents, f"evaluating the baseline's chunk {look_at[0] + 1}/{len(parts)}"))
    groups = {task: members for task, members in requested.items() if task not in QEXP_TASKS}
    decision, used = run_looks(parts, own, other, groups, float(cfg.eval.sequential.margin), announce, spec.run_name,
                               cfg.eval.sequential.comparisons or 1, bool(cfg.eval.sequential.per_task),
                               float(cfg.eval.sequential.futility))
    documents = {task: sorted(i for part in used for i in part.get(task, [])) for task in leaves}
    documents.update({task: list(range(n if cfg.eval.limit is None else min(cfg.eval.limit, n)))
                      for task, n in sizes.items() if task in QEXP_TASKS})
    with own.lock():  # the chunks' answers come from the cache (the held-out task's are computed now)
        result = run(mine, {task: docs for task, docs in documents.items() if docs}, "final")
    if decision.verdict:
        log.info("%s: %s; %d of %d documents", spec.run_name, decision.reason, sum(decision.documents.values()),
                 sum(decision.budget.values()))
    return result, decision if planned else None
