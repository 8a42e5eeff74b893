"""The pipeline's orchestration with the heavy steps replaced by fakes: seconds, no model weights touched."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mlflow import MlflowClient

from qexp import baseline, calibration, pipeline, quantization, records
from qexp.evaluation import EvalResult
from qexp.quantization import Checkpoint
from tests.conftest import compose_config


@pytest.fixture
def fakes(monkeypatch):
    """quantize and evaluate that only record what they were given."""
    seen: dict[str, list] = {"quantize": [], "evaluate": [], "select": [], "responses": []}
    real_select = calibration.select

    def select(*args, **kwargs):
        seen["select"].append(args[1:])
        return real_select(*args, **kwargs)

    def quantize(model_path, samples, q, *, dtype, max_seq_length, out):
        seen["quantize"].append(None if samples is None else [c.id for c in samples])
        Path(out).mkdir(parents=True, exist_ok=True)
        return Checkpoint(Path(out), 1.5, reused=False)

    def evaluate(model_path, plan, **kwargs):
        seen["evaluate"].append(str(model_path))
        seen["responses"].append(kwargs.get("responses"))
        docs = [{"doc_id": 0, "doc_hash": "h0", "acc": 1.0}, {"doc_id": 1, "doc_hash": "h1", "acc": 0.0}]
        return EvalResult(results={"results": {"arc_easy": {"acc,none": 0.5, "sample_len": 2}}},
                          samples={"arc_easy": docs})

    monkeypatch.setattr(calibration, "select", select)
    monkeypatch.setattr(quantization, "quantize", quantize)
    monkeypatch.setattr(pipeline, "evaluate", evaluate)
    return seen


def test_a_job_selects_calibration_once_and_logs_what_quantize_used(fakes, tmp_path):
    cfg = compose_config("model=tiny", "eval=fixtures", "eval.tasks=[arc_easy]", "quant=gptq", "calib.n=8",
                         f"paths.checkpoint_dir={tmp_path / 'ckpt'}")
    result = pipeline.run(cfg)

    assert result.status == "FINISHED" and result.name == "gptq-8"
    assert fakes["select"] == [(8, 42)]  # once, in prepare; the pipeline reuses the spec's selection
    assert len(fakes["evaluate"]) == 2  # the baseline first, then the checkpoint
    client = MlflowClient(cfg.tracking.uri)
    logged = json.loads(Path(client.download_artifacts(result.run_id, "calibration/sample_ids.json",
                                                       str(tmp_path))).read_text())
    assert logged == fakes["quantize"][0] and len(logged) == 8
    run = client.get_run(result.run_id)
    assert run.data.metrics["perf/quant_seconds"] == 1.5 and run.data.metrics["arc_easy/acc"] == 0.5
    assert run.data.tags["qexp.eval_hash"] == client.get_run(
        client.search_runs([run.info.experiment_id], "tags.`qexp.quant` = 'none'")[0].info.run_id
    ).data.tags["qexp.eval_hash"]  # the baseline was evaluated under the same settings


def test_a_finished_run_ends_with_one_line_a_person_reads(fakes, tmp_path, caplog):
    caplog.set_level("INFO", logger="qexp")
    pipeline.run(compose_config("model=tiny", "eval=fixtures", "eval.tasks=[arc_easy]", "quant=gptq", "calib.n=8",
                                f"paths.checkpoint_dir={tmp_path / 'ckpt'}"))
    lines = [r.getMessage() for r in caplog.records if "finished:" in r.getMessage()]
    assert lines[0].startswith("baseline: finished: average 50.0%, checkpoint ")  # the tiny model's weights
    assert lines[1].startswith("gptq-8: finished: average 50.0% (+0.0 points vs baseline), quantized in 2 s, "
                               "evaluated in ")
    assert "{" not in "".join(lines)  # no JSON dump


def test_a_second_run_is_skipped_and_a_complete_checkpoint_is_reused(fakes, tmp_path):
    args = ("model=tiny", "eval=fixtures", "eval.tasks=[arc_easy]", "quant=gptq", "calib.n=8",
            f"paths.checkpoint_dir={tmp_path / 'ckpt'}")
    first = pipeline.run(compose_config(*args))
    assert pipeline.run(compose_config(*args)).status == "SKIPPED"
    (first.checkpoint / quantization.CHECKPOINT_MARKER).write_text(json.dumps({"quant_seconds": 9.0}))
    again = pipeline.run(compose_config(*args, "force=true"))
    assert again.status == "FINISHED" and len(fakes["quantize"]) == 2  # force quantizes anew
    fakes["quantize"].clear()
    (first.checkpoint / quantization.CHECKPOINT_MARKER).write_text(json.dumps({"quant_seconds": 9.0}))
    reused = pipeline.run(compose_config(*args, "eval.limit=5"))  # new evaluation, same checkpoint
    assert fakes["quantize"] == [] and reused.metrics["perf/quant_seconds"] == 9.0


def test_a_data_free_method_runs_once_whatever_calib_n_and_logs_no_calibration(fakes, tmp_path, caplog):
    # with the held-out perplexity the ShareGPT file is read: only data-freedom keeps calib.n out of the identity
    args = ("model=tiny", "eval=fixtures", "eval.tasks=[arc_easy,sharegpt_heldout]", "quant=rtn",
            f"paths.checkpoint_dir={tmp_path / 'ckpt'}")
    first = pipeline.run(compose_config(*args, "calib.n=215"))
    assert (first.status, first.name) == ("FINISHED", "rtn") and fakes["quantize"] == [None]
    assert fakes["select"] == []  # no calibration selected
    assert first.checkpoint.name.startswith("tiny-qwen3-rtn-")
    caplog.set_level("INFO", logger="qexp")
    second = pipeline.run(compose_config(*args, "calib.n=512"))
    assert second.status == "SKIPPED" and second.run_id == first.run_id and len(fakes["quantize"]) == 1
    assert "rtn: skipped (data-free: calib.n=512 does not apply)" in caplog.text
    client = MlflowClient(compose_config(*args).tracking.uri)
    run = client.get_run(first.run_id)
    assert (run.data.tags["qexp.quant"], run.data.tags["qexp.calib_n"]) == ("rtn", "0")
    assert not [k for k in run.data.params if k.startswith("calib.")]
    assert [i.dataset.name for i in run.inputs.dataset_inputs
            if any(t.value == "calibration" for t in i.tags)] == []
    assert "data-free: no calibration samples" in run.data.tags["mlflow.note.content"]
    identity = json.loads(Path(client.download_artifacts(first.run_id, "identity.json", str(tmp_path))).read_text())
    assert "calib" not in identity and identity["quant"]["name"] == "rtn"
    gptq = pipeline.run(compose_config(*args[:3], "quant=gptq", "calib.n=8", args[4]))
    assert gptq.config_hash != first.config_hash and fakes["quantize"][-1] is not None


def _gptq_run(tmp_path, *overrides: str):
    """A gptq-8 job on the tiny model (with the fakes): its result, MLflow's client and its run."""
    cfg = compose_config("model=tiny", "eval=fixtures", "eval.tasks=[arc_easy]", "quant=gptq", "calib.n=8",
                         f"paths.checkpoint_dir={tmp_path / 'ckpt'}", *overrides)
    result = pipeline.run(cfg)
    client = MlflowClient(cfg.tracking.uri)
    return result, client, client.get_run(result.run_id)


