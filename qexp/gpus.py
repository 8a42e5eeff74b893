"""Each job process sees only its device, set before torch initialises CUDA in it.

llmcompressor calibrates on the first GPU a process sees, whatever it is asked, and CUDA
reads CUDA_VISIBLE_DEVICES once, when it starts; so `pin(device, ...)`, called by
`python -m qexp` before anything touches CUDA, makes the job's device the only one it can
see: `cpu` hides every GPU, `cuda:N` leaves only GPU N, and `auto`/`cuda` claim
`gpus_per_job` free GPUs (below). `spec.prepare` then refuses a device the process cannot
honour (e.g. `cuda:1` in a notebook that was not pinned).

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
import re
import subprocess
import time
from pathlib import Path

from .errors import config_error

__all__ = ["visible_gpus", "claim", "pin", "pinned"]

_held: list = []  # this process's open lock files (closing them would release the GPUs)
_pinned: list[str] = []  # the device this process was pinned to, once it was


def pin(device: str, count: int, lock_dir: Path) -> None:
    """Make `device` what this process's jobs see, before CUDA starts; later calls must agree."""
    if _pinned:
        if device != _pinned[0]:
            raise config_error("device", device, f"This process already runs its jobs on device={_pinned[0]}, "
                               "and CUDA cannot move once it has started",
                               "Run jobs with different devices in separate commands.")
        return
    index = re.fullmatch(r"cuda:(\d+)", device)
    if device == "cpu":
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
    elif index:
        gpus = visible_gpus()
        if int(index.group(1)) >= len(gpus):
            fix = f"Use device=cuda:0 .. cuda:{len(gpus) - 1}, or device=auto." if gpus else \
                "Use device=cpu or device=auto."
            raise config_error("device", device, f"Only {len(gpus)} GPUs are visible here "
                               f"({','.join(gpus) or 'none'})", fix)
        os.environ["CUDA_VISIBLE_DEVICES"] = gpus[int(index.group(1))]
    elif device in ("auto", "cuda"):
        claim(count, lock_dir)
    else:
        return  # not a device: prepare() says what is wrong
    _pinned.append(device)


def pinned() -> str | None:
    """The device `pin` made this process's only one, or None when it was not pinned."""
    return _pinned[0] if _pinned else None


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
