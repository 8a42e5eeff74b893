from __future__ import annotations

import os

import pytest
from mlflow import MlflowClient

from qexp.errors import ConfigError, StoreRefused, TrackingError
from qexp.tracking import Store, check_uri, flatten, metric_name, redact, results_metrics


@pytest.mark.parametrize("task,key,name", [
    ("arc_easy", "acc,none", "arc_easy/acc"),
    ("arc_easy", "acc_stderr,none", "arc_easy/acc_stderr"),
    ("mmlu_humanities", "acc,none", "mmlu_humanities/acc"),
    ("gsm8k", "exact_match,strict-match", "gsm8k/exact_match/strict-match"),
    ("arc_easy", "alias", None),
    ("arc_easy", "sample_len", None),
])
def test_metric_name(task, key, name):
    assert metric_name(task, key) == name


def test_results_metrics_keeps_numbers_only():
    results = {"results": {
        "arc_easy": {"alias": "arc_easy", "name": "arc_easy", "sample_len": 10, "acc,none": 0.4,
                     "acc_stderr,none": 0.16, "acc_norm,none": 0.0, "acc_norm_stderr,none": "N/A"},
        "mmlu": {"alias": "mmlu", "acc,none": 0.25, "acc_stderr,none": 0.03, "sample_len": 114},
    }}
    assert results_metrics(results) == {
        "arc_easy/acc": 0.4, "arc_easy/acc_stderr": 0.16, "arc_easy/acc_norm": 0.0, "arc_easy/n_samples": 10.0,
        "mmlu/acc": 0.25, "mmlu/acc_stderr": 0.03, "mmlu/n_samples": 114.0,
    }


@pytest.mark.parametrize("uri", ["mlruns", "./mlruns", "file:///tmp/mlruns", "ftp://x/y", "sqlite://", ""])
def test_unusable_uris_are_refused(uri):
    with pytest.raises(ConfigError, match="tracking.uri"):
        check_uri(uri)


