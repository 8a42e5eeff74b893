"""What a speed figure was measured on, in the words that decide which kernels run: the CPU's model
and the instruction sets vLLM's CPU kernels use (AVX-512, AVX512-BF16, AMX), or the GPU's name.
A figure means nothing without it; it is part of the measurement's identity."""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path

__all__ = ["describe", "label", "no_fast_kernel"]

# /proc/cpuinfo flag -> how the label spells it; these decide vLLM's CPU paths (bf16 AMX, int8 AMX, int4 W4A8).
CPU_FEATURES = {"avx512f": "AVX-512", "avx512_bf16": "AVX512-BF16", "amx_bf16": "AMX-BF16", "amx_int8": "AMX-INT8",
                "amx_fp16": "AMX-FP16", "amx_fp8": "AMX-FP8"}


def describe(kind: str, cpuinfo: Path = Path("/proc/cpuinfo")) -> dict:
    """{'kind': 'cpu', 'name': ..., 'features': [...], 'cores': N} or {'kind': 'cuda', 'name': ...}."""
    if kind == "cuda":
        return {"kind": "cuda", "name": _gpu_name()}
    name, flags = platform.processor() or platform.machine(), set()
    try:
        for line in cpuinfo.read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and value.strip():
                name = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
                break
    except OSError:
        pass
    return {"kind": "cpu", "name": name, "features": [v for k, v in CPU_FEATURES.items() if k in flags],
            "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()}


def label(device: dict) -> str:
    """`Intel(R) Xeon(R) Processor, 2 cores (AVX-512, AVX512-BF16, AMX-BF16, AMX-INT8)` or the GPU's name."""
    if device["kind"] != "cpu":
        return device["name"]
    features = ", ".join(device.get("features", [])) or "no AVX-512 or AMX"
    return f"{device['name']}, {device.get('cores')} cores ({features})"


def no_fast_kernel(scheme: str | None, device: dict) -> str | None:
    """Why `scheme` is not measured on `device` (one line), or None when it is.

    FP8 on a CPU without AMX-FP8: vLLM's CPU FP8 path falls back to a slow `torch._scaled_mm`
    (a 16x576x1536 matmul 1.07 s against 0.003 s in bf16, measured on this project's machine), so
    loading alone did not finish in 5 minutes: the figure would say nothing about FP8 serving."""
    if scheme and "FP8" in scheme.upper() and device["kind"] == "cpu" and "AMX-FP8" not in device.get("features", []):
        return (f"{scheme} has no fast kernel on this CPU (vLLM needs AMX-FP8 for FP8 on a CPU, and "
                "its fallback runs FP8 matmuls hundreds of times slower than bf16); measure FP8 speed on a GPU")
    return None


def _gpu_name() -> str:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader", "-i", "0"],
                             capture_output=True, text=True, timeout=30)
        if out.returncode == 0 and out.stdout.strip():
            return out.stdout.strip().splitlines()[0]
    except (OSError, subprocess.TimeoutExpired):
        pass
    return "unknown GPU"
