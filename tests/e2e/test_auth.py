"""The shared store as the manual sets it up (docs/scale-out.md): MLflow's basic-auth app on PostgreSQL. A team member's
job runs and records no secret; a wrong password, no credentials, a read-only user and a server that
is not there are each refused in one line, exit status 2, before any model loads, leaving no run."""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path

import pytest
from mlflow import MlflowClient

from tests.e2e.conftest import qexp_cli
from tests.e2e.servers import free_port, start_mlflow_server, start_postgres, stop_mlflow_server

pytestmark = pytest.mark.e2e

PASSWORDS = {name: f"{name}-{secrets.token_hex(8)}" for name in ("admin", "alice", "reader")}
JOB = ["quant=rtn", "model=tiny", "eval=fixtures", "eval.tasks=[arc_easy]", "eval.limit=4",
       "model.max_seq_length=64", "tracking=server", "tracking.experiment=team", "device=cpu"]


@contextlib.contextmanager
def _as(user: str):
    """MLflow's client in this process authenticates as `user`."""
    saved = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")}
    os.environ.update(MLFLOW_TRACKING_USERNAME=user, MLFLOW_TRACKING_PASSWORD=PASSWORDS[user])
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _credentials(user: str | None, password: str | None) -> dict[str, str | None]:
    return {"MLFLOW_TRACKING_USERNAME": user, "MLFLOW_TRACKING_PASSWORD": password}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """The manual's recipe: the admin creates the team's experiment and users, alice may edit it,
    reader may only read it."""
    from mlflow.server import get_app_client

    backend, stop_postgres = start_postgres()
    root = tmp_path_factory.mktemp("auth-server")
    base, proc, _ = start_mlflow_server(backend, root / "artifacts", admin_password=PASSWORDS["admin"])
    try:
        with _as("admin"):
            users = get_app_client("basic-auth", tracking_uri=base)
            experiment = MlflowClient(base).create_experiment("team")
            for user, permission in (("alice", "EDIT"), ("reader", "READ")):
                users.create_user(user, PASSWORDS[user])
                users.grant_user_permission(user, "experiment", experiment, permission)
        yield base
    finally:
        stop_mlflow_server(proc)
        stop_postgres()


def _team_runs(base: str) -> list:
    with _as("admin"):
        client = MlflowClient(base)
        return client.search_runs([client.get_experiment_by_name("team").experiment_id])


@pytest.mark.parametrize("where", ["environment", "uri", "tracking-uri-variable"])
def test_a_team_member_runs_and_no_secret_is_recorded(server, tmp_path, cache_dir, where):
    """The password given as MLflow's environment variables, written into tracking.uri (there in a
    sweep: Hydra prints and saves each job's overrides, and the parent run describes the command line), or
    inside MLFLOW_TRACKING_URI, which tracking=server reads (conf/tracking/server.yaml): it is used, and
    recorded nowhere; the URI the run records is the redacted one."""
    if where == "tracking-uri-variable":
        uri = server.replace("http://", f"http://alice:{PASSWORDS['alice']}@", 1)
        proc = qexp_cli(*JOB, "eval.limit=2", cwd=tmp_path, cache_dir=cache_dir,
                        env={**_credentials(None, None), "MLFLOW_TRACKING_URI": uri})
    elif where == "uri":
        uri = server.replace("http://", f"http://alice:{PASSWORDS['alice']}@", 1)
        proc = qexp_cli("-m", *JOB, "eval.limit=3", f"tracking.uri={uri}", cwd=tmp_path, cache_dir=cache_dir,
                        env=_credentials(None, None))  # eval.limit=3: runs of their own, not the other case's
    else:
        proc = qexp_cli(*JOB, f"tracking.uri={server}", cwd=tmp_path, cache_dir=cache_dir,
                        env=_credentials("alice", PASSWORDS["alice"]))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    runs = [r for r in _team_runs(server) if str(tmp_path) in r.data.params.get("paths.output_dir", str(tmp_path))]
    jobs = [r for r in runs if r.data.tags.get("qexp.role") != "sweep"]
    assert sorted((r.info.run_name, r.info.status) for r in jobs) == [("baseline", "FINISHED"), ("rtn", "FINISHED")]
    assert {r.info.user_id for r in runs} == {"alice"}  # the server knows who logged them
    if where == "tracking-uri-variable":  # the resolved URI is in params and config.yaml, masked
        (job,) = [r for r in jobs if r.info.run_name == "rtn"]
        assert job.data.params["tracking.uri"] == server.replace("http://", "http://alice:***@", 1)
    if where == "uri":  # the sweep's parent run describes its command line
        parent = [r for r in runs if r.data.tags.get("qexp.role") == "sweep"]
        assert len(parent) == 1 and "tracking.uri=http://127.0.0.1" in parent[0].data.tags["mlflow.note.content"]

    secret = PASSWORDS["alice"]
    assert secret not in proc.stdout + proc.stderr
    with _as("admin"):
        client = MlflowClient(server)
        for run in runs:
            assert not [k for k, v in {**run.data.params, **run.data.tags}.items() if secret in v]
            folder = Path(client.download_artifacts(run.info.run_id, "", str(tmp_path / "dl" / run.info.run_id)))
            files = [f for f in folder.rglob("*") if f.is_file()]
            if run.data.tags.get("qexp.role") != "sweep":  # a job's run (the parent holds the report)
                assert any(f.name == "config.yaml" for f in files) and any(f.suffix == ".log" for f in files)
            assert not [f for f in files if secret.encode() in f.read_bytes()]
    local = [f for f in tmp_path.rglob("*") if f.is_file() and "dl" not in f.relative_to(tmp_path).parts
             and f.stat().st_size < 50_000_000]
    assert not [f for f in local if secret.encode() in f.read_bytes()]  # logs, outcome files, Hydra's config


