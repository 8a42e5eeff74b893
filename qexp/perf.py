"""What a run costs: memory per phase and checkpoint size, measured per run, not per process."""

from __future__ import annotations

import contextlib
import resource
from pathlib import Path
from typing import Any, Iterator

from .contract import METRICS
from .models import WEIGHT_SUFFIXES

__all__ = ["PhaseMemory", "release_memory", "rss_mb", "weights_mb"]

_CLEAR_REFS = Path("/proc/self/clear_refs")
_STATUS = Path("/proc/self/status")


class PhaseMemory:
    """Peak memory of each phase of a run (`quant`, `eval`), each measured from its own start.

    A phase starts from released memory (garbage collected, freed heap handed back, the CUDA
    cache emptied) and reset high-water marks: on Linux, writing 5 to /proc/self/clear_refs
    resets the kernel's peak RSS (VmHWM), so a phase, or a run in a sweep that shares one
    process, does not inherit an earlier one's peak (elsewhere the process-wide peak is
    reported); CUDA's peak is reset with `reset_peak_memory_stats`. After a phase, memory is
    released again and what is still held is recorded: it should be near zero on the GPU.

    `cuda` is `torch.cuda`, or None when the run does not use CUDA; tests pass a stand-in.
    """

    def __init__(self, cuda: Any = None):
        self.cuda = cuda
        self.phases: dict[str, dict[str, float]] = {}

    @classmethod
    def for_device(cls, device: str) -> "PhaseMemory":
        if not device.startswith("cuda"):
            return cls()
        import torch

        return cls(torch.cuda)

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        release_memory(self.cuda)
        _reset_peak_rss()
        if self.cuda is not None:
            self.cuda.reset_peak_memory_stats()
        try:
            yield
        finally:  # a failed phase releases its memory too: the next job may share this process
            figures = {"peak_rss_mb": _peak_rss_mb()}
            if self.cuda is not None:
                figures["peak_gpu_mb"] = self.cuda.max_memory_allocated() / 2**20
            release_memory(self.cuda)
            figures["held_rss_mb"] = rss_mb()
            if self.cuda is not None:
                figures["held_gpu_mb"] = self.cuda.memory_allocated() / 2**20
            self.phases[name] = figures

    def metrics(self) -> dict[str, float]:
        """`perf/<phase>_peak_rss_mb`, `perf/<phase>_peak_gpu_mb` and `perf/<phase>_held_gpu_mb` per phase,
        and the run's overall `perf/peak_rss_mb` and `perf/peak_gpu_mb` (the largest phase peak); for an
        evaluation in vLLM (eval.backend=vllm), `perf/eval_served_peak_mb`: vLLM's processes, which are not
        the job's and not in its RSS."""
        out = {}
        for phase, figures in self.phases.items():
            for key in ("peak_rss_mb", "peak_gpu_mb", "held_gpu_mb", "served_peak_mb"):
                if key in figures:
                    out[METRICS.phase(phase, key)] = figures[key]
        for key in ("peak_rss_mb", "peak_gpu_mb"):
            peaks = [figures[key] for figures in self.phases.values() if key in figures]
            if peaks:
                out[METRICS.perf(key)] = max(peaks)
        return out


def release_memory(cuda: Any = None) -> None:
    """Collect garbage, hand freed heap back to the OS and empty the CUDA cache, so that memory a
    finished phase dropped is neither counted against the next one nor kept from other processes."""
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
    if cuda is not None:
        cuda.synchronize()
        cuda.empty_cache()


def _reset_peak_rss() -> None:
    try:
        _CLEAR_REFS.write_text("5")
    except OSError:
        pass


def _status_mb(field: str) -> float | None:
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith(field):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _peak_rss_mb() -> float:
    peak = _status_mb("VmHWM:")
    return peak if peak is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def rss_mb() -> float:
    """This process's resident memory now (Linux; elsewhere its peak)."""
    now = _status_mb("VmRSS:")
    return now if now is not None else _peak_rss_mb()


def weights_mb(model: str | Path) -> float | None:
    """Size on disk of a checkpoint's weight files: a local folder, or a hub model in the local cache."""
    folder = Path(model)
    if not folder.is_dir():
        try:
            from huggingface_hub import snapshot_download

            folder = Path(snapshot_download(str(model), local_files_only=True))
        except Exception:
            return None
    files = [p for p in folder.rglob("*") if p.is_file() and p.name.endswith(WEIGHT_SUFFIXES)]
    return sum(p.stat().st_size for p in files) / 2**20 if files else None


def size_metrics(checkpoint: str | Path, model: str | Path, is_baseline: bool) -> dict[str, float]:
    """Checkpoint size and, for quantized runs, the compression against the unquantized `model`."""
    sizes = {}
    size = weights_mb(checkpoint)
    if size:
        sizes[METRICS.CHECKPOINT_MB] = size
    base = weights_mb(model) if not is_baseline else size
    if size and base:
        sizes[METRICS.BASELINE_MB] = base
        sizes[METRICS.COMPRESSION_RATIO] = base / size
    return sizes
