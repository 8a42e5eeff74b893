"""A sequential evaluation's mechanics (qexp.stopping): which documents, in which chunks; the look's
paired statistic; stopping at the first decided look; chunks shared through files, each evaluated once."""

from __future__ import annotations

import json
import multiprocessing
import time
from types import SimpleNamespace

import numpy as np
import pytest

from qexp.compare.sequential import Look, decide, predictive_power, repeated_equivalence_p, repeated_p
from qexp.compare.stats import ALPHA, weighted_mean_differences
from qexp.evaluation import EvalResult
from qexp.stopping import ChunkSource, Decision, budget, chunks, look, order, outcomes, run_looks

SIZES = {"arc_easy": 2376, "hellaswag": 10042, "mmlu_anatomy": 135, "tiny": 3}


def test_the_order_is_the_same_for_every_run_and_differs_between_tasks_and_seeds():
    assert order(500, "arc_easy", 0) == order(500, "arc_easy", 0)  # every run of a study: the same documents
    assert sorted(order(500, "arc_easy", 0)) == list(range(500))
    assert order(500, "arc_easy", 0) != order(500, "arc_easy", 1)
    assert order(500, "arc_easy", 0) != order(500, "arc_challenge", 0)
    assert order(500, "arc_easy", 0)[:50] != list(range(50))  # not the dataset's order


def test_the_chunks_cut_each_tasks_budget_into_sorted_nearly_equal_parts():
    parts = chunks(SIZES, limit=500, looks=10, seed=0)
    chosen = budget(SIZES, 500, 0)
    assert len(parts) == 10
    for task, n in SIZES.items():
        got = [i for part in parts for i in part.get(task, [])]
        assert sorted(got) == sorted(chosen[task]) and len(got) == min(500, n)  # the budget, each document once
        assert all(part[task] == sorted(part[task]) for part in parts if task in part)  # lm-eval's samples need it
        sizes = [len(part.get(task, [])) for part in parts]
        assert max(sizes) - min(sizes) <= 1 or n < 10
    assert [len(part.get("tiny", [])) for part in parts] == [1, 1, 1] + [0] * 7  # few documents: first looks
    assert all(set(part) == set(SIZES) for part in parts[:3])


def _outcomes(rng, n_tasks=3, docs=40, p=0.5) -> dict:
    return {f"t{j}": {str(i): float(rng.random() < p) for i in range(docs)} for j in range(n_tasks)}


def test_a_look_is_the_reports_paired_average_test_on_the_documents_both_runs_have():
    rng = np.random.default_rng(0)
    mine = [_outcomes(rng), _outcomes(rng)]
    base = [_outcomes(rng), _outcomes(rng)]
    del base[1]["t2"]["3"]  # the baseline lacks one document: not paired, not counted
    groups = {"a": ["t0"], "b": ["t1", "t2"]}  # a group pools its leaves, as the report's tables do
    got = look(mine, base, groups, 0.5)
    n, sum_d, sum_sq = np.zeros(2), np.zeros(2), np.zeros(2)
    for j, leaves in enumerate(groups.values()):
        for a, b in zip(mine, base):
            for leaf in leaves:
                d = [a[leaf][k] - b[leaf][k] for k in a[leaf] if k in b[leaf]]
                n[j], sum_d[j], sum_sq[j] = n[j] + len(d), sum_d[j] + sum(d), sum_sq[j] + sum(x * x for x in d)
    assert n[1] == 4 * 40 - 1
    expected = weighted_mean_differences(n[None], sum_d[None], sum_sq[None])
    assert got == Look(0.5, pytest.approx(expected["delta"][0]), pytest.approx(expected["se"][0]))


class Fake:
    """A model whose chunk outcomes are drawn: `shift` more documents right than the baseline's."""

    def __init__(self, shift: float | dict[str, float], seed: int):
        self.shift, self.seed, self.calls = shift, seed, []

    def __call__(self, documents):
        self.calls.append(documents)
        rng = np.random.default_rng([self.seed, len(self.calls)])
        shift = lambda task: self.shift if isinstance(self.shift, float) else self.shift[task]  # noqa: E731
        samples = {task: [{"doc_id": i, "acc": float(rng.random() < 0.5 + shift(task))} for i in docs]
                   for task, docs in documents.items()}
        return EvalResult({}, samples)


