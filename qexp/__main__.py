"""`python -m qexp`: the Hydra app. Compose, run the job (`job.run_job`), exit with its status."""

from __future__ import annotations

import logging
import os
import sys

# MLflow installs its own console handler on import, re-applied by some of its lazily imported modules;
# without it, its records go through qexp's logging: the job's log file, and the terminal with verbose=true.
# (Set before the imports below: they import MLflow.)
os.environ.setdefault("MLFLOW_CONFIGURE_LOGGING", "false")

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from . import schema
from .callbacks import abort_active_sweep
from .cli import config_dir_of, credentials_out_of
from .config_errors import composition_error
from .errors import QexpError
from .job import run_job
from .signals import Interrupted

# Before Hydra composes, here and in every process a launcher starts for a job.
schema.register()


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def app(cfg: DictConfig) -> None:
    run_job(cfg, HydraConfig.get())


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
        message = err if isinstance(err, QexpError) else composition_error(err, config_dir_of(sys.argv[1:]))
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
