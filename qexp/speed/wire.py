"""What the speed phase and its measurement subprocess say to each other, defined once: the settings
file qexp writes, the result file `bench.py` writes, the names of the timed series, and the progress line.

Both sides import this module: qexp as `qexp.speed.wire`, and `bench.py`, which runs under vLLM's own
interpreter where qexp is not installed, as `wire` from its own folder. So it uses the standard library only.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path

__all__ = ["BenchSettings", "BenchResult", "FIRST_TOKEN", "BATCH_1_FULL", "batch_series", "progress_line",
           "parse_progress"]

# The timed series, each one duration per repetition (seconds).
FIRST_TOKEN = "first_token"  # batch 1, one output token: the prefill
BATCH_1_FULL = "batch_1_full"  # batch 1, output_tokens tokens


def batch_series(batch: int) -> str:
    """The series of a batch size's passes: batch 1's full pass, else `batch_<B>`."""
    return BATCH_1_FULL if batch == 1 else f"batch_{batch}"


@dataclass(frozen=True)
class BenchSettings:
    """The settings file: the checkpoint and what the measurement does (`speed.*` minus where and how long)."""

    model: str
    batch_sizes: list[int]
    prompt_tokens: int
    output_tokens: int
    warmup: int
    repetitions: int
    dtype: str
    w4a8: bool
    enforce_eager: bool

    def write(self, path: Path) -> str:
        text = json.dumps(asdict(self))
        Path(path).write_text(text)
        return text

    @classmethod
    def read(cls, path: str | Path) -> BenchSettings:
        data = json.loads(Path(path).read_text())
        return cls(**{f.name: data[f.name] for f in fields(cls)})


@dataclass(frozen=True)
class BenchResult:
    """The result file: vLLM's version, its load time, the KV cache it was given, every repetition's times."""

    vllm_version: str
    load_seconds: float
    kv_cache_bytes: int | None
    seconds: dict[str, list[float]]  # series name (FIRST_TOKEN, BATCH_1_FULL, batch_<B>) -> one time per repetition

    def write(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(asdict(self)))

    @classmethod
    def read(cls, path: str | Path) -> BenchResult:
        data = json.loads(Path(path).read_text())
        return cls(**{f.name: data[f.name] for f in fields(cls)})


_PROGRESS = "qexp-progress"


def progress_line(done: int, total: int) -> str:
    """What bench.py prints after each timed pass: `qexp-progress <done> <total>`."""
    return f"{_PROGRESS} {done} {total}"


def parse_progress(line: str) -> tuple[int, int] | None:
    """(done, total) from a progress line; None for any other line of vLLM's output."""
    parts = line.split()
    if len(parts) >= 3 and parts[0] == _PROGRESS and parts[1].isdigit() and parts[2].isdigit():
        return int(parts[1]), int(parts[2])
    return None