@pytest.mark.parametrize("shift,verdict", [(-0.4, "worse"), (0.4, "better")])
def test_a_clear_difference_stops_at_the_first_look_that_decides_it(tmp_path, shift, verdict):
    parts = chunks({"a": 1000, "b": 1000}, limit=400, looks=8, seed=0)
    mine, base = Fake(shift, 1), Fake(0.0, 2)
    decision, used = run_looks(parts, ChunkSource(tmp_path / "mine", mine), ChunkSource(tmp_path / "base", base),
                               {"a": ["a"], "b": ["b"]}, 1.0, lambda k, v: None)
    assert used == parts[:len(used)]  # each chunk whole: the average is all it decides
    used = len(used)
    assert decision.verdict == verdict and used < len(parts) and len(mine.calls) == used == len(decision.looks)
    assert decide(decision.looks, 0.01).decided == verdict  # and no earlier look had decided
    assert all(not decide(decision.looks[:k], 0.01).decided for k in range(1, used))
    assert decision.documents == {"a": 50 * used, "b": 50 * used} and decision.budget == {"a": 400, "b": 400}
    assert decision.p_value == repeated_p(decision.looks) < ALPHA
    low, high = decision.interval
    assert (high < 0) if verdict == "worse" else (low > 0)
    assert Decision.from_record(json.loads(json.dumps(decision.record()))) == decision  # kept and read back


def test_no_difference_in_few_documents_runs_to_the_budget_undecided(tmp_path):
    parts = chunks({"a": 100}, limit=40, looks=4, seed=0)
    decision, used = run_looks(parts, ChunkSource(tmp_path / "m", Fake(0.0, 1)), ChunkSource(tmp_path / "b", Fake(0.0, 2)),
                               {"a": ["a"]}, 1.0, lambda k, v: None)
    assert decision.verdict == "undecided" and len(used) == 4 and decision.reason.startswith("budget reached")


def test_the_repeated_equivalence_p_value_is_below_alpha_exactly_when_equivalence_was_shown():
    shown = [Look(0.5, 0.001, 0.002), Look(1.0, 0.0005, 0.0015)]
    assert decide(shown, 0.01).decided == "equivalent" and repeated_equivalence_p(shown, 0.01) < ALPHA
    wide = [Look(0.5, 0.001, 0.01)]
    assert not decide(wide, 0.01).decided and repeated_equivalence_p(wide, 0.01) > ALPHA


def test_no_verdict_before_the_runs_have_disagreed_on_a_document():
    assert decide([Look(0.1, 0.0, 0.0)], 0.01).decided == ""


def test_a_chunk_on_file_is_read_not_evaluated_again(tmp_path):
    parts = chunks({"a": 100}, limit=40, looks=4, seed=0)
    first = Fake(0.0, 1)
    one = ChunkSource(tmp_path, first).get(0, parts[0])
    again = Fake(0.0, 99)
    assert ChunkSource(tmp_path, again).get(0, parts[0]) == one and again.calls == []  # a resumed run
    assert outcomes(EvalResult({}, {"p": [{"doc_id": 1, "bits_per_byte": [1.0, 2]}]})) == {}  # no acc: no say


def _evaluate_chunk(folder, started, seen):
    def slow(documents):
        seen.put(time.time())
        time.sleep(1.0)
        return EvalResult({}, {"a": [{"doc_id": i, "acc": 1.0} for i in documents["a"]]})
    started.wait()
    ChunkSource(folder, slow).get(0, {"a": [1, 2]})


def test_two_jobs_needing_the_same_chunk_evaluate_it_once(tmp_path):
    """The second job waits for the first's chunk (under the model's lock) and reads it: no chunk of a model
    is evaluated twice, and no two processes write its answers cache at once."""
    ctx = multiprocessing.get_context("fork")
    started, seen = ctx.Event(), ctx.Queue()
    jobs = [ctx.Process(target=_evaluate_chunk, args=(tmp_path, started, seen)) for _ in range(2)]
    for job in jobs:
        job.start()
    started.set()
    for job in jobs:
        job.join(30)
    assert [job.exitcode for job in jobs] == [0, 0]
    assert seen.qsize() == 1


