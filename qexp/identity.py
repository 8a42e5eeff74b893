"""What names a run and what identifies its result: one place for both.

- `run_name("gptq", 215)` -> `gptq-215` names the MLflow run, the sweep sub-folder and the
  checkpoint folder; `run_label` is the same name as the report prints it (`GPTQ-215`).
  A data-free method (`DATA_FREE`: `rtn`, `fp8`) uses no calibration, so its name has no
  sample count (`rtn`, `RTN`) and its identity leaves calibration out.
- `identity(...)` lists everything that determines a run's result; its digest is the
  `config_hash` that resume matches on. Its evaluation part (`eval_identity`) is what
  "same evaluation settings" means everywhere: its digest is the `eval_hash` tag, and
  `qexp.compare` flags a comparison when the two runs' eval identities differ.
"""

from __future__ import annotations

from importlib import metadata
from pathlib import Path
from typing import Any

from .files import digest

__all__ = [
    "BASELINE",
    "DATA_FREE",
    "METHOD_NAMES",
    "method_name",
    "calibrated",
    "run_name",
    "run_label",
    "sweep_id",
    "checkpoint_folder",
    "responses_key",
    "identity",
    "eval_identity",
    "quant_identity",
    "config_hash",
    "EVAL_LIBRARIES",
    "QUANT_LIBRARIES",
    "library_versions",
]

BASELINE = "none"  # quant.name of the unquantized baseline
DATA_FREE = ("rtn", "fp8")  # quantization methods that read no calibration data: calib.n does not apply

# What a result depends on besides the config: a version change re-runs the sweep.
EVAL_LIBRARIES = ("torch", "transformers", "lm_eval")
QUANT_LIBRARIES = ("llmcompressor", "compressed-tensors")


def calibrated(method: str) -> bool:
    """Whether `method` reads calibration samples (so calib.n is part of its result)."""
    return method != BASELINE and method not in DATA_FREE


def run_name(method: str, calib_n: int | str) -> str:
    """`baseline`, `rtn`, `gptq-215`, `awq-512`: the one naming rule for runs, folders and reports."""
    if method == BASELINE:
        return "baseline"
    return f"{method}-{calib_n}" if calibrated(method) else method


def sweep_id(folder: str | Path) -> str:
    """Jobs of one multirun share the sweep folder (`multirun/<date>/<time>`), so its last two parts name it."""
    return "_".join(Path(str(folder)).parts[-2:])


# How reports spell each method; an unlisted method prints in capitals.
METHOD_NAMES = {"rtn": "RTN", "gptq": "GPTQ", "awq": "AWQ", "autoround": "AutoRound", "w8a8": "W8A8", "fp8": "FP8"}


def method_name(method: str) -> str:
    """`AutoRound` for `autoround`: a method as reports, plots and run descriptions spell it."""
    return METHOD_NAMES.get(method, method.upper())


def run_label(method: str, calib_n: int | str) -> str:
    """The run name as reports print it: `Baseline`, `RTN`, `GPTQ-215`, `AutoRound-512`."""
    if method == BASELINE:
        return "Baseline"
    shown = method_name(method)
    return f"{shown}-{calib_n}" if calibrated(method) else shown


def library_versions(*names: str) -> dict[str, str]:
    """Installed distributions' versions, read from their metadata (nothing is imported)."""
    return {name: metadata.version(name) for name in names}


def identity(*, model: dict, dtype: str | None, eval: dict, quant: dict | None = None, calib: dict | None = None,
             speed: dict | None = None) -> dict:
    """Everything that determines the result, and nothing that does not.

    `model` is the weights' fingerprint, `dtype` what they are loaded in to quantize (None for
    the baseline, which is only evaluated, in eval's own dtype), `eval` the evaluation settings
    with a fingerprint of their data; `quant` and `calib` are absent for the baseline, `calib` for a data-free
    method (the same RTN checkpoint whatever calib.n says); `speed` is the speed phase's settings,
    runtime and device (`qexp.speed.SpeedPlan.identity`), absent with speed=none. Left out on purpose:
    output folders, tracking settings, eval.batch_size, device and quant.offload_device (they
    change numerics at most in the last float bits; all are logged as params; spec leaves
    offload_device out of `quant`).
    """
    weights = {**model, "dtype": dtype} if dtype is not None else dict(model)
    out: dict[str, Any] = {"model": weights, "eval": eval, "versions": library_versions(*EVAL_LIBRARIES)}
    if quant is not None:
        out["quant"] = quant
        if calib is not None:
            out["calib"] = calib
        out["versions"].update(library_versions(*QUANT_LIBRARIES))
    if speed is not None:
        out["speed"] = speed
    return out


def config_hash(ident: dict) -> str:
    return digest(ident)


def eval_identity(ident: dict) -> dict:
    """What two runs must share for their scores to be comparable: the evaluation settings and
    data (the dtype the model is evaluated in among them), and the versions of the evaluating libraries."""
    return {**ident["eval"], "versions": {k: v for k, v in ident["versions"].items() if k in EVAL_LIBRARIES}}


def quant_identity(ident: dict) -> dict:
    """Everything but the evaluation and the speed measurement: what a checkpoint depends on, so it
    survives a failed evaluation and serves every speed setting."""
    return {**{k: v for k, v in ident.items() if k not in ("eval", "speed")},
            "versions": {k: v for k, v in ident["versions"].items() if k != "lm_eval"}}


def checkpoint_folder(root: Path, model_name: str, method: str, calib_n: int, ident: dict) -> Path:
    """One folder per quantization configuration: `<model>-<run name>-<quant hash>`."""
    return Path(root) / f"{model_name}-{run_name(method, calib_n)}-{digest(quant_identity(ident))}"


def responses_key(ident: dict, weights: list) -> str:
    """Names the cache of a model's answers to lm-eval requests (`evaluation.evaluate(responses=...)`):
    the quantization identity (model, dtype, method, calibration, libraries), the dtype the model is
    evaluated in, and `weights`, the name, size and modification time of each weight file evaluated, so
    a checkpoint written again (a rerun that quantizes afresh, a local model saved over) never reads
    answers computed on the old one, nor a bfloat16 evaluation a float32 one's answers. lm-eval's
    version is left out: the cache is keyed by each request's text, whatever formatted it. An evaluation in
    vLLM (eval.backend=vllm) adds its backend (vLLM's version, its numeric path): answers computed by one
    runtime never pass for another's."""
    backend = ident["eval"].get("backend")
    return digest([quant_identity(ident), ident["eval"].get("dtype"), weights, *([backend] if backend else [])])
