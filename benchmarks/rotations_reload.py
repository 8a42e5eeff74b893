"""Do rotated checkpoints evaluate through transformers? QuIP and SpinQuant, reloaded on the tiny model.

    python benchmarks/rotations_reload.py

lm-eval's `hf` backend loads a checkpoint with `AutoModelForCausalLM.from_pretrained`. For each
recipe (W4A16 round-to-nearest after a rotation, llmcompressor 0.14), this quantizes qexp's tiny
model in memory, saves it compressed, reloads it the way lm-eval does, and prints the largest
difference between the reloaded model's logits and the in-memory quantized model's on one
sequence. 0 means the checkpoint evaluates as quantized; anything else means the evaluation
would score another model. docs/methods.md includes this output (docs/results/rotations_reload.md).
"""

from __future__ import annotations

import tempfile

import torch

from record import tee  # docs/results/: this script's output


def recipes() -> dict:
    from llmcompressor.modifiers.quantization import QuantizationModifier
    from llmcompressor.modifiers.transform import QuIPModifier, SpinQuantModifier

    def w4a16():
        return QuantizationModifier(scheme="W4A16", targets=["Linear"], ignore=["lm_head"])

    return {
        "RTN (no rotation, the control)": lambda: [w4a16()],
        "SpinQuant R1+R2 (fused into the weights)": lambda: [
            SpinQuantModifier(rotations=["R1", "R2"], transform_type="random-hadamard"), w4a16()],
        "SpinQuant R1+R2+R4 (R4 online)": lambda: [
            SpinQuantModifier(rotations=["R1", "R2", "R4"], transform_type="random-hadamard"), w4a16()],
        "QuIP (online input and output transforms)": lambda: [
            QuIPModifier(transform_type="random-hadamard"), w4a16()],
    }


def main() -> None:
    from llmcompressor import oneshot
    from llmcompressor.core import create_session
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from qexp.files import default_cache_dir
    from qexp.models import resolve_model

    path = resolve_model("qexp:tiny-qwen3", default_cache_dir())
    tokenizer = AutoTokenizer.from_pretrained(path)
    ids = torch.tensor([[5, 17, 99, 3, 42, 7]])
    for name, recipe in recipes().items():
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
        with tempfile.TemporaryDirectory() as out, create_session():
            oneshot(model=model, processor=tokenizer, recipe=recipe())
            with torch.no_grad():
                expected = model(ids).logits
            model.save_pretrained(out, save_compressed=True)
            reloaded = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
            with torch.no_grad():
                got = reloaded(ids).logits
        print(f"{name}: max |logit difference| after reloading {float((got - expected).abs().max()):.3g} "
              f"(mean |logit| {float(expected.abs().mean()):.3g})", flush=True)


if __name__ == "__main__":
    with tee("rotations_reload"):  # docs/results/rotations_reload.md
        main()
