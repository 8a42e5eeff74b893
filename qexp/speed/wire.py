"""What qexp and its subprocesses in vLLM's environment say to each other, defined once: for the speed
phase, the settings file qexp writes, the result file `bench.py` writes, the names of the timed series and
the progress line; for an evaluation in vLLM (`harness.py`), its settings file and lm-eval's progress bars.

Both sides import this module: qexp as `qexp.speed.wire`, and `bench.py`, which runs under vLLM's own
interpreter where qexp is not installed, as `wire` from its own folder. So it uses the standard library only.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from dataclasses import asdict, dataclass, fields
from pathlib import Path

__all__ = ["BenchSettings", "BenchResult", "EvalSettings", "FIRST_TOKEN", "BATCH_1_FULL", "batch_series",
           "progress_line", "parse_progress", "bar_line", "parse_bar", "kv_bytes_per_token", "die_with_parent"]

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


@dataclass(frozen=True)
class EvalSettings:
    """The settings file of an evaluation in vLLM: lm-eval's `simple_evaluate` arguments as qexp sets them
    (`evaluation.evaluate`), the folders its TaskManager indexes, and vLLM's engine arguments."""

    model: str
    tasks: list[str]
    task_folders: list[str]  # TaskManager(include_path=...): lm-eval's task files qexp uses, then qexp's own
    include_defaults: bool  # index every lm-eval task too (when the folders alone would not match)
    num_fewshot: int
    limit: int | None
    samples: dict[str, list[int]] | None  # leaf task -> document indices, instead of the first `limit`
    batch_size: int | str
    seed: int
    bootstrap_iters: int
    responses: str | None  # lm-eval's answers cache (`use_cache`)
    engine: dict  # vLLM's engine arguments (dtype, kv_cache_memory_bytes, enforce_eager...)

    def write(self, path: Path) -> str:
        text = json.dumps(asdict(self))
        Path(path).write_text(text)
        return text

    @classmethod
    def read(cls, path: str | Path) -> EvalSettings:
        data = json.loads(Path(path).read_text())
        return cls(**{f.name: data[f.name] for f in fields(cls)})


def kv_bytes_per_token(model: str, dtype_bytes: int) -> tuple[int, int] | None:
    """(KV-cache bytes per token, the model's longest sequence) from a checkpoint's config.json; None when the
    config does not say. Both sides size vLLM's KV cache with it: on a CPU vLLM otherwise reserves 90% of RAM."""
    try:
        config = json.loads((Path(model) / "config.json").read_text())
    except (OSError, ValueError):
        return None
    config = config.get("text_config", config)
    try:
        layers, heads = config["num_hidden_layers"], config["num_attention_heads"]
        kv_heads = config.get("num_key_value_heads") or heads
        head_dim = config.get("head_dim") or config["hidden_size"] // heads
        return 2 * layers * kv_heads * head_dim * dtype_bytes, int(config.get("max_position_embeddings") or 0)
    except (KeyError, TypeError, ValueError):
        return None


_PROGRESS = "qexp-progress"
_BAR = "qexp-bar"


def bar_line(n: float, total: float | None, desc: str) -> str:
    """What harness.py prints when one of lm-eval's progress bars moves: `qexp-bar <n> <total> <desc>`."""
    return f"{_BAR} {int(n)} {int(total or 0)} {' '.join(str(desc or '').split())}"


def parse_bar(line: str) -> tuple[str, int, int | None] | None:
    """(desc, n, total or None) from a bar line; None for any other line. The bar's own drawing may precede it
    on the line (tqdm redraws with carriage returns, no newline, on the stream both are read from)."""
    at = line.find(_BAR + " ")
    parts = line[at:].rstrip("\n").split(" ", 3) if at >= 0 else []
    if len(parts) >= 3 and parts[0] == _BAR and parts[1].isdigit() and parts[2].isdigit():
        return (parts[3] if len(parts) > 3 else ""), int(parts[1]), int(parts[2]) or None
    return None


def progress_line(done: int, total: int) -> str:
    """What bench.py prints after each timed pass: `qexp-progress <done> <total>`."""
    return f"{_PROGRESS} {done} {total}"


def parse_progress(line: str) -> tuple[int, int] | None:
    """(done, total) from a progress line; None for any other line of vLLM's output."""
    parts = line.split()
    if len(parts) >= 3 and parts[0] == _PROGRESS and parts[1].isdigit() and parts[2].isdigit():
        return int(parts[1]), int(parts[2])
    return None


def die_with_parent() -> None:
    """Stop this subprocess (vLLM's engine with it) when qexp's job dies, even by SIGKILL, so nothing keeps
    computing for a job that is gone: SIGTERM on the parent's death (Linux's PR_SET_PDEATHSIG), and SIGTERM
    exits through Python's shutdown, where vLLM stops its engine. qexp stops the subprocess's whole process
    group itself when the job is stopped by a signal it can catch."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1: PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: the process group stop still applies
        return
    if os.getppid() == 1:  # the parent died before the request was made
        sys.exit(128 + signal.SIGTERM)
