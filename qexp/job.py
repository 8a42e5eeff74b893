"""One Hydra job, in whatever process runs it (the sweep's, a joblib worker, a SLURM job): stop on
signals, pin its GPUs, run the pipeline, and write its outcome where the sweep's summary reads it."""

from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig

from . import console, gpus, signals
from .errors import QexpError
from .files import default_cache_dir
from .identity import sweep_id
from .outcome import Outcome, write_outcome
from .pipeline import run
from .sweep_jobs import shared_alpha

__all__ = ["run_job"]

log = logging.getLogger("qexp")


def run_job(cfg: DictConfig, hc) -> None:
    """Run the job Hydra composed (`hc`: its HydraConfig). It never raises but for a signal in the
    sweep's own process (which stops the sweep); how it ended is in its outcome file."""
    signals.install()  # preemption (SIGTERM) ends the run KILLED, as Ctrl-C does
    console.setup(verbose=cfg.verbose)
    output_dir = Path(hc.runtime.output_dir)
    log_file = output_dir / f"{hc.job.name}.log"
    name = hc.job.override_dirname or "run"
    outcome = Outcome(job=name, status="FAILED")
    try:
        cache_dir = Path(cfg.paths.cache_dir).expanduser() if cfg.paths.cache_dir else default_cache_dir()
        gpus.pin(cfg.device, cfg.gpus_per_job, cache_dir / "gpu-slots")  # before anything initialises CUDA here
        folder = hc.sweep.dir if hc.mode.name == "MULTIRUN" else hc.run.dir
        shared_alpha(cfg, folder if hc.mode.name == "MULTIRUN" else None)
        result = run(cfg, sweep_id=sweep_id(folder), log_file=log_file)
        outcome = Outcome(job=name, status=result.status, run_id=result.run_id, run_name=result.name)
    except QexpError as err:
        log.error("%s", err)
        outcome.error, outcome.refused = str(err), err.refused
    except KeyboardInterrupt as err:
        signals.interrupt_handled()
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