def test_sqlite_store_roundtrip(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlruns/mlflow.db"
    check_uri(uri)
    with pytest.raises(TrackingError, match="No experiment <tracking.experiment='qexp'>"):
        Store.open(uri, "qexp", create=False)
    store = Store.open(uri, "qexp")
    assert Store.open(uri, "qexp", create=False).experiment_id == store.experiment_id
    client = MlflowClient(uri)
    assert client.get_experiment(store.experiment_id).artifact_location == (tmp_path / "mlruns" / "artifacts").as_uri()
    run = store.start_run("gptq-8", {"qexp.config_hash": "abc"})
    assert store.find_runs({"qexp.config_hash": "abc"}) == []  # still RUNNING
    run.end("FINISHED")
    assert [r.run_id for r in store.find_runs({"qexp.config_hash": "abc"})] == [run.run_id]


def test_unreachable_server_is_refused_with_the_fix():
    with pytest.raises(StoreRefused, match=r"No MLflow server answers at <tracking.uri='http://127.0.0.1:9/'>.*"
                                           r"Start the server"):
        Store.open("http://127.0.0.1:9/", "qexp")


@pytest.mark.parametrize("text,shown", [
    ("http://alice:s3cret@mlflow-host:5000", "http://alice:***@mlflow-host:5000"),
    ("postgresql+psycopg2://qexp:pw@dbhost/qexp", "postgresql+psycopg2://qexp:***@dbhost/qexp"),
    ("quant=gptq tracking.uri=https://a:b@h:1 calib.n=8", "quant=gptq tracking.uri=https://a:***@h:1 calib.n=8"),
    ("http://alice@mlflow-host:5000", "http://alice@mlflow-host:5000"),  # a user name is not a secret
    ("sqlite:////tmp/mlruns/mlflow.db", "sqlite:////tmp/mlruns/mlflow.db"),
])
def test_redact_masks_only_the_password(text, shown):
    assert redact(text) == shown


@pytest.mark.parametrize("code,user,uri,expected", [
    ("UNAUTHENTICATED", "alice", "http://alice:pw@127.0.0.1:9",
     r"refused the password of user 'alice' \(401.*Set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD"),
    ("UNAUTHENTICATED", None, "http://alice:pw@127.0.0.1:9", r"refused the password of user 'alice' \(401"),  # the URI's
    ("UNAUTHENTICATED", None, "http://127.0.0.1:9", r"refused a request without credentials \(401"),
    ("PERMISSION_DENIED", "reader", "http://alice:pw@127.0.0.1:9",
     r"User 'reader' may not write to the experiment <tracking.experiment='team'>.*"
     r"\(403.*Ask the server's admin for EDIT permission"),
])
def test_a_refusing_server_is_one_line_naming_user_uri_and_fix(code, user, uri, expected, monkeypatch, tmp_path):
    from mlflow.exceptions import MlflowException
    from mlflow.protos import databricks_pb2

    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.mlflow/credentials
    monkeypatch.delenv("MLFLOW_TRACKING_PASSWORD", raising=False)
    if user:
        monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", user)
    else:
        monkeypatch.delenv("MLFLOW_TRACKING_USERNAME", raising=False)

    def refuse(self, name):
        raise MlflowException("API request to endpoint /api/2.0/mlflow/experiments/get-by-name failed with error "
                              "code 4xx != 200. Response body: 'refused'", error_code=getattr(databricks_pb2, code))

    monkeypatch.setattr(MlflowClient, "get_experiment_by_name", refuse)
    with pytest.raises(StoreRefused, match=expected) as refused:
        Store.open(uri, "team")
    message = str(refused.value)
    assert f"<tracking.uri='{uri.replace(':pw@', ':***@')}'>" in message and ":pw@" not in message
    assert "\n" not in message


def test_flatten_gives_dotted_string_params():
    flat = flatten({"quant": {"name": "gptq", "ignore": ["lm_head"]}, "eval": {"limit": None}})
    assert flat == {"quant.name": "gptq", "quant.ignore": '["lm_head"]', "eval.limit": "None"}


def test_a_job_whose_experiment_tag_insert_loses_a_race_carries_on(tmp_path, monkeypatch):
    """Jobs opening a new experiment at once all insert its kind tag; on a database store every insert but
    the first fails on the tag's unique key (simulated here on SQLite); those jobs must carry on."""
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    set_tag = MlflowClient.set_experiment_tag

    def another_job_was_first(self, experiment_id, key, value):
        set_tag(self, experiment_id, key, value)  # the rival's insert lands ...
        raise RuntimeError("duplicate key value violates unique constraint \"experiment_tag_pk\"")  # ... ours fails

    monkeypatch.setattr(MlflowClient, "set_experiment_tag", another_job_was_first)
    store = Store.open(uri, "race")
    assert MlflowClient(uri).get_experiment(store.experiment_id).tags["mlflow.experimentKind"] == \
        "custom_model_development"


def test_jobs_logging_the_same_new_dataset_together_both_record_it(tmp_path):
    """Two jobs calibrating on the same samples log the same dataset at once: MLflow looks it up, then
    inserts, so the slower insert fails on the datasets table's unique key; that job must carry on."""
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    store = Store.open(uri, "qexp")
    rival, ours = store.start_run("awq-8", {}), store.start_run("gptq-8", {})
    log_inputs, failures = store.client.log_inputs, []

    def rival_was_first(run_id, datasets=None, models=None):
        if not failures:
            failures.append(run_id)
            rival.log_dataset("ShareGPT V3", "/data/sharegpt.json", "d1g3st", "calibration")  # the rival's insert lands ...
            raise RuntimeError("UNIQUE constraint failed: datasets.experiment_id, datasets.name, datasets.digest")
        return log_inputs(run_id, datasets, models)

    store.client.log_inputs = rival_was_first
    ours.log_dataset("ShareGPT V3", "/data/sharegpt.json", "d1g3st", "calibration")
    assert failures == [ours.run_id]
    client = MlflowClient(uri)
    logged = [client.get_run(run.run_id).inputs.dataset_inputs for run in (rival, ours)]
    assert [[(d.dataset.name, d.dataset.digest) for d in inputs] for inputs in logged] == [[("ShareGPT V3", "d1g3st")]] * 2


def test_a_store_that_cannot_tag_the_experiment_is_an_error(tmp_path, monkeypatch):
    def refused(self, experiment_id, key, value):
        raise RuntimeError("permission denied")

    monkeypatch.setattr(MlflowClient, "set_experiment_tag", refused)
    with pytest.raises(TrackingError, match="Cannot use the MLflow store .*RuntimeError: permission denied"):
        Store.open(f"sqlite:///{tmp_path}/mlflow.db", "race")


def test_ending_a_run_survives_one_failed_request(tmp_path, monkeypatch):
    """A tracking server answers a keep-alive request with 400 now and then; the run must still end."""
    monkeypatch.setattr("qexp.tracking.writer.END_RETRY_SECONDS", 0)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    store = Store.open(uri, "qexp")
    run = store.start_run("gptq-8", {"qexp.config_hash": "abc"})
    set_terminated, failures = MlflowClient.set_terminated, []

    def flaky(self, run_id, status=None, end_time=None):
        if not failures:
            failures.append(run_id)
            raise RuntimeError("API request to endpoint /api/2.0/mlflow/runs/get failed with error code 400")
        return set_terminated(self, run_id, status, end_time)

    monkeypatch.setattr(MlflowClient, "set_terminated", flaky)
    run.end("FINISHED")
    assert failures == [run.run_id]
    assert MlflowClient(uri).get_run(run.run_id).info.status == "FINISHED"


def test_a_run_that_cannot_be_ended_says_so(tmp_path, monkeypatch, caplog):
    """Ending is retried (END_ATTEMPTS tries, each failure but the last logged) and then raises; a store
    that fails once and then answers ends the run after all."""
    from qexp.tracking import writer

    monkeypatch.setattr("qexp.tracking.writer.END_RETRY_SECONDS", 0)
    caplog.set_level("WARNING", logger="qexp")
    store = Store.open(f"sqlite:///{tmp_path}/mlflow.db", "qexp")
    run = store.start_run("gptq-8", {})
    real, calls = MlflowClient.set_terminated, []

    def down(self, run_id, status=None, end_time=None):
        calls.append(status)
        raise RuntimeError("connection refused")

    monkeypatch.setattr(MlflowClient, "set_terminated", down)
    with pytest.raises(RuntimeError, match="connection refused"):
        run.end("FINISHED")
    assert len(calls) == writer.END_ATTEMPTS > 1
    retried = [r.getMessage() for r in caplog.records if "trying again" in r.getMessage()]
    assert len(retried) == writer.END_ATTEMPTS - 1
    assert retried[0] == f"Ending MLflow run {run.run_id} failed (RuntimeError: connection refused); trying again"

    def once(self, run_id, status=None, end_time=None):  # a keep-alive connection's one bad answer
        calls.append(status)
        if len(calls) == writer.END_ATTEMPTS + 1:
            raise RuntimeError("Invalid HTTP request received")
        return real(self, run_id, status, end_time)

    monkeypatch.setattr(MlflowClient, "set_terminated", once)
    run.end("FINISHED")
    assert MlflowClient(f"sqlite:///{tmp_path}/mlflow.db").get_run(run.run_id).info.status == "FINISHED"


class _FlakyClient:
    """Answers `search` after failing `outage` times the way MLflow's client does when the server is down."""

    def __init__(self, outage: int, error: str = "Max retries exceeded with url: /api/2.0/mlflow/runs/search"):
        self.outage, self.error, self.calls = outage, error, 0

    def search(self):
        self.calls += 1
        if self.calls <= self.outage:
            raise RuntimeError(self.error)
        return "runs"


def _patient(client, patience: float, monkeypatch):
    from qexp.tracking.patience import Patient

    monkeypatch.setattr(Patient, "PAUSE_SECONDS", 0.05)
    return Patient(client, "http://alice:pw@mlflow-host:5000", patience)


def test_a_store_that_comes_back_within_the_limit_answers_the_same_call(monkeypatch):
    client = _FlakyClient(outage=3)
    assert _patient(client, 10, monkeypatch).search() == "runs"
    assert client.calls == 4


def test_a_store_away_past_the_limit_is_one_error_and_a_later_call_waits_no_more(monkeypatch):
    from qexp.errors import StoreAway

    client = _FlakyClient(outage=1000)
    patient = _patient(client, 0.3, monkeypatch)
    with pytest.raises(StoreAway, match=r"<tracking.uri='http://alice:\*\*\*@mlflow-host:5000'> has not answered "
                                        r"for \d+ s \(<tracking.outage_seconds=0.3>.*run the same command again"):
        patient.search()
    tried = client.calls
    assert tried > 1  # it waited, trying again
    with pytest.raises(StoreAway):
        patient.search()
    assert client.calls == tried + 1  # tried once: the outage it waited out is still on
    client.outage = 0  # the store is back
    assert patient.search() == "runs"  # a job that computed through the outage logs now


def test_without_patience_an_outage_fails_at_once_and_other_errors_are_not_retried(monkeypatch):
    from qexp.errors import StoreAway

    client = _FlakyClient(outage=1)
    with pytest.raises(StoreAway, match="stopped answering .*Check that the server and its database are up"):
        _patient(client, 0, monkeypatch).search()
    assert client.calls == 1
    refused = _FlakyClient(outage=1, error="RESOURCE_DOES_NOT_EXIST: Run 'abc' not found")
    with pytest.raises(RuntimeError, match="not found"):
        _patient(refused, 10, monkeypatch).search()
    assert refused.calls == 1


def test_a_password_in_an_http_tracking_uri_leaves_the_command_line_for_mlflows_variables(monkeypatch):
    """Before Hydra reads the command line (it prints each job's overrides and saves them under the outputs)."""
    from qexp.cli import credentials_out_of

    monkeypatch.delenv("MLFLOW_TRACKING_USERNAME", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_PASSWORD", raising=False)
    argv = ["-m", "quant=rtn", "tracking.uri=https://alice:s%40cret@mlflow.example.org:5000/path", "calib.n=8"]
    assert credentials_out_of(argv) == ["-m", "quant=rtn", "tracking.uri=https://mlflow.example.org:5000/path",
                                        "calib.n=8"]
    assert (os.environ["MLFLOW_TRACKING_USERNAME"], os.environ["MLFLOW_TRACKING_PASSWORD"]) == ("alice", "s@cret")
    database = ["tracking.uri=postgresql://bob:pw@db:5432/mlflow"]  # its driver reads the password there
    assert credentials_out_of(database) == database and os.environ["MLFLOW_TRACKING_USERNAME"] == "alice"
