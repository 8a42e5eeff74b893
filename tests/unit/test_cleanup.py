from __future__ import annotations

import socket
import subprocess
import sys
import time

from mlflow import MlflowClient

from qexp import cleanup
from qexp.tracking import TAGS, Store


def _running(client, experiment_id, **tags):
    return client.create_run(experiment_id, tags={k: str(v) for k, v in tags.items()}).info.run_id


def test_stale_runs_and_cleanup_command(tmp_path, capsys):
    uri = f"sqlite:///{tmp_path}/mlruns/mlflow.db"
    store = Store.open(uri, "qexp")
    client, experiment_id = MlflowClient(uri), store.experiment_id
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    here = socket.gethostname()
    gone = _running(client, experiment_id, **{TAGS.HOST: here, TAGS.PID: dead.stdout.strip()})
    alive = _running(client, experiment_id, **{TAGS.HOST: here, TAGS.PID: subprocess.os.getpid()})
    silent = _running(client, experiment_id, **{TAGS.HOST: "other-host", TAGS.PID: 1,
                                                TAGS.HEARTBEAT: f"{time.time() - 3600:.0f}"})
    beating = _running(client, experiment_id, **{TAGS.HOST: "other-host", TAGS.PID: 1,
                                                 TAGS.HEARTBEAT: f"{time.time():.0f}"})

    reasons = {run.run_id: reason for run, reason in store.stale_runs(stale_after=300)}
    assert set(reasons) == {gone, silent}
    assert "is gone" in reasons[gone] and "no heartbeat" in reasons[silent]

    assert cleanup.main(["--tracking-uri", uri, "--dry-run"]) == 0
    assert client.get_run(gone).info.status == "RUNNING"
    assert cleanup.main(["--tracking-uri", uri]) == 0
    status = {run_id: client.get_run(run_id).info.status for run_id in (gone, alive, silent, beating)}
    assert status == {gone: "KILLED", alive: "RUNNING", silent: "KILLED", beating: "RUNNING"}
    assert "4 running, 2 stale" in capsys.readouterr().out
