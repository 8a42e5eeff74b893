from __future__ import annotations

import numpy as np

from qexp.perf import PeakMemory, weights_mb


def test_peak_memory_is_per_run_not_per_process():
    memory = PeakMemory()
    memory.reset()
    blocks = [np.ones(1000) for _ in range(40_000)]  # ~320 MB in small blocks
    during = memory.metrics()["perf/peak_rss_mb"]
    del blocks
    memory.reset()
    after = memory.metrics()["perf/peak_rss_mb"]
    assert after < during - 200


def test_weights_mb_counts_weight_files_only(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"\0" * 2**20)
    (tmp_path / "config.json").write_text("{}" * 1000)
    assert weights_mb(tmp_path) == 1.0
    assert weights_mb(tmp_path / "missing") is None
