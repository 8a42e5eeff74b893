from __future__ import annotations

import shutil

from qexp.evaluation import plan_tasks
from qexp.fixtures import FIXTURES_DIR


def test_fixture_plan_mirrors_every_leaf_task():
    plan = plan_tasks(["arc_challenge", "arc_easy", "hellaswag", "mmlu"], FIXTURES_DIR)
    assert len(plan.leaves) == 3 + 57
    assert set(plan.local) == set(plan.leaves)
    assert plan.leaves["mmlu_anatomy"] == "cais/mmlu"
    assert plan.eval_data == "fixtures"


def test_partial_and_other_mirrors_are_labelled_honestly(tmp_path):
    shutil.copytree(FIXTURES_DIR / "allenai", tmp_path / "allenai")
    assert plan_tasks(["arc_easy"], tmp_path).eval_data == "local"
    assert plan_tasks(["arc_easy", "hellaswag"], tmp_path).eval_data == "mixed"
    assert plan_tasks(["arc_easy"], None).eval_data == "hub"
