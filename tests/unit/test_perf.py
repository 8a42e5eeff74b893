from __future__ import annotations

import numpy as np

from qexp.perf import PhaseMemory, weights_mb


class FakeCuda:
    """torch.cuda's memory statistics, for a machine without a GPU: `allocate` and `free` move them."""

    def __init__(self):
        self.allocated = self.peak = 0
        self.cached = 0
        self.calls: list[str] = []

    def allocate(self, mb: int) -> None:
        self.allocated += mb * 2**20
        self.cached = max(self.cached, self.allocated)
        self.peak = max(self.peak, self.allocated)

    def free(self, mb: int) -> None:
        self.allocated -= mb * 2**20

    def reset_peak_memory_stats(self):
        self.calls.append("reset")
        self.peak = self.allocated

    def max_memory_allocated(self):
        return self.peak

    def memory_allocated(self):
        return self.allocated

    def synchronize(self):
        pass

    def empty_cache(self):
        self.calls.append("empty_cache")
        self.cached = self.allocated


def test_each_phase_has_its_own_gpu_peak_and_what_it_still_holds():
    cuda = FakeCuda()
    memory = PhaseMemory(cuda)
    with memory.phase("quant"):
        cuda.allocate(9000)
        cuda.free(9000)
    with memory.phase("eval"):
        cuda.allocate(3000)
        cuda.free(2500)  # 500 MB kept past the phase: a leak the metrics show
    metrics = memory.metrics()
    assert metrics["perf/quant_peak_gpu_mb"] == 9000 and metrics["perf/eval_peak_gpu_mb"] == 3000
    assert metrics["perf/quant_held_gpu_mb"] == 0 and metrics["perf/eval_held_gpu_mb"] == 500
    assert metrics["perf/peak_gpu_mb"] == 9000  # the run's peak: the larger phase
    assert cuda.calls == ["empty_cache", "reset", "empty_cache"] * 2  # released and reset at each start
    assert cuda.cached == 500 * 2**20  # the cache was emptied after the phase


def test_each_phase_has_its_own_peak_rss():
    memory = PhaseMemory()
    with memory.phase("quant"):
        blocks = [np.ones(1000) for _ in range(40_000)]  # ~320 MB in small blocks
        del blocks
    with memory.phase("eval"):
        pass
    metrics = memory.metrics()
    assert metrics["perf/eval_peak_rss_mb"] < metrics["perf/quant_peak_rss_mb"] - 200
    assert metrics["perf/peak_rss_mb"] == metrics["perf/quant_peak_rss_mb"]
    assert not any("gpu" in key for key in metrics)  # no CUDA, no GPU figures


def test_a_failed_phase_still_releases_its_memory():
    cuda = FakeCuda()
    memory = PhaseMemory(cuda)
    try:
        with memory.phase("quant"):
            cuda.allocate(100)
            raise RuntimeError("out of memory")
    except RuntimeError:
        pass
    assert cuda.calls[-1] == "empty_cache" and memory.phases["quant"]["peak_gpu_mb"] == 100


def test_weights_mb_counts_weight_files_only(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"\0" * 2**20)
    (tmp_path / "config.json").write_text("{}" * 1000)
    assert weights_mb(tmp_path) == 1.0
    assert weights_mb(tmp_path / "missing") is None


def test_an_evaluation_in_vllm_reports_vllms_processes_beside_the_jobs_own_peak():
    memory = PhaseMemory()
    with memory.phase("eval"):
        pass
    memory.phases["eval"]["served_peak_mb"] = 2500.0  # what pipeline records from evaluate_served's watcher
    metrics = memory.metrics()
    assert metrics["perf/eval_served_peak_mb"] == 2500.0
    assert metrics["perf/peak_rss_mb"] == metrics["perf/eval_peak_rss_mb"] < 2500.0  # the job's own figure stays its own
