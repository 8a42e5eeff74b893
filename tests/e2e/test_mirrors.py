"""Two local mirrors of the same hub ids and split layout, evaluated one after the other in one
`datasets` cache, are each scored on their own rows (datasets 5.2 keys its cached build of a local
folder by name and layout, so without a cache per content fingerprint the second reads the first's)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from qexp.evaluation import evaluate, plan_tasks
from qexp.fixtures import FIXTURES_DIR
from qexp.models import resolve_model

pytestmark = pytest.mark.e2e

TASKS = ["arc_easy", "hellaswag"]


def _mirror(root: Path, keep: int | None) -> Path:
    """A copy of the fixture mirrors; with `keep`, ARC-Easy's test and HellaSwag's validation cut to
    that many rows (the folder names, READMEs and splits stay the same)."""
    shutil.copytree(FIXTURES_DIR, root)
    if keep is not None:
        for rel in ("allenai/ai2_arc/ARC-Easy/test.jsonl", "Rowan/hellaswag/data/validation.jsonl"):
            path = root / rel
            path.write_text("".join(path.read_text().splitlines(keepends=True)[:keep]))
    return root


def _rows(path: Path) -> int:
    return sum(1 for line in path.read_text().split("\n") if line.strip())


def test_two_same_layout_mirrors_are_each_scored_on_their_own_rows(tmp_path, cache_dir):
    a, b = _mirror(tmp_path / "a", None), _mirror(tmp_path / "b", 2)
    model = resolve_model("qexp:tiny-qwen3", cache_dir)
    scored = {}
    for name, root in (("a", a), ("b", b)):
        plan = plan_tasks(TASKS, root, cache_dir)
        out = evaluate(model, plan, dtype="float32", device="cpu", num_fewshot=0, limit=None, batch_size=8,
                       seed=0, cache_dir=cache_dir)
        scored[name] = {task: sorted(json.dumps(s["doc"], sort_keys=True) for s in out.samples[task])
                        for task in TASKS}
    assert len(scored["a"]["arc_easy"]) == _rows(a / "allenai/ai2_arc/ARC-Easy/test.jsonl") == 10
    assert len(scored["a"]["hellaswag"]) == _rows(a / "Rowan/hellaswag/data/validation.jsonl") == 10
    assert len(scored["b"]["arc_easy"]) == 2 and len(scored["b"]["hellaswag"]) == 2
    assert set(scored["b"]["arc_easy"]) < set(scored["a"]["arc_easy"])  # b's own rows, which a also has
