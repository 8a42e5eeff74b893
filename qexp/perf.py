"""What a run costs: peak memory and checkpoint size, measured per run, not per process."""

from __future__ import annotations

import resource
from pathlib import Path

from .models import WEIGHT_SUFFIXES

__all__ = ["PeakMemory", "weights_mb"]

_CLEAR_REFS = Path("/proc/self/clear_refs")
_STATUS = Path("/proc/self/status")


class PeakMemory:
    """Peak resident memory (and CUDA memory) from `reset()` on.

    On Linux, writing 5 to /proc/self/clear_refs resets the kernel's high-water mark
    (VmHWM), so each run of a sweep that shares one process gets its own peak; elsewhere
    the process-wide peak is reported.
    """

    def reset(self) -> None:
        _release_freed_memory()
        try:
            _CLEAR_REFS.write_text("5")
        except OSError:
            pass
        import torch

        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()

    def metrics(self) -> dict[str, float]:
        out = {"perf/peak_rss_mb": self._peak_rss_mb()}
        import torch

        if torch.cuda.is_available() and torch.cuda.is_initialized():
            out["perf/peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2**20
        return out

    @staticmethod
    def _peak_rss_mb() -> float:
        try:
            for line in _STATUS.read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
        except OSError:
            pass
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _release_freed_memory() -> None:
    """Collect garbage and hand freed heap back to the OS, so an earlier run's leftovers in a
    shared process do not count as this run's memory."""
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


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
