"""llmcompressor (and compressed-tensors) behind a few functions: the only module that imports them.

`build_recipe` turns a `quant` config into modifiers; `quantize` calibrates and saves a
configuration's checkpoint, `complete_checkpoint` finds one an earlier attempt left;
`check_scheme` and `widths_to_check` let validation refuse a config before any weights load.

The methods, as llmcompressor 0.14 composes them: RTN and FP8 are a plain QuantizationModifier
(no calibration data); GPTQ a GPTQModifier (symmetric `W4A16`); W8A8 SmoothQuant then GPTQ;
AWQ a smoothing transform paired with a plain QuantizationModifier (asymmetric `W4A16_ASYM`);
AutoRound its own modifier (the `auto-round` package).
"""

from __future__ import annotations

import contextlib
import functools
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from .calibration import Conversation, tokenize
from .errors import config_error, one_of
from .files import atomic_folder, cached_json, digest
from .identity import library_versions

__all__ = ["Checkpoint", "build_recipe", "check_scheme", "complete_checkpoint", "quantize", "quantized_widths",
           "widths_to_check", "is_complete"]


def check_scheme(scheme: str, group_size: int | None, cache_dir: Path) -> None:
    """Refuse a scheme compressed-tensors does not know, or a group size for a scheme without
    groups, before anything loads."""
    version = library_versions("compressed-tensors")["compressed-tensors"]
    strategies = cached_json(cache_dir / "library" / f"compressed-tensors-{version}-schemes.json",
                             _weight_strategies)
    if scheme.upper() not in strategies:
        raise config_error("quant.scheme", scheme, "Unknown compressed-tensors scheme",
                           "Use a preset such as W4A16 (GPTQ, RTN, AutoRound), W4A16_ASYM (AWQ), W8A8 or FP8_DYNAMIC.")
    strategy = strategies[scheme.upper()]
    if group_size is not None and strategy != "group":
        strategy = strategy or "no weight quantization"
        raise config_error("quant.group_size", group_size,
                           f"Scheme {scheme} quantizes weights per {strategy}, not in groups",
                           "Set quant.group_size=null, or choose a grouped scheme such as W4A16.")


def _weight_strategies() -> dict[str, str | None]:
    """compressed-tensors' preset schemes and how each quantizes weights (`group`, `channel`, …;
    None: not at all). Importing the library takes seconds (torch, transformers), so `check_scheme`
    keeps this table in the cache, per library version: a sweep with nothing left to do says so
    without importing compressed-tensors or transformers."""
    from compressed_tensors.quantization.quant_scheme import PRESET_SCHEMES

    return {name: str(args["weights"].strategy) if args.get("weights") is not None else None
            for name, args in PRESET_SCHEMES.items()}


def widths_to_check(config_json: Path, ignore: list[str], cache_dir: Path,
                    widths: Callable[[], dict[str, int]]) -> dict[str, int]:
    """`quantized_widths` of the model whose config is `config_json`, cached per config, ignore list
    and library versions (`widths` builds the model on the meta device, which imports torch)."""
    key = digest([config_json.read_bytes().decode(), ignore, library_versions("transformers", "compressed-tensors")])
    return cached_json(cache_dir / "library" / f"quantized-widths-{key}.json",
                       lambda: quantized_widths(widths(), ignore))


def _scheme(q: Any):
    from compressed_tensors.quantization import QuantizationScheme
    from compressed_tensors.quantization.quant_scheme import preset_name_to_scheme

    scheme = preset_name_to_scheme(q.scheme, list(q.targets)).model_dump()
    if q.group_size is not None and (scheme.get("weights") or {}).get("strategy") == "group":
        scheme["weights"]["group_size"] = int(q.group_size)  # (check_scheme refuses one for other schemes)
    return QuantizationScheme.model_validate(scheme)


def build_recipe(q: Any) -> list:
    """The llmcompressor modifiers for a `quant` config node (any method but `none`)."""
    config_groups = {"group_0": _scheme(q)}
    ignore = list(q.ignore)
    if q.name in ("rtn", "fp8"):  # data-free: the scheme applied by round-to-nearest
        from llmcompressor.modifiers.quantization import QuantizationModifier

        return [QuantizationModifier(config_groups=config_groups, ignore=ignore)]
    if q.name in ("gptq", "w8a8"):
        from llmcompressor.modifiers.gptq import GPTQModifier

        gptq = GPTQModifier(config_groups=config_groups, ignore=ignore, block_size=int(q.block_size),
                            dampening_frac=float(q.dampening_frac), actorder=q.actorder)
        if q.name == "gptq":
            return [gptq]
        from llmcompressor.modifiers.smoothquant import SmoothQuantModifier

        return [SmoothQuantModifier(smoothing_strength=float(q.smoothing_strength)), gptq]
    if q.name == "awq":
        from llmcompressor.modifiers.quantization import QuantizationModifier
        from llmcompressor.modifiers.transform.awq import AWQModifier

        # `auto` is resolved per device by spec.prepare, which checked the value
        one_of("quant.offload_device", q.offload_device, ("cpu", "none"), "Set quant.offload_device=cpu or none.")
        offload = None if q.offload_device == "none" else q.offload_device
        return [AWQModifier(duo_scaling=q.duo_scaling, n_grid=int(q.n_grid), offload_device=offload),
                QuantizationModifier(config_groups=config_groups, ignore=ignore)]
    if q.name == "autoround":
        from llmcompressor.modifiers.autoround import AutoRoundModifier

        # torch.compile of the tuning loop is off: on CPU it needs a C compiler, and it is not needed to tune.
        return [AutoRoundModifier(config_groups=config_groups, ignore=ignore, iters=int(q.iters),
                                  lr=None if q.lr is None else float(q.lr), batch_size=int(q.batch_size),
                                  enable_torch_compile=False)]
    raise config_error("quant.name", q.name, "No recipe for this quantization method",
                       "Use quant=rtn, gptq, awq, autoround, w8a8 or fp8.")


