"""llmcompressor behind two functions: `build_recipe` (config -> modifiers) and `quantize`.

GPTQ is symmetric (`W4A16`), AWQ asymmetric (`W4A16_ASYM`) with the 0.14 API, where AWQ
is a smoothing transform paired with a plain QuantizationModifier.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any, Iterator

__all__ = ["METHODS", "CHECKPOINT_MARKER", "build_recipe", "recipe_yaml", "quantize", "quantized_widths", "is_complete"]


METHODS = ("none", "gptq", "awq")


def _scheme(q: Any):
    from compressed_tensors.quantization import QuantizationScheme
    from compressed_tensors.quantization.quant_scheme import preset_name_to_scheme

    scheme = preset_name_to_scheme(q.scheme, list(q.targets)).model_dump()
    if q.group_size is not None and scheme.get("weights") and scheme["weights"].get("strategy") == "group":
        scheme["weights"]["group_size"] = int(q.group_size)
    return QuantizationScheme.model_validate(scheme)


def build_recipe(q: Any) -> list:
    """The llmcompressor modifiers for a `quant` config node (gptq or awq)."""
    config_groups = {"group_0": _scheme(q)}
    ignore = list(q.ignore)
    if q.name == "gptq":
        from llmcompressor.modifiers.gptq import GPTQModifier

        return [GPTQModifier(config_groups=config_groups, ignore=ignore,
                             block_size=int(q.block_size), dampening_frac=float(q.dampening_frac))]
    if q.name == "awq":
        from llmcompressor.modifiers.quantization import QuantizationModifier
        from llmcompressor.modifiers.transform.awq import AWQModifier

        return [AWQModifier(duo_scaling=q.duo_scaling, n_grid=int(q.n_grid)),
                QuantizationModifier(config_groups=config_groups, ignore=ignore)]
    raise ValueError(f"no recipe for quant.name={q.name!r}")


def recipe_yaml(modifiers: list) -> str:
    from llmcompressor.recipe import Recipe

    return Recipe.from_modifiers(modifiers).yaml()


def quantized_widths(widths: dict[str, int], q: Any) -> dict[str, int]:
    """The Linear layers the recipe will quantize: all but those `quant.ignore` names."""
    from compressed_tensors.utils.match import match_name

    return {name: w for name, w in widths.items() if not any(match_name(name, t) for t in q.ignore)}


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


CHECKPOINT_MARKER = "qexp_checkpoint.json"


def is_complete(checkpoint: Path) -> bool:
    """A checkpoint folder is complete once it holds the marker written just before its rename."""
    return (checkpoint / CHECKPOINT_MARKER).is_file()


def quantize(model_path: str, dataset, q: Any, *, dtype: str, max_seq_length: int, out: Path) -> float:
    """Calibrate and quantize with `oneshot`, save a compressed-tensors checkpoint to `out`.

    The checkpoint is written to a temporary sibling, marked complete, then renamed, so a
    folder at `out` is always complete. Returns the wall time in seconds.
    """
    import torch
    from llmcompressor import oneshot
    from llmcompressor.core import create_session
    from transformers import AutoModelForCausalLM, AutoTokenizer

    started = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=getattr(torch, dtype))
    recipe = build_recipe(q)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.partial-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    # A fresh session per call: the global one would keep this model alive for the next run.
    # Saving inside it lets llmcompressor write the applied recipe as recipe.yaml.
    with create_session(), _cpu_safe_awq():
        oneshot(
            model=model,
            processor=tokenizer,
            dataset=dataset,
            recipe=recipe,
            max_seq_length=max_seq_length,
            num_calibration_samples=len(dataset),
            shuffle_calibration_samples=False,  # keep qexp's nested selection order
        )
        model.save_pretrained(tmp, save_compressed=True)
    tokenizer.save_pretrained(tmp)
    seconds = time.perf_counter() - started
    (tmp / CHECKPOINT_MARKER).write_text(json.dumps({"quant_seconds": seconds, "samples": len(dataset)}))
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    return seconds
