"""Every test runs against temporary stores: no test touches ~/.cache/qexp, ./mlruns or the hub."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from omegaconf import DictConfig, open_dict

from qexp.schema import compose

# As qexp.tracking does for qexp's processes: MLflow's telemetry thread, with no internet, edits
# os.environ while requests reads it (a KeyError in a test's own MLflow call, now and then).
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    """One qexp cache per test session, so the tiny model is built once."""
    return tmp_path_factory.mktemp("qexp-cache")


@pytest.fixture(autouse=True)
def isolated(tmp_path, cache_dir, monkeypatch):
    monkeypatch.setenv("QEXP_CACHE_DIR", str(cache_dir))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(cache_dir / "hf-datasets"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)


def compose_config(*overrides: str, root: Path | None = None) -> DictConfig:
    """The real config tree, composed as `python -m qexp <overrides>` would, outputs under `root`."""
    root = Path(root or os.getcwd())
    cfg = compose(overrides)
    given = {o.split("=", 1)[0] for o in overrides}
    with open_dict(cfg):
        if "paths.output_dir" not in given:
            cfg.paths.output_dir = str(root / "out")
        if "paths.checkpoint_dir" not in given:  # quantize here, never reuse another test's checkpoint
            cfg.paths.checkpoint_dir = str(root / "checkpoints")
        if "tracking.uri" not in given:
            cfg.tracking.uri = f"sqlite:///{root}/mlruns/mlflow.db"
    return cfg
