"""Bad input through the real command: one clear message, non-zero exit, no traceback, no run."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from qexp.schema import CONF_DIR
from tests.e2e.conftest import qexp_cli

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize("args,expected,status", [
    (["model=tiny", "eval=fixtures", "eval.limit=-1"], "<eval.limit=-1>", 2),
    # the first job's calib.n=0 is wrong for that job only (a swept key): every job runs and fails on its own
    (["-m", "model=tiny", "eval=fixtures", "quant=gptq", "calib.n=0,8", "quant.group_size=96"],
     "<quant.group_size=96>", 1),
    (["model=tiny", "quant=int3"], "Could not find 'quant/int3'", 2),
    (["model=tiny", "eval=fixtures", "calib.n=abc"], "<calib.n='abc'>", 2),
    # every value of a swept key of the wrong type: no job can run
    (["-m", "model=tiny", "eval=fixtures", "quant=gptq", "calib.n=x,abc"], "<calib.n='x'>", 2),
    (["-m", "model=tiny", "eval=fixtures", "quant=gptq,awq", "calib.nn=5"], "<calib.nn=", 2),
    (["model=tiny", "eval=fixtures", "calib.source=file", "calib.path=/etc/hostname"], "not a JSON array", 2),
])
def test_bad_config_fails_cleanly_and_leaves_no_run(args, expected, status, tmp_path, cache_dir):
    proc = qexp_cli(*args, cwd=tmp_path, cache_dir=cache_dir)
    output = proc.stdout + proc.stderr
    assert proc.returncode == status, output[-3000:]
    assert expected in output
    assert "Traceback" not in output
    db = tmp_path / "mlruns" / "mlflow.db"
    if db.exists():
        from mlflow import MlflowClient

        client = MlflowClient(f"sqlite:///{db}")
        assert client.search_runs([e.experiment_id for e in client.search_experiments()]) == []


def test_typo_in_a_yaml_preset_fails_before_anything_runs(tmp_path, cache_dir):
    conf = Path(shutil.copytree(CONF_DIR, tmp_path / "conf"))
    preset = conf / "model" / "tiny.yaml"
    preset.write_text(preset.read_text().replace("group_size: 128", "group_sise: 64"))
    proc = qexp_cli("--config-path", str(conf), "model=tiny", "eval=fixtures", cwd=tmp_path, cache_dir=cache_dir)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 2 and "Traceback" not in output
    assert "Unknown config key in conf/model/tiny.yaml: <model.group_sise=64>" in output
    assert not (tmp_path / "mlruns").exists()


def test_a_sweep_every_job_of_which_would_fail_stops_at_its_first_job(tmp_path, cache_dir):
    proc = qexp_cli("-m", "quant=gptq,awq", "calib.n=8,16", "model.path=/nonexistent/model", "eval=fixtures",
                    cwd=tmp_path, cache_dir=cache_dir)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 2 and "Traceback" not in output
    errors = [line for line in output.splitlines() if line.startswith("qexp:")]
    assert len(errors) == 1 and "<model.path='/nonexistent/model'>" in errors[0]
    assert "no job was started" in errors[0]
    assert not list(tmp_path.glob("multirun/*/*/*/qexp_outcome.json"))  # no job ran
    assert not (tmp_path / "mlruns").exists()  # not even the parent run, nor the store's folder


@pytest.mark.parametrize("values,expected", [
    ("-1,8", "<calib.n=-1>"),  # the job is refused when it is prepared
    ("abc,8", "<calib.n='abc'>"),  # its config does not compose: Hydra would refuse the whole sweep
])
def test_a_value_only_some_jobs_have_fails_only_those_jobs(values, expected, tmp_path, cache_dir):
    proc = qexp_cli("-m", "quant=gptq", f"calib.n={values}", "model=tiny", "eval=fixtures", "eval.tasks=[arc_easy]",
                    "model.max_seq_length=64", cwd=tmp_path, cache_dir=cache_dir)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 1, output[-3000:]
    assert "qexp sweep: 2 jobs, 1 ok, 1 failed" in output and "Traceback" not in output
    failed = [line for line in output.splitlines() if line.lstrip().startswith("FAILED")]
    assert len(failed) == 1 and expected in failed[0] and "Set calib.n to" in failed[0], failed
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path}/mlruns/mlflow.db")
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    jobs = {r.info.run_name: r.info.status for r in runs if r.data.tags.get("qexp.role") != "sweep"}
    assert jobs == {"baseline": "FINISHED", "gptq-8": "FINISHED"}
    assert all(r.info.status != "RUNNING" for r in runs)
