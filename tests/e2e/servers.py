"""Real servers for the scale-out tests, started on loopback: PostgreSQL, and an MLflow tracking
server on it that serves the artifacts itself. A server that cannot start fails the test with
the reason (its log), never skips it."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _as_postgres(command: list[str]) -> list[str]:
    """initdb refuses to run as root: as root, run PostgreSQL's tools as the `postgres` user."""
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else command


def _run(command: list[str], what: str) -> None:
    proc = subprocess.run(command, capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        pytest.fail(f"{what} failed ({' '.join(command)}): {proc.stdout[-2000:]}{proc.stderr[-2000:]}")


def start_postgres() -> tuple[str, callable]:
    """A fresh PostgreSQL cluster on a free loopback port; returns (SQLAlchemy URI, stop)."""
    for tool in ("initdb", "pg_ctl"):
        if not shutil.which(tool):
            pytest.fail(f"PostgreSQL's {tool} is not on PATH: install Debian's postgresql package (.ci/run does)")
    root = Path(tempfile.mkdtemp(prefix="qexp-pg-"))  # outside pytest's root-only tmp folders
    root.chmod(0o755)
    if os.geteuid() == 0:
        user = pwd.getpwnam("postgres")
        os.chown(root, user.pw_uid, user.pw_gid)
    port = free_port()
    data = root / "data"
    _run(_as_postgres(["initdb", "-D", str(data), "-A", "trust", "-U", "postgres", "--no-sync"]), "initdb")
    _run(_as_postgres(["pg_ctl", "-D", str(data), "-l", str(root / "server.log"), "-w", "-t", "60", "-o",
                       f"-p {port} -k {root} -c listen_addresses=127.0.0.1", "start"]), "pg_ctl start")
    _run(_as_postgres(["createdb", "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "qexp"]), "createdb")

    def stop() -> None:
        subprocess.run(_as_postgres(["pg_ctl", "-D", str(data), "-m", "immediate", "stop"]), capture_output=True)
        shutil.rmtree(root, ignore_errors=True)

    return f"postgresql+psycopg2://postgres@127.0.0.1:{port}/qexp", stop


def get(url: str, data: dict | None = None):
    body = json.dumps(data).encode() if data is not None else None
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        raw = response.read()
    return json.loads(raw) if data is not None or "/api/" in url else raw


def start_mlflow_server(backend: str, artifacts: Path) -> tuple[str, subprocess.Popen, Path]:
    """`mlflow server` on a free loopback port, storing runs in `backend` and serving the artifacts."""
    port = free_port()
    exe = Path(sys.executable).with_name("mlflow")
    log = artifacts.parent / f"mlflow-server-{port}.log"
    proc = subprocess.Popen([str(exe) if exe.exists() else "mlflow", "server", "--backend-store-uri", backend,
                             "--artifacts-destination", str(artifacts), "--host", "127.0.0.1", "--port", str(port)],
                            stdout=open(log, "w"), stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    for _ in range(240):
        try:
            get(f"{base}/health")
            return base, proc, log
        except OSError:
            if proc.poll() is not None:
                break
            time.sleep(0.5)
    proc.terminate()
    pytest.fail(f"mlflow server did not start on {base}: {log.read_text()[-3000:]}")