@pytest.mark.parametrize("who,refusal,fix,sweep", [
    (("alice", "not-her-password"), "refused the password of user 'alice' (401", "MLFLOW_TRACKING_PASSWORD", False),
    ((None, None), "refused a request without credentials (401", "MLFLOW_TRACKING_USERNAME", False),
    (("reader", PASSWORDS["reader"]), "User 'reader' may not write to the experiment <tracking.experiment='team'>",
     "EDIT permission", False),
    (("reader", PASSWORDS["reader"]), "User 'reader' may not write to the experiment <tracking.experiment='team'>",
     "EDIT permission", True),
], ids=["wrong-password", "no-credentials", "read-only-user", "read-only-user-sweep"])
def test_a_refused_user_gets_one_line_and_exit_2_before_any_model_loads(server, tmp_path, cache_dir, who,
                                                                       refusal, fix, sweep):
    args = ["-m", *JOB, "quant=rtn,gptq"] if sweep else JOB
    before = {r.info.run_id for r in _team_runs(server)}
    proc = qexp_cli(*args, f"tracking.uri={server}", cwd=tmp_path, cache_dir=cache_dir,
                    env={**_credentials(*who), "HOME": str(tmp_path)})  # no ~/.mlflow/credentials either
    output = proc.stdout + proc.stderr
    assert proc.returncode == 2, output[-3000:]
    lines = [line for line in output.splitlines() if refusal in line]
    assert len(lines) == 1 and fix in lines[0] and f"<tracking.uri='{server}'>" in lines[0], output[-3000:]
    assert "Traceback" not in output
    assert not any(step in output for step in ("MLflow run", "quantizing", "evaluating"))  # nothing started
    if who[1]:
        assert who[1] not in output
    assert {r.info.run_id for r in _team_runs(server)} == before  # no run left behind, RUNNING or otherwise


def test_the_report_of_a_refused_user_is_one_line_and_exit_2(server, tmp_path, cache_dir):
    proc = qexp_cli("--tracking-uri", server, "--experiment", "team", cwd=tmp_path, cache_dir=cache_dir,
                    module="qexp.compare", env=_credentials("alice", "not-her-password"))
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "refused the password of user 'alice'" in proc.stderr


def test_a_server_that_is_not_there_is_refused_in_seconds(tmp_path, cache_dir):
    uri = f"http://127.0.0.1:{free_port()}"
    proc = qexp_cli("-m", *JOB, "quant=rtn,gptq", f"tracking.uri={uri}", cwd=tmp_path, cache_dir=cache_dir)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 2, output[-3000:]
    (line,) = [line for line in output.splitlines() if "No MLflow server answers" in line]
    assert f"<tracking.uri='{uri}'>" in line and "Start the server" in line
    assert "Traceback" not in output
    # The first contact is not retried: MLflow's retries with back-off took ~8 s and printed a line
    # each (the time itself is measured by benchmarks/fail_fast.py --case server).
    assert "Retrying" not in output