def test_the_checkpoint_is_a_logged_model_and_can_be_registered(fakes, tmp_path):
    result, client, run = _gptq_run(tmp_path, "tracking.register_model=true")
    model = client.get_logged_model(run.data.tags["qexp.model_id"])
    assert model.source_run_id == result.run_id and model.name == "gptq-8"
    assert [o.model_id for o in run.outputs.model_outputs] == [model.model_id]
    (version,) = client.search_model_versions("name = 'tiny-qwen3-gptq'")
    assert version.run_id == result.run_id and version.tags["qexp.calib_n"] == "8"
    assert version.tags["qexp.quant"] == "gptq" and version.tags["qexp.config_hash"] == result.config_hash
    baseline = client.search_runs([run.info.experiment_id], "tags.`qexp.quant` = 'none'")[0]
    assert "qexp.model_id" not in baseline.data.tags  # the baseline's weights are the model itself


def test_a_running_job_beats_and_the_next_job_reaps_a_silent_run_before_starting_afresh(fakes, tmp_path,
                                                                                        monkeypatch):
    import time

    from qexp.spec import prepare
    from qexp.tracking import Store

    cfg = compose_config("model=tiny", "eval=fixtures", "eval.tasks=[arc_easy]", "quant=gptq", "calib.n=8",
                         f"paths.checkpoint_dir={tmp_path / 'ckpt'}", "tracking.heartbeat_seconds=1")
    store = Store.open(cfg.tracking.uri, cfg.tracking.experiment)
    common = {"qexp.config_hash": prepare(cfg).config_hash, "qexp.quant": "gptq", "qexp.host": "another-host",
              "qexp.pid": "1"}
    silent = store.start_run("gptq-8", {**common, "qexp.heartbeat": f"{time.time() - 301:.0f}"})  # 300 s: stale
    evaluate = pipeline.evaluate
    monkeypatch.setattr(pipeline, "evaluate", lambda *a, **k: (time.sleep(2.5), evaluate(*a, **k))[1])

    result = pipeline.run(cfg)
    client = MlflowClient(cfg.tracking.uri)
    reaped = client.get_run(silent.run_id)
    assert reaped.info.status == "KILLED" and "no heartbeat for" in reaped.data.tags["qexp.killed_reason"]
    finished = client.get_run(result.run_id)
    assert result.status == "FINISHED" and result.run_id != silent.run_id
    beat = float(finished.data.tags["qexp.heartbeat"])  # refreshed while the job ran, not only at its start
    assert beat >= finished.info.start_time / 1000 + 2