def test_the_reports_sequential_verdicts_survive_holm_across_the_studys_sequential_comparisons():
    import pandas as pd

    from qexp.compare.data import Study
    from qexp.compare.stats import holm
    from qexp.compare.stopped import sequential_table
    from qexp.contract import METRICS

    def row(stopped, delta, low, high, p, eq_p):
        return {"sequential": stopped, "sequential_reason": f"decided {stopped}", METRICS.SEQUENTIAL_LOOKS: 3,
                METRICS.SEQUENTIAL_DOCS: 600, METRICS.SEQUENTIAL_BUDGET: 1000, METRICS.SEQUENTIAL_DELTA: delta,
                METRICS.SEQUENTIAL_LOW: low, METRICS.SEQUENTIAL_HIGH: high, METRICS.SEQUENTIAL_P: p,
                METRICS.SEQUENTIAL_EQUIVALENCE_P: eq_p, METRICS.SEQUENTIAL_MARGIN: 1.0, METRICS.task("a"): 0.3}

    runs = pd.DataFrame.from_dict({
        "Baseline": {"sequential": "baseline", METRICS.task("a"): 0.4},
        "GPTQ-8": row("worse", -4.0, -6.0, -2.0, 0.001, 1.0),     # stands after Holm
        "AWQ-8": row("worse", -2.0, -3.9, -0.1, 0.04, 1.0),      # 0.04 alone, 0.08 after Holm: not shown
        "RTN": row("equivalent", 0.1, -0.5, 0.7, 0.9, 0.001),     # equivalence stands
        "Fixed": {"sequential": None, METRICS.task("a"): 0.35},  # evaluated at a fixed size: not in the table
    }, orient="index")
    table = sequential_table(Study(runs=runs, docs={}, tasks=["a"])).set_index("label")
    assert list(table.index) == ["GPTQ-8", "AWQ-8", "RTN"]
    assert list(table["p_adjusted"]) == pytest.approx(list(holm([0.001, 0.04, 0.9])))
    assert list(table["verdict"]) == ["worse", "not shown to differ", "equivalent"]
    assert table.loc["GPTQ-8", "recovery_low"] == pytest.approx(100 * (1 - 6.0 / 40.0))  # from the repeated interval


def test_runs_that_share_alpha_stop_only_where_the_reports_holm_keeps_their_verdict(tmp_path):
    from qexp.compare.stats import holm

    parts = chunks({"a": 1000, "b": 1000}, limit=400, looks=8, seed=0)
    shifts = [-0.15, -0.1, -0.1, 0.1]

    def study(comparisons: int) -> list[Decision]:
        base = ChunkSource(tmp_path / f"{comparisons}" / "base", Fake(0.0, 2))
        return [run_looks(parts, ChunkSource(tmp_path / f"{comparisons}" / str(i), Fake(shift, 10 + i)), base,
                          {"a": ["a"], "b": ["b"]}, 1.0, lambda k, v: None, comparisons=comparisons)[0]
                for i, shift in enumerate(shifts)]

    shared, alone = study(len(shifts)), study(1)
    assert all(d.comparisons == 4 and "alpha/4" in d.reason for d in shared if d.verdict != "undecided")
    decided = [d.verdict in ("worse", "better") for d in shared]
    assert any(decided)
    assert all(p < ALPHA for p, kept in zip(holm([d.p_value for d in shared]), decided) if kept)
    for d in shared:  # the interval is at 1 - alpha/4: it excludes 0 exactly when the run stopped decided
        assert (d.interval[0] > 0 or d.interval[1] < 0) == (d.verdict in ("worse", "better"))
    # At alpha alone the same runs stop sooner, and some stop is one Holm across the four does not keep.
    assert sum(len(d.looks) for d in alone) < sum(len(d.looks) for d in shared)
    kept = holm([d.p_value for d in alone]) < ALPHA
    assert any(d.verdict in ("worse", "better") and not k for d, k in zip(alone, kept))