def quantized_widths(widths: dict[str, int], ignore: list[str]) -> dict[str, int]:
    """The Linear layers the recipe will quantize: all but those `quant.ignore` names."""
    from compressed_tensors.utils.match import match_name

    return {name: w for name, w in widths.items() if not any(match_name(name, t) for t in ignore)}


@contextlib.contextmanager
def _cpu_safe_awq() -> Iterator[None]:
    """AWQ pins cached activations unconditionally, which fails with no accelerator.

    Pinning only speeds host-to-device copies, so without an accelerator it is skipped.
    (llmcompressor 0.14, pipelines/cache.py `IntermediatesCache.pin_memory`.)
    """
    import torch
    from llmcompressor.pipelines.cache import IntermediatesCache

    if torch.accelerator.is_available():
        yield
        return
    original = IntermediatesCache.pin_memory
    IntermediatesCache.pin_memory = lambda self, *args, **kwargs: None
    try:
        yield
    finally:
        IntermediatesCache.pin_memory = original


@contextlib.contextmanager
def _forget_traced_models() -> Iterator[None]:
    """llmcompressor's sequential pipeline traces the model's forward with `torch.fx.wrap`, in a
    namespace holding the model itself as `self`, and torch.fx keeps every such namespace in a
    module-level registry forever: without this, each quantized model (8 GB for Qwen3-4B in
    bfloat16) stays in memory until the process ends, and a sweep's next job starts with it.
    The registry entries made during the call are dropped afterwards.
    (torch 2.13 `torch.fx._symbolic_trace._wrapped_fns_to_patch`; llmcompressor 0.14
    pipelines/sequential/ast_helpers.py.)
    """
    from torch.fx import _symbolic_trace

    registry = getattr(_symbolic_trace, "_wrapped_fns_to_patch", {})
    before = set(registry)
    try:
        yield
    finally:
        for key in set(registry) - before:
            del registry[key]


@functools.cache
def _route_logs() -> None:
    """llmcompressor logs with loguru straight to stdout; send its records to Python logging instead
    (logger `llmcompressor`), where the job's log file gets them and the console shows them with verbose=true."""
    import logging
    import os

    os.environ.setdefault("LLM_COMPRESSOR_LOG_LEVEL", "ERROR")  # its console sink, until replaced below
    import llmcompressor  # noqa: F401  (configures loguru when first imported)
    from loguru import logger

    python_logger = logging.getLogger("llmcompressor")
    logger.remove()
    logger.add(lambda message: python_logger.log(message.record["level"].no, message.record["message"]),
               level="INFO", format="{message}")


CHECKPOINT_MARKER = "qexp_checkpoint.json"


@dataclass
class Checkpoint:
    path: Path
    quant_seconds: float  # calibration, quantization and saving, when it was made
    reused: bool  # True: a complete checkpoint from an earlier attempt, not quantized now


def is_complete(checkpoint: Path) -> bool:
    """A checkpoint folder is complete once it holds the marker written just before its rename."""
    return (checkpoint / CHECKPOINT_MARKER).is_file()


def complete_checkpoint(out: Path) -> Checkpoint | None:
    """The complete checkpoint an earlier attempt left at `out`, if any: reuse it instead of quantizing."""
    if not is_complete(out):
        return None
    return Checkpoint(out, json.loads((out / CHECKPOINT_MARKER).read_text())["quant_seconds"], reused=True)


def quantize(model_path: str, samples: list[Conversation] | None, q: Any, *, dtype: str, max_seq_length: int,
             out: Path) -> Checkpoint:
    """Calibrate (unless `samples` is None: a data-free method) and quantize with `oneshot`, save a
    compressed-tensors checkpoint to `out`.

    The checkpoint is written to a temporary sibling, marked complete, then renamed, so a
    folder at `out` is always complete.
    """
    _route_logs()
    import torch
    from llmcompressor import oneshot
    from llmcompressor.core import create_session
    from transformers import AutoModelForCausalLM, AutoTokenizer

    started = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    dataset = tokenize(samples, tokenizer, max_seq_length) if samples is not None else None
    calibration = {} if dataset is None else dict(
        dataset=dataset, max_seq_length=max_seq_length, num_calibration_samples=len(dataset),
        shuffle_calibration_samples=False)  # keep qexp's nested selection order
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=getattr(torch, dtype))
    recipe = build_recipe(q)
    with atomic_folder(out, replace=True) as tmp:
        # A fresh session per call: the global one would keep this model alive for the next run.
        # Saving inside it lets llmcompressor write the applied recipe as recipe.yaml.
        with create_session(), _cpu_safe_awq(), _forget_traced_models():
            oneshot(model=model, processor=tokenizer, recipe=recipe, **calibration)
            model.save_pretrained(tmp, save_compressed=True)
        tokenizer.save_pretrained(tmp)
        seconds = time.perf_counter() - started
        (tmp / CHECKPOINT_MARKER).write_text(json.dumps({"quant_seconds": seconds, "samples": len(dataset or [])}))
    return Checkpoint(out, seconds, reused=False)