def test_log_checkpoint_false_logs_no_model(fakes, tmp_path):
    result, client, run = _gptq_run(tmp_path, "tracking.log_checkpoint=false")
    assert result.status == "FINISHED" and "qexp.model_id" not in run.data.tags
    assert client.search_logged_models(experiment_ids=[run.info.experiment_id]) == []
    assert run.data.tags["qexp.checkpoint_path"] == str(result.checkpoint)  # still said where it is


def _claims_decided(stamps_and_delays, settle_ms=500):
    """Which of a set of baseline claims win: claim i is stamped at t_i, reaches the store d_i later,
    waits `settle_ms` and reads every claim that has reached the store by then."""
    from qexp.tracking import RunRecord

    runs = [RunRecord(run_id=f"r{i}", name="baseline", status="RUNNING", start_time=t)
            for i, (t, _) in enumerate(stamps_and_delays)]
    arrived = [t + d for t, d in stamps_and_delays]
    winners = []
    for i, run in enumerate(runs):
        read_at = arrived[i] + settle_ms
        seen = [r for j, r in enumerate(runs) if arrived[j] <= read_at]
        if baseline.claim_wins(run.run_id, arrived[i], seen, settle_ms):
            winners.append(run.run_id)
    return winners


def test_a_late_claim_with_the_earliest_stamp_does_not_win_beside_the_claim_that_missed_it():
    # r0 is stamped first but arrives after r1 has settled and won: r0 must yield.
    assert _claims_decided([(1000, 900), (1010, 5)]) == ["r1"]
    # Arriving within the settling pause, the earliest stamp wins as before.
    assert _claims_decided([(1000, 300), (1010, 5)]) == ["r0"]