def test_per_task_each_task_is_decided_at_its_share_of_alpha_and_evaluated_only_until_it_is(tmp_path):
    """eval.sequential.per_task: "a" is far worse, "b" no different. The average is decided first; "a",
    decided by then, is not evaluated again; "b" goes on alone to the budget, undecided."""
    parts = chunks({"a": 1000, "b": 1000}, limit=400, looks=8, seed=0)
    mine = Fake({"a": -0.45, "b": 0.0}, 1)
    decision, used = run_looks(parts, ChunkSource(tmp_path / "mine", mine), ChunkSource(tmp_path / "base", Fake(0.0, 2)),
                               {"a": ["a"], "b": ["b"]}, 1.0, lambda k, v: None, comparisons=3, per_task=True)
    average_looks = len(decision.looks)
    assert decision.verdict == "worse" and average_looks < len(parts)
    assert [set(chunk) for chunk in used] == [{"a", "b"}] * average_looks + [{"b"}] * (len(parts) - average_looks)
    assert mine.calls == used and decision.evaluated == len(parts)
    assert decision.documents == {"a": 50 * average_looks, "b": 400}
    assert decision.tasks["a"].documents == 50 * average_looks and decision.tasks["b"].documents == 400
    a, b = decision.tasks["a"], decision.tasks["b"]
    assert a.verdict == "worse" and b.verdict == "undecided" and len(b.looks) == len(parts)
    assert decide(a.looks, 0.01, ALPHA / 6).decided == "worse"  # at alpha / (comparisons x tasks) ...
    assert all(not decide(a.looks[:k], 0.01, ALPHA / 6).decided for k in range(1, len(a.looks)))  # ... first there
    assert a.interval[1] < 0 and b.interval[0] < 0 < b.interval[1]
    assert a.p_value == repeated_p(a.looks) < ALPHA / 6 and b.p_value > ALPHA / 6
    assert "1 of 2 tasks decided, each at alpha/6" in decision.reason
    assert Decision.from_record(json.loads(json.dumps(decision.record()))) == decision


def test_per_task_a_task_decided_before_the_average_is_evaluated_until_the_average_is(tmp_path):
    """The average's design needs every task's documents at every look until it is decided."""
    parts = chunks({"a": 1000, "b": 1000, "c": 1000}, limit=600, looks=10, seed=0)
    mine = Fake({"a": -0.45, "b": -0.03, "c": 0.0}, 3)
    decision, used = run_looks(parts, ChunkSource(tmp_path / "mine", mine), ChunkSource(tmp_path / "base", Fake(0.0, 4)),
                               {t: [t] for t in "abc"}, 1.0, lambda k, v: None, per_task=True)
    a = decision.tasks["a"]
    assert len(a.looks) < len(decision.looks)  # "a" was decided before the average ...
    assert decision.documents["a"] == 60 * len(decision.looks)  # ... and evaluated until the average was
    assert all("a" in chunk for chunk in used[:len(decision.looks)])
    assert all(set(chunk) == {t for t, d in decision.tasks.items() if len(d.looks) > k}
               for k, chunk in enumerate(used) if k >= len(decision.looks))


def test_a_chunk_on_file_for_other_documents_is_evaluated_again(tmp_path):
    """A resumed run asks for the documents it needs; a file for others is not taken for them."""
    ChunkSource(tmp_path, Fake(0.0, 1)).get(0, {"a": [1, 2], "b": [3]})
    again = Fake(0.0, 2)
    got = ChunkSource(tmp_path, again).get(0, {"b": [3]})
    assert again.calls == [{"b": [3]}] and set(got) == {"b"}


