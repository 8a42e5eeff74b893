"""Each job process holds GPUs of its own, claimed before torch initialises CUDA in it.

With parallel jobs on one machine (launcher=local), every job process claims `gpus_per_job`
GPUs no other process holds, through file locks in `<cache_dir>/gpu-slots/`, and restricts
itself to them with CUDA_VISIBLE_DEVICES. A claim lasts as long as the process: the joblib
launcher reuses its worker processes for later jobs, and a process whose CUDA is initialised
cannot move to other GPUs. The kernel drops the locks when a process exits, however it ends.
Under SLURM the scheduler has already chosen the job's GPUs; without GPUs nothing happens.
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import time
from pathlib import Path

from .errors import config_error

__all__ = ["visible_gpus", "claim"]

_held: list = []  # this process's open lock files (closing them would release the GPUs)


def visible_gpus() -> list[str]:
    """The GPUs this process may use: CUDA_VISIBLE_DEVICES when set, else every GPU nvidia-smi lists."""
    given = os.environ.get("CUDA_VISIBLE_DEVICES")
    if given is not None:
        return [g.strip() for g in given.split(",") if g.strip() and g.strip() != "-1"]
    try:
        listing = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return []
    return [str(i) for i, line in enumerate(listing.stdout.splitlines()) if line.startswith("GPU ")]


def claim(count: int, lock_dir: Path, wait_seconds: float = 60) -> list[str]:
    """The GPUs this process holds: claimed now when it holds none, the same ones on later calls."""
    if _held:
        return os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",")
    gpus = visible_gpus()
    if not gpus or count < 1 or "SLURM_JOB_ID" in os.environ:  # count < 1: prepare() says what is wrong
        return gpus
    if count > len(gpus):
        raise config_error("gpus_per_job", count, f"Only {len(gpus)} GPUs are visible here ({','.join(gpus)})",
                           f"Set gpus_per_job to at most {len(gpus)}.")
    lock_dir.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + wait_seconds
    while True:
        got = _try_claim(gpus, count, lock_dir)
        if got:
            os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(got)
            return got
        if time.monotonic() > deadline:
            raise config_error("gpus_per_job", count, f"No {count} of the {len(gpus)} GPUs are free: other "
                               "job processes hold them", "Run at most (GPUs / gpus_per_job) jobs at once, "
                               f"e.g. hydra.launcher.n_jobs={len(gpus) // count}.")
        time.sleep(1)


def _try_claim(gpus: list[str], count: int, lock_dir: Path) -> list[str]:
    taken = []
    for gpu in gpus:
        handle = open(lock_dir / f"gpu-{gpu}.lock", "w")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            continue
        taken.append((gpu, handle))
        if len(taken) == count:
            _held.extend(handle for _, handle in taken)
            return [gpu for gpu, _ in taken]
    for _, handle in taken:  # not enough free: give back what was taken
        handle.close()
    return []