def test_at_most_one_claim_ever_wins_and_one_wins_when_claims_arrive_promptly():
    import random

    rng = random.Random(0)
    for _ in range(3000):
        claims = [(rng.randint(0, 2000), rng.choice([0, 1, rng.randint(0, 1500)])) for _ in range(rng.randint(1, 5))]
        winners = _claims_decided(claims)
        assert len(winners) <= 1, claims
        if all(delay < 500 for _, delay in claims):
            assert len(winners) == 1, claims


@pytest.mark.parametrize("late_claim", [False, True], ids=["together", "one-claim-arrives-late"])
def test_jobs_racing_for_a_missing_baseline_evaluate_it_once(fakes, tmp_path, monkeypatch, late_claim):
    import threading
    import time

    from qexp.spec import prepare
    from qexp.tracking import TAGS, Store

    real_evaluate = pipeline.evaluate
    real_create_run = MlflowClient.create_run
    delayed = []

    def create_run(self, experiment_id, start_time=None, tags=None, run_name=None):
        if late_claim and not delayed and (tags or {}).get(TAGS.QUANT) == "none":
            # The first baseline claim is stamped, then reaches the store after the others have settled
            # (a busy store or a slow network): the earliest start time, yet seen by nobody in time.
            delayed.append(run_name)
            start_time = int(time.time() * 1000)
            time.sleep(1.0)
        return real_create_run(self, experiment_id, start_time=start_time, tags=tags, run_name=run_name)

    def slow_evaluate(*args, **kwargs):  # long enough for every job to find the baseline missing
        time.sleep(1.0)
        return real_evaluate(*args, **kwargs)

    monkeypatch.setattr(pipeline, "evaluate", slow_evaluate)
    monkeypatch.setattr(MlflowClient, "create_run", create_run)
    monkeypatch.setattr(baseline, "CLAIM_SETTLE_SECONDS", 0.5)
    monkeypatch.setattr(baseline, "WAIT_POLL_SECONDS", 0.2)
    # Threads stand in for job processes here: verbose=true keeps each from swapping the process's
    # stderr, and one prepare() first builds what jobs share on disk (processes would each do it safely).
    configs = [compose_config("model=tiny", "eval=fixtures", "eval.tasks=[arc_easy]", f"quant={method}",
                              f"calib.n={n}", f"paths.checkpoint_dir={tmp_path / 'ckpt'}", "verbose=true")
               for method, n in (("gptq", 8), ("awq", 8), ("gptq", 16))]
    prepare(configs[0])
    Store.open(configs[0].tracking.uri, "qexp")  # the store exists; the race is for the baseline only
    results = []
    threads = [threading.Thread(target=lambda cfg=cfg: results.append(pipeline.run(cfg))) for cfg in configs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)

    assert sorted(r.status for r in results) == ["FINISHED"] * 3
    client = MlflowClient(configs[0].tracking.uri)
    experiment = client.get_experiment_by_name("qexp").experiment_id
    baselines = client.search_runs([experiment], "tags.`qexp.quant` = 'none'")
    assert [b.info.status for b in baselines] == ["FINISHED"]
    evaluated = [path for path in fakes["evaluate"] if not path.startswith(str(tmp_path / "ckpt"))]
    assert len(evaluated) == 1  # the unquantized model, once
    assert len(delayed) == late_claim


def test_answers_are_kept_per_checkpoint_as_written(tmp_path):
    """A retried evaluation of the same checkpoint finds its answers; a checkpoint written again
    (same configuration, same file sizes) gets a cache of its own."""
    import os

    from qexp.identity import identity, responses_key

    ident = identity(model={"builtin": "tiny"}, dtype="float32", eval={"tasks": ["arc_easy"]},
                     quant={"name": "gptq"}, calib={"n": 8})
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(b"a" * 64)
    (tmp_path / "config.json").write_text("{}")
    first = responses_key(ident, pipeline._weight_files(tmp_path))
    assert responses_key(ident, pipeline._weight_files(tmp_path)) == first
    assert responses_key({**ident, "quant": {"name": "awq"}}, pipeline._weight_files(tmp_path)) != first
    weights.write_bytes(b"b" * 64)
    os.utime(weights, ns=(weights.stat().st_atime_ns, weights.stat().st_mtime_ns + 1_000_000))
    assert responses_key(ident, pipeline._weight_files(tmp_path)) != first
    assert pipeline._weight_files("Qwen/Qwen3-4B") == []  # a hub id: nothing on disk to stamp


