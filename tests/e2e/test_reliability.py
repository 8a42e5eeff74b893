"""Real processes on the tiny model: signals, dead jobs, failing jobs, reuse."""

from __future__ import annotations

import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient

from qexp import pipeline
from qexp.errors import QexpError
from qexp.models import resolve_model
from qexp.quantization import is_complete
from tests.conftest import compose_config
from tests.e2e.conftest import qexp_cli, qexp_popen

pytestmark = pytest.mark.e2e

JOB = ["quant=awq", "calib.n=32", "model=tiny", "eval=fixtures", "model.max_seq_length=64",
       "eval.tasks=[arc_easy]"]


def _runs(root: Path, name: str | None = None, role: str | None = None):
    """The jobs' runs (or, with role="sweep", the sweeps' parent runs)."""
    client = MlflowClient(f"sqlite:///{root}/mlruns/mlflow.db")
    experiment = client.get_experiment_by_name("qexp")
    runs = client.search_runs([experiment.experiment_id])
    return [r for r in runs if (name is None or r.info.run_name == name) and r.data.tags.get("qexp.role") == role]


def _start_and_kill_while_quantizing(root: Path, cache_dir: Path, sig: int, sweep: bool) -> subprocess.Popen:
    proc = qexp_popen(*(["-m"] if sweep else []), *JOB, "force=true", cwd=root, cache_dir=cache_dir)
    deadline = time.time() + 600
    for line in proc.stdout:
        if "awq-32: quantizing" in line:  # logged as quantize() starts
            proc.send_signal(sig)
            break
        assert time.time() < deadline, "never reached quantization"
    proc.stdout.read()
    proc.wait(timeout=120)
    return proc


# SIGTERM (preemption) takes SIGINT's path once qexp's handler turns it into an interrupt; that
# handler is tested where preemption happens, `scancel` on SLURM (test_scale_out).
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=["SIGINT-sweep", "SIGKILL-job"])
def test_killed_job_leaves_killed_run_and_rerun_finishes_once(sig, tmp_path, cache_dir):
    caught = sig == signal.SIGINT  # Ctrl-C; SIGKILL cannot be caught
    proc = _start_and_kill_while_quantizing(tmp_path, cache_dir, sig, sweep=caught)
    assert proc.returncode == (130 if caught else -signal.SIGKILL)
    (run,) = _runs(tmp_path, "awq-32")
    assert run.info.status == ("KILLED" if caught else "RUNNING")
    if caught:  # the sweep's parent run ends with its job
        (parent,) = _runs(tmp_path, role="sweep")
        assert parent.info.status == "KILLED" and "Ctrl-C" in parent.data.tags["qexp.killed_reason"]

    rerun = qexp_cli(*JOB, cwd=tmp_path, cache_dir=cache_dir)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    runs = _runs(tmp_path, "awq-32")
    assert sorted(r.info.status for r in runs) == ["FINISHED", "KILLED"]
    killed = [r for r in runs if r.info.status == "KILLED"][0]
    reason = killed.data.tags["qexp.killed_reason"]
    assert ("Ctrl-C" in reason) if caught else ("is gone" in reason)
    # the killed attempt's partial folder (if any) is hidden; every visible checkpoint is complete
    visible = [p for p in (tmp_path / "checkpoints").iterdir() if not p.name.startswith(".")]
    assert len(visible) == 1 and is_complete(visible[0])


def test_failing_job_does_not_stop_the_sweep(tmp_path, cache_dir):
    broken = tmp_path / "broken-model"
    shutil.copytree(resolve_model("qexp:tiny-qwen3", cache_dir), broken)
    (broken / "model.safetensors").write_bytes(b"not a safetensors file" * 100)

    proc = qexp_cli("-m", f"model.path={broken},qexp:tiny-qwen3", "quant=gptq", "calib.n=8", "model=tiny",
                    "eval=fixtures", "eval.tasks=[arc_easy]", cwd=tmp_path, cache_dir=cache_dir)
    assert proc.returncode != 0
    summary = proc.stdout + proc.stderr
    assert "2 jobs, 1 ok, 1 failed" in summary
    finished = [r for r in _runs(tmp_path) if r.info.status == "FINISHED"]
    failed = [r for r in _runs(tmp_path) if r.info.status == "FAILED"]
    assert {r.info.run_name for r in finished} == {"baseline", "gptq-8"}
    assert len(failed) == 1
    client = MlflowClient(f"sqlite:///{tmp_path}/mlruns/mlflow.db")
    error = Path(client.download_artifacts(failed[0].info.run_id, "error.txt", str(tmp_path))).read_text()
    assert "Traceback" in error
    assert not [r for r in _runs(tmp_path) if r.info.status == "RUNNING"]
    (parent,) = _runs(tmp_path, role="sweep")
    assert parent.info.status == "FAILED"
    assert {r.data.tags["mlflow.parentRunId"] for r in _runs(tmp_path)} == {parent.info.run_id}


def test_checkpoint_is_reused_when_only_evaluation_failed(tmp_path, monkeypatch):
    cfg = compose_config("quant=gptq", "calib.n=8", "model=tiny", "eval=fixtures", "eval.tasks=[arc_easy]",
                         "paths.checkpoint_dir=" + str(tmp_path / "ckpt"))
    real_evaluate = pipeline.evaluate

    def flaky(model_path, *args, **kwargs):
        if Path(model_path).parent == tmp_path / "ckpt":
            raise QexpError("evaluation crashed (injected)")
        return real_evaluate(model_path, *args, **kwargs)

    monkeypatch.setattr(pipeline, "evaluate", flaky)
    with pytest.raises(QexpError):
        pipeline.run(cfg)
    (checkpoint,) = (tmp_path / "ckpt").iterdir()
    marker_mtime = (checkpoint / "qexp_checkpoint.json").stat().st_mtime
    monkeypatch.setattr(pipeline, "evaluate", real_evaluate)

    result = pipeline.run(cfg)
    assert result.status == "FINISHED" and result.checkpoint == checkpoint
    assert (checkpoint / "qexp_checkpoint.json").stat().st_mtime == marker_mtime
    statuses = sorted(r.info.status for r in _runs(tmp_path, "gptq-8"))
    assert statuses == ["FAILED", "FINISHED"]
    reused = [r for r in _runs(tmp_path, "gptq-8") if r.info.status == "FINISHED"][0]
    assert reused.data.tags.get("qexp.checkpoint_reused") == "true"
