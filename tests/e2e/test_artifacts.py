"""A job's logs are uploaded while they may still grow: each upload sends what it declared, so the
server reads no stray bytes as a next request and the next upload gets its own answer."""

from __future__ import annotations

import threading
import time

import pytest
from mlflow import MlflowClient

from qexp.tracking.writer import Run
from tests.e2e.servers import start_mlflow_server, stop_mlflow_server

pytestmark = pytest.mark.e2e


def test_a_log_growing_during_its_upload_is_logged_as_it_was_and_the_next_upload_is_unharmed(tmp_path):
    uri, server, server_log = start_mlflow_server(f"sqlite:///{tmp_path}/mlflow.db", tmp_path / "artifacts")
    try:
        client = MlflowClient(uri)
        experiment_id = client.create_experiment("logs")
        run = Run(client, experiment_id, uri, client.create_run(experiment_id).info.run_id)
        job_log, libraries_log = tmp_path / "job.log", tmp_path / "libraries.log"
        job_log.write_text("a line the job logged\n" * 100_000)
        libraries_log.write_text("what the libraries printed\n")
        before = job_log.stat().st_size
        done = threading.Event()

        def keep_logging() -> None:  # the job's threads go on logging while the upload runs
            with job_log.open("a") as out:
                while not done.is_set():
                    out.write("a line logged during the upload\n" * 100)
                    out.flush()
                    time.sleep(0.001)  # ~3 MB/s: growing throughout the upload, not filling the disk

        writer = threading.Thread(target=keep_logging)
        writer.start()
        try:
            run.log_file_as_now(job_log, "logs")
            run.log_file_as_now(libraries_log, "logs")
        finally:
            done.set()
            writer.join()
        client.download_artifacts(run.run_id, "logs", str(tmp_path / "down"))
    finally:
        stop_mlflow_server(server)
    uploaded = (tmp_path / "down" / "logs" / "job.log").read_bytes()
    assert len(uploaded) >= before and job_log.read_bytes().startswith(uploaded)
    assert (tmp_path / "down" / "logs" / "libraries.log").read_text() == "what the libraries printed\n"
    assert "Invalid HTTP request received" not in server_log.read_text()
    assert job_log.stat().st_size > len(uploaded)  # it did grow after the upload began