def test_the_reports_per_task_verdicts_survive_holm_across_every_run_and_task():
    import pandas as pd

    from qexp.compare.data import Study
    from qexp.compare.render import _sequential_tasks
    from qexp.compare.stats import holm
    from qexp.compare.stopped import sequential_task_table
    from qexp.contract import METRICS

    def row(tasks: dict[str, tuple]) -> dict:
        out = {"sequential": "worse", "sequential_reason": "decided worse", METRICS.SEQUENTIAL_COMPARISONS: 2,
               METRICS.SEQUENTIAL_DELTA: -3.0, METRICS.SEQUENTIAL_LOW: -5.0, METRICS.SEQUENTIAL_HIGH: -1.0,
               METRICS.SEQUENTIAL_P: 0.001, METRICS.SEQUENTIAL_EQUIVALENCE_P: 1.0, METRICS.task("a"): 0.3,
               METRICS.task("b"): 0.3, "sequential_tasks": {t: v[0] for t, v in tasks.items()}}
        for task, (_, delta, p, eq_p) in tasks.items():
            out.update({METRICS.sequential_task(task, "delta"): delta, METRICS.sequential_task(task, "p_value"): p,
                        METRICS.sequential_task(task, "ci_low"): delta - 2, METRICS.sequential_task(task, "ci_high"): delta + 2,
                        METRICS.sequential_task(task, "equivalence_p"): eq_p, METRICS.sequential_task(task, "looks"): 4,
                        METRICS.sequential_task(task, "docs"): 200})
        return out

    runs = pd.DataFrame.from_dict({
        "Baseline": {"sequential": "baseline", METRICS.task("a"): 0.4, METRICS.task("b"): 0.4, "sequential_tasks": {}},
        "GPTQ-8": row({"a": ("worse", -6.0, 0.002, 1.0), "b": ("undecided", -1.0, 0.3, 0.5)}),
        "AWQ-8": row({"a": ("worse", -3.0, 0.015, 1.0), "b": ("equivalent", 0.1, 0.9, 0.001)}),
    }, orient="index")
    runs.loc["GPTQ-8", METRICS.sequential_task("b", "futile")] = 0.02  # stopped for futility
    study = Study(runs=runs, docs={}, tasks=["a", "b"])
    table = sequential_task_table(study)
    assert list(zip(table["label"], table["task"])) == [("GPTQ-8", "a"), ("GPTQ-8", "b"), ("AWQ-8", "a"), ("AWQ-8", "b")]
    assert list(table["comparisons"]) == [4] * 4  # two runs' two tasks: each decided at alpha/4
    assert list(table["p_adjusted"]) == pytest.approx(list(holm([0.002, 0.3, 0.015, 0.9])))
    # Each decided stop was below alpha/4, so Holm keeps it (0.015 -> 0.045); the undecided one stays so.
    assert list(table["verdict"]) == ["worse", "not shown to differ", "worse", "equivalent"]
    text = "\n".join(_sequential_tasks(SimpleNamespace(sequential_tasks=table), "markdown"))
    cells = [[c.strip() for c in line.split("|")[1:-1]] for line in text.splitlines() if line.startswith("| ")]
    assert "Sequential comparisons per task" in text and cells[4][:4] == ["AWQ-8", "b", "equivalent, look 4", "200"]
    assert cells[4][-1] == "equivalent" and cells[4][5] == "0.05/4"
    assert cells[2][:3] == ["GPTQ-8", "b", "undecided, look 4, futility"]


def test_an_undecided_run_stops_for_futility_once_a_decision_by_the_budget_is_unlikely(tmp_path):
    parts = chunks({"a": 1000, "b": 1000}, limit=400, looks=8, seed=0)

    def run(futility: float, folder: str):
        mine = Fake(0.0, 1)
        decision, used = run_looks(parts, ChunkSource(tmp_path / folder, mine), ChunkSource(tmp_path / "base", Fake(0.0, 2)),
                                   {"a": ["a"], "b": ["b"]}, 1.0, lambda k, v: None, futility=futility)
        return decision, used, mine

    stopped, used, mine = run(0.2, "futile")
    assert stopped.verdict == "undecided" and len(used) == len(stopped.looks) == len(mine.calls) < len(parts)
    assert stopped.futile == pytest.approx(predictive_power(stopped.looks, len(parts), 0.01, ALPHA)) and stopped.futile < 0.2
    assert all(predictive_power(stopped.looks[:k], len(parts), 0.01, ALPHA) >= 0.2 for k in range(1, len(used)))
    assert stopped.reason.startswith(f"stopped undecided at look {len(used)} of 8: a decision by the budget was unlikely")
    assert Decision.from_record(json.loads(json.dumps(stopped.record()))) == stopped
    whole, used, _ = run(0.0, "whole")  # futility 0: the same run goes on to the budget
    assert whole.verdict == "undecided" and len(used) == len(parts) and whole.futile is None


def test_the_plan_forecasts_with_the_futility_a_study_stops_at_by_default():
    from qexp.compare.sequential import FUTILITY
    from tests.conftest import compose_config

    assert compose_config().eval.sequential.futility == FUTILITY > 0
