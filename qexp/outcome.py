"""Each job leaves `qexp_outcome.json` in its output folder; the sweep summary reads them.

Files rather than return values, so the summary works with launchers that run jobs in
other processes or on other machines.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

__all__ = ["Outcome", "write_outcome", "read_outcomes", "OUTCOME_FILE"]

OUTCOME_FILE = "qexp_outcome.json"


@dataclass
class Outcome:
    job: str
    status: str  # FINISHED | SKIPPED | FAILED | KILLED
    run_id: str | None = None
    run_name: str | None = None
    error: str | None = None
    refused: bool = False  # refused before it started (a config or store setting to fix): exit status 2

    @property
    def ok(self) -> bool:
        return self.status in ("FINISHED", "SKIPPED")


def write_outcome(folder: Path, outcome: Outcome) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / OUTCOME_FILE).write_text(json.dumps(asdict(outcome), indent=2))


def read_outcomes(folder: Path, recursive: bool) -> list[Outcome]:
    paths = sorted(folder.glob(f"*/{OUTCOME_FILE}")) if recursive else [folder / OUTCOME_FILE]
    return [Outcome(**json.loads(p.read_text())) for p in paths if p.is_file()]
