from __future__ import annotations

from llmcompressor.modifiers.gptq import GPTQModifier
from llmcompressor.modifiers.quantization import QuantizationModifier
from llmcompressor.modifiers.transform.awq import AWQModifier

from llmcompressor.recipe import Recipe

from qexp.quantization import build_recipe, quantized_widths
from tests.conftest import compose_config


def test_gptq_recipe_is_symmetric_w4_with_configured_group_size():
    (modifier,) = build_recipe(compose_config("quant=gptq", "quant.group_size=64", "quant.block_size=64").quant)
    assert isinstance(modifier, GPTQModifier)
    weights = modifier.config_groups["group_0"].weights
    assert (weights.num_bits, weights.symmetric, weights.group_size) == (4, True, 64)
    assert modifier.ignore == ["lm_head"] and modifier.block_size == 64


def test_awq_recipe_pairs_smoothing_with_asymmetric_quantization():
    smooth, quant = build_recipe(compose_config("quant=awq", "quant.duo_scaling=both",
                                                 "quant.offload_device=none").quant)
    assert isinstance(smooth, AWQModifier) and smooth.duo_scaling == "both"
    assert isinstance(quant, QuantizationModifier)
    weights = quant.config_groups["group_0"].weights
    assert (weights.num_bits, weights.symmetric, weights.group_size) == (4, False, 128)
    assert "AWQModifier" in Recipe.from_modifiers([smooth, quant]).yaml()


def test_quantized_widths_leave_out_ignored_layers():
    widths = {"model.layers.0.mlp.down_proj": 256, "lm_head": 128, "model.layers.0.self_attn.q_proj": 128}
    q = compose_config("quant=gptq", "quant.ignore=[lm_head,re:.*q_proj]").quant
    assert quantized_widths(widths, q) == {"model.layers.0.mlp.down_proj": 256}


def test_awq_offload_device_reaches_the_modifier():
    q = compose_config("quant=awq", "quant.offload_device=cpu").quant
    smooth, _ = build_recipe(q)
    assert str(smooth.offload_device) == "cpu"
    smooth, _ = build_recipe(compose_config("quant=awq", "quant.offload_device=none").quant)
    assert smooth.offload_device is None  # cached on the calibrating device
