"""`python -m qexp`: the Hydra app. One job = one `pipeline.run`; see conf/config.yaml."""

from __future__ import annotations

import logging
import signal
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from . import config as _config  # noqa: F401  (registers the ${qexp_fixtures:} resolver)
from .errors import QexpError
from .outcome import Outcome, write_outcome
from .pipeline import run

log = logging.getLogger("qexp")


def _terminate(signum, frame):
    # Preemption (SIGTERM) takes the same path as Ctrl-C: the run ends KILLED, not RUNNING.
    raise KeyboardInterrupt(f"received signal {signum}")


def sweep_id_of(hc) -> str:
    """Jobs of one multirun share the sweep folder, so its last two parts name the sweep."""
    folder = hc.sweep.dir if hc.mode.name == "MULTIRUN" else hc.run.dir
    return "_".join(Path(str(folder)).parts[-2:])


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def app(cfg: DictConfig) -> None:
    signal.signal(signal.SIGTERM, _terminate)
    for noisy in ("lm_eval", "httpx", "alembic"):  # per-subtask INFO lines drown qexp's progress
        logging.getLogger(noisy).setLevel(logging.WARNING)
    hc = HydraConfig.get()
    output_dir = Path(hc.runtime.output_dir)
    name = hc.job.override_dirname or "run"
    outcome = Outcome(job=name, status="FAILED")
    try:
        result = run(cfg, sweep_id=sweep_id_of(hc), log_file=output_dir / f"{hc.job.name}.log")
        outcome = Outcome(job=name, status=result.status, run_id=result.run_id, run_name=result.name)
    except QexpError as err:
        log.error("%s", err)
        outcome.error = str(err)
    except KeyboardInterrupt:
        outcome.status, outcome.error = "KILLED", "interrupted"
        write_outcome(output_dir, outcome)
        raise
    except Exception as err:
        log.exception("job %s failed", name)
        outcome.error = f"{type(err).__name__}: {err} (traceback in {output_dir / (hc.job.name + '.log')})"
    write_outcome(output_dir, outcome)


def main() -> None:
    try:
        app()
    except KeyboardInterrupt as err:
        # The run is already marked KILLED; exit like a process killed by the signal would.
        print(f"qexp: stopped: {err or 'interrupted'}", file=sys.stderr)
        sys.exit(143 if "signal 15" in str(err) else 130)


if __name__ == "__main__":
    main()
