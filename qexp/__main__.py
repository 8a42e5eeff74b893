"""`python -m qexp`: the Hydra app. One job = one `pipeline.run`; see conf/config.yaml."""

from __future__ import annotations

import logging
import os
import re
import signal
import sys
from pathlib import Path
from urllib.parse import unquote

# MLflow installs its own console handler on import, re-applied by some of its lazily imported modules;
# without it, its records go through qexp's logging: the job's log file, and the terminal with verbose=true.
# (Set before the imports below: they import MLflow.)
os.environ.setdefault("MLFLOW_CONFIGURE_LOGGING", "false")

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from . import gpus, schema
from .callbacks import abort_active_sweep
from .errors import Interrupted, QexpError, interrupt_handled, on_signal
from .files import default_cache_dir
from .identity import sweep_id
from .outcome import Outcome, write_outcome
from .pipeline import run

log = logging.getLogger("qexp")

# Before Hydra composes, here and in every process a launcher starts for a job.
schema.register()


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def app(cfg: DictConfig) -> None:
    for signum in (signal.SIGINT, signal.SIGTERM):  # preemption (SIGTERM) ends the run KILLED, as Ctrl-C does
        signal.signal(signum, on_signal)
    _console(verbose=cfg.verbose)
    hc = HydraConfig.get()
    output_dir = Path(hc.runtime.output_dir)
    log_file = output_dir / f"{hc.job.name}.log"
    name = hc.job.override_dirname or "run"
    outcome = Outcome(job=name, status="FAILED")
    try:
        cache_dir = Path(cfg.paths.cache_dir).expanduser() if cfg.paths.cache_dir else default_cache_dir()
        gpus.pin(cfg.device, cfg.gpus_per_job, cache_dir / "gpu-slots")  # before anything initialises CUDA here
        folder = hc.sweep.dir if hc.mode.name == "MULTIRUN" else hc.run.dir
        result = run(cfg, sweep_id=sweep_id(folder), log_file=log_file)
        outcome = Outcome(job=name, status=result.status, run_id=result.run_id, run_name=result.name)
    except QexpError as err:
        log.error("%s", err)
        outcome.error, outcome.refused = str(err), err.refused
    except KeyboardInterrupt as err:
        interrupt_handled()
        outcome.status, outcome.error = "KILLED", str(err) or "interrupted"
        write_outcome(output_dir, outcome)
        if "BasicLauncher" in str(hc.launcher.get("_target_", "")):
            raise  # the job runs in the sweep's process: stop the sweep
        # A job of its own (a SLURM job, a joblib worker) stops alone: its outcome file says KILLED,
        # and returning lets the launcher collect it (a job that raised KeyboardInterrupt leaves
        # submitit no result to wait for).
        return
    except Exception as err:
        log.exception("job %s failed", name)
        outcome.error = f"{type(err).__name__}: {err} (traceback in {log_file})"
    write_outcome(output_dir, outcome)


def _config_dir(argv: list[str]) -> Path | None:
    """The folder given with Hydra's --config-path/-cp, where the YAML files of this command are."""
    for i, arg in enumerate(argv):
        if arg in ("--config-path", "-cp") and i + 1 < len(argv):
            return Path(argv[i + 1])
        if arg.startswith("--config-path="):
            return Path(arg.split("=", 1)[1])
    return None


def _console(verbose: bool) -> None:
    """By default the terminal shows qexp's own lines (conf/config.yaml filters the console handler);
    libraries' log lines and warnings still reach the job's log file, their progress bars the job's
    libraries.log (see pipeline.execute). verbose=true shows everything."""
    logging.captureWarnings(True)
    if verbose:
        for handler in logging.getLogger().handlers:
            handler.filters.clear()
        logging.getLogger("mlflow").setLevel(logging.INFO)


_HTTP_CREDENTIALS = re.compile(r"^(?P<scheme>https?://)(?P<user>[^/\s:@]+):(?P<password>[^@\s/]*)@(?P<rest>\S*)$")


def credentials_out_of(argv: list[str]) -> list[str]:
    """`argv` with a password written into `tracking.uri=http(s)://user:password@host` moved out: the
    user and password go to MLFLOW_TRACKING_USERNAME/PASSWORD (how MLflow's client authenticates, the
    job processes a launcher starts included), the URI keeps the host. This runs before Hydra reads
    the command line, which it prints per job and saves under the output folders. A database URI
    (postgresql://user:password@...) keeps its password: its driver reads it there."""
    out = []
    for arg in argv:
        key, sep, value = arg.partition("=")
        found = _HTTP_CREDENTIALS.match(value) if sep and key.lstrip("+~") == "tracking.uri" else None
        if found:
            os.environ["MLFLOW_TRACKING_USERNAME"] = unquote(found["user"])
            os.environ["MLFLOW_TRACKING_PASSWORD"] = unquote(found["password"])
            arg = f"{key}={found['scheme']}{found['rest']}"
        out.append(arg)
    return out


def main() -> None:
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    # Hydra prints composition errors in its own words and exits; with HYDRA_FULL_ERROR it
    # raises them instead, so they can be said in qexp's (key, value, fix).
    os.environ.setdefault("HYDRA_FULL_ERROR", "1")
    sys.argv[1:] = credentials_out_of(sys.argv[1:])
    # The levels MLflow would set for itself (MLFLOW_CONFIGURE_LOGGING=false above): its database migrations
    # are not news. Its own INFO lines (system metrics starting and stopping) only with verbose=true.
    for name in ("mlflow", "alembic", "sqlalchemy", "huey"):
        logging.getLogger(name).setLevel(logging.WARNING)
    try:
        app()
    except (HydraException, OmegaConfBaseException, QexpError) as err:
        message = err if isinstance(err, QexpError) else schema.composition_error(err, _config_dir(sys.argv[1:]))
        print(f"qexp: {message}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt as err:
        # The job's run is already marked KILLED, the sweep's parent run is marked now; exit like
        # a process killed by the signal would.
        abort_active_sweep(str(err) or "interrupted (Ctrl-C)")
        print(f"qexp: stopped: {err or 'interrupted'}", file=sys.stderr)
        sys.exit(err.exit_code if isinstance(err, Interrupted) else 130)


if __name__ == "__main__":
    main()
