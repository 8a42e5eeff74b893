"""Bad input through the real command: one clear message, non-zero exit, no traceback, no run."""

from __future__ import annotations

import pytest

from tests.e2e.conftest import qexp_cli

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize("args,expected", [
    (["model=tiny", "eval=fixtures", "eval.limit=-1"], "<eval.limit=-1>"),
    (["-m", "model=tiny", "eval=fixtures", "quant=gptq", "calib.n=0,8", "quant.group_size=96"],
     "<quant.group_size=96>"),
    (["model=tiny", "quant=int3"], "Could not find 'quant/int3'"),
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
