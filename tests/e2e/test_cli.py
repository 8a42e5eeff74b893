"""Bad input through the real command: one clear message, non-zero exit, no traceback, no run."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from qexp.schema import CONF_DIR
from tests.e2e.conftest import qexp_cli

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize("args,expected", [
    (["model=tiny", "eval=fixtures", "eval.limit=-1"], "<eval.limit=-1>"),
    (["-m", "model=tiny", "eval=fixtures", "quant=gptq", "calib.n=0,8", "quant.group_size=96"],
     "<quant.group_size=96>"),
    (["model=tiny", "quant=int3"], "Could not find 'quant/int3'"),
    (["model=tiny", "eval=fixtures", "calib.n=abc"], "<calib.n='abc'>"),
    (["-m", "model=tiny", "eval=fixtures", "quant=gptq,awq", "calib.nn=5"], "<calib.nn="),
    (["model=tiny", "eval=fixtures", "calib.source=file", "calib.path=/etc/hostname"], "not a JSON array"),
])
def test_bad_config_fails_cleanly_and_leaves_no_run(args, expected, tmp_path, cache_dir):
    proc = qexp_cli(*args, cwd=tmp_path, cache_dir=cache_dir)
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0
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
