"""Hydra callbacks: sweep-level bookkeeping that no single job can do."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from .outcome import Outcome, read_outcomes

log = logging.getLogger("qexp")

__all__ = ["SweepSummary"]


class SweepSummary(Callback):
    """Creates the MLflow store before jobs start, and ends the sweep with a summary.

    The exit status is non-zero when any job failed, so scripts and CI notice.
    """

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        # Parallel jobs racing on a fresh SQLite store's schema crash (duplicate column);
        # creating it once here, before any job starts, avoids that.
        from .tracking import Store, check_uri

        try:
            check_uri(config.tracking.uri)
            Store.open(config.tracking.uri, config.tracking.experiment)
        except Exception:
            pass  # each job validates the config itself and reports the problem

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        outcomes = read_outcomes(Path(config.hydra.sweep.dir), recursive=True)
        _report(outcomes, "sweep")

    def on_run_end(self, config: DictConfig, **kwargs: Any) -> None:
        outcomes = read_outcomes(Path(config.hydra.runtime.output_dir), recursive=False)
        if any(not o.ok for o in outcomes):
            sys.exit(1)


def _report(outcomes: list[Outcome], what: str) -> None:
    failed = [o for o in outcomes if not o.ok]
    lines = [f"qexp {what}: {len(outcomes)} jobs, {len(outcomes) - len(failed)} ok, {len(failed)} failed"]
    for o in outcomes:
        detail = o.run_name or ""
        if o.error:
            detail = f"{detail} {o.error}".strip()
        lines.append(f"  {o.status:<9} {o.job}  {detail}")
    print("\n".join(lines), file=sys.stderr if failed else sys.stdout)
    if failed:
        sys.exit(1)
