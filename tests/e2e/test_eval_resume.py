"""An evaluation that dies part way resumes from the answers it had computed, and the result of the
resumed evaluation equals one computed from scratch (a partial cache is never a result)."""

from __future__ import annotations

import time

import pytest

from qexp.evaluation import evaluate, plan_tasks
from qexp.fixtures import FIXTURES_DIR
from qexp.models import resolve_model

pytestmark = pytest.mark.e2e

TASKS = ["arc_easy", "hellaswag"]


class Died(RuntimeError):
    pass


def test_a_dead_evaluation_resumes_from_its_answered_requests(tmp_path, cache_dir, monkeypatch):
    from lm_eval.api.model import CacheHook
    from lm_eval.models.huggingface import HFLM

    model = resolve_model("qexp:tiny-qwen3", cache_dir)
    plan = plan_tasks(TASKS, FIXTURES_DIR, cache_dir)
    common = dict(dtype="float32", device="cpu", num_fewshot=0, limit=None, batch_size=4, seed=0, cache_dir=cache_dir)
    fresh = evaluate(model, plan, **common)
    total = sum(len(s["arguments"]) for docs in fresh.samples.values() for s in docs)

    asked: list[int] = []  # how many requests reached the model, per call
    loglikelihood = HFLM.loglikelihood
    monkeypatch.setattr(HFLM, "loglikelihood", lambda self, requests, *a, **k: (
        asked.append(len(requests)), loglikelihood(self, requests, *a, **k))[1])
    add_partial, answered = CacheHook.add_partial, []

    def dies_after_some(self, attr, req, res):
        if len(answered) == total // 2:
            raise Died("killed half way")
        add_partial(self, attr, req, res)
        answered.append(req)

    monkeypatch.setattr(CacheHook, "add_partial", dies_after_some)
    responses = tmp_path / "responses" / "tiny"
    with pytest.raises(Died):
        evaluate(model, plan, responses=responses, **common)
    monkeypatch.setattr(CacheHook, "add_partial", add_partial)
    time.sleep(1)  # the dead attempt's SQLite writer thread commits what it was given

    asked.clear()
    resumed = evaluate(model, plan, responses=responses, **common)
    assert sum(asked) == total - total // 2  # only the unanswered requests reached the model
    for task in TASKS:
        assert [s["acc"] for s in resumed.samples[task]] == [s["acc"] for s in fresh.samples[task]]
        assert [s["resps"] for s in resumed.samples[task]] == [s["resps"] for s in fresh.samples[task]]