def test_a_ctrl_c_a_library_swallowed_still_ends_the_run_killed(fakes, tmp_path, monkeypatch):
    """A bare `except:` around a library's optional import swallows the KeyboardInterrupt a Ctrl-C
    raises there; the job stops at its next step anyway, and its run ends KILLED."""
    import signal

    from qexp import signals

    faked = quantization.quantize

    def quantize_swallowing_a_ctrl_c(*args, **kwargs):
        try:
            signals.on_signal(signal.SIGINT, None)  # what the entry point's handler does on Ctrl-C
        except:  # noqa: E722  (as such a library does)
            pass
        return faked(*args, **kwargs)

    monkeypatch.setattr(quantization, "quantize", quantize_swallowing_a_ctrl_c)
    monkeypatch.setattr(signals, "_received", None)
    cfg = compose_config("model=tiny", "eval=fixtures", "eval.tasks=[arc_easy]", "quant=gptq", "calib.n=8",
                         f"paths.checkpoint_dir={tmp_path / 'ckpt'}")
    with pytest.raises(signals.Interrupted) as raised:
        pipeline.run(cfg)
    assert raised.value.exit_code == 130
    client = MlflowClient(cfg.tracking.uri)
    (run,) = client.search_runs([client.get_experiment_by_name("qexp").experiment_id], "tags.`qexp.quant` = 'gptq'")
    assert run.info.status == "KILLED" and "Ctrl-C" in run.data.tags["qexp.killed_reason"]
    assert len(fakes["evaluate"]) == 1  # the baseline's: the quantized checkpoint was never evaluated
    signals.interrupt_handled()  # as the entry point does once the job has stopped
    signals.raise_if_interrupted()


def test_a_kept_evaluation_is_logged_only_by_a_rerun_with_its_settings_and_answers_are_handed_on(
        fakes, tmp_path, cache_dir, monkeypatch):
    """A job that evaluated but could not log keeps its evaluation; a rerun with other evaluation settings
    evaluates afresh (through the same answers cache: the weights did not change), the rerun with the first
    settings logs the kept one without evaluating."""
    from qexp.identity import responses_key
    from qexp.spec import prepare

    args = ("model=tiny", "eval=fixtures", "eval.tasks=[arc_easy]", "quant=none")
    real = records.log_evaluation

    def store_gone(run, evaluation):
        raise RuntimeError("the store went away")

    monkeypatch.setattr(records, "log_evaluation", store_gone)
    with pytest.raises(RuntimeError):
        pipeline.run(compose_config(*args, "eval.limit=5"))
    monkeypatch.setattr(records, "log_evaluation", real)
    assert len(fakes["evaluate"]) == 1
    spec = prepare(compose_config(*args, "eval.limit=5"))
    answers = cache_dir / "lm_eval_responses" / responses_key(spec.identity, pipeline._weight_files(Path(spec.model_path)))
    assert fakes["responses"] == [answers]  # the pipeline hands lm-eval the checkpoint's answers cache

    other = pipeline.run(compose_config(*args, "eval.limit=6"))
    assert other.status == "FINISHED" and len(fakes["evaluate"]) == 2  # not the evaluation kept for limit 5
    assert fakes["responses"][-1] == answers
    same = pipeline.run(compose_config(*args, "eval.limit=5"))
    assert same.status == "FINISHED" and len(fakes["evaluate"]) == 2  # the kept evaluation, logged now
