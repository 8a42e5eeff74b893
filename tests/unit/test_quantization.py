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


def test_rtn_recipe_is_the_gptq_scheme_with_no_calibration():
    (modifier,) = build_recipe(compose_config("quant=rtn", "quant.group_size=64").quant)
    assert type(modifier) is QuantizationModifier
    weights = modifier.config_groups["group_0"].weights
    assert (weights.num_bits, weights.symmetric, weights.group_size, weights.strategy) == (4, True, 64, "group")
    assert modifier.ignore == ["lm_head"] and modifier.config_groups["group_0"].input_activations is None


def test_gptq_variant_keys_reach_the_modifier():
    q = compose_config("quant=gptq", "quant.actorder=weight", "quant.dampening_frac=0.05",
                       "quant.block_size=32").quant
    (modifier,) = build_recipe(q)
    assert (str(modifier.actorder), modifier.dampening_frac, modifier.block_size) == ("weight", 0.05, 32)
    (modifier,) = build_recipe(compose_config("quant=gptq", "quant.actorder=null").quant)
    assert modifier.actorder is None


def test_w8a8_recipe_smooths_then_gptq_quantizes_int8_weights_and_token_activations():
    from llmcompressor.modifiers.smoothquant import SmoothQuantModifier

    smooth, gptq = build_recipe(compose_config("quant=w8a8", "quant.smoothing_strength=0.5").quant)
    assert isinstance(smooth, SmoothQuantModifier) and smooth.smoothing_strength == 0.5
    assert isinstance(gptq, GPTQModifier)
    scheme = gptq.config_groups["group_0"]
    assert (scheme.weights.num_bits, scheme.weights.type, scheme.weights.strategy) == (8, "int", "channel")
    assert (scheme.input_activations.num_bits, scheme.input_activations.strategy,
            scheme.input_activations.dynamic) == (8, "token", True)


def test_fp8_recipe_is_data_free_float8_weights_and_dynamic_activations():
    (modifier,) = build_recipe(compose_config("quant=fp8").quant)
    assert type(modifier) is QuantizationModifier
    scheme = modifier.config_groups["group_0"]
    assert (scheme.weights.num_bits, scheme.weights.type, scheme.weights.strategy) == (8, "float", "channel")
    assert (scheme.input_activations.type, scheme.input_activations.dynamic) == ("float", True)


def test_autoround_recipe_carries_its_keys():
    from llmcompressor.modifiers.autoround import AutoRoundModifier

    q = compose_config("quant=autoround", "quant.iters=7", "quant.lr=0.01", "quant.batch_size=4",
                       "quant.group_size=64").quant
    (modifier,) = build_recipe(q)
    assert isinstance(modifier, AutoRoundModifier)
    assert (modifier.iters, modifier.lr, modifier.batch_size, modifier.enable_torch_compile) == (7, 0.01, 4, False)
    weights = modifier.config_groups["group_0"].weights
    assert (weights.num_bits, weights.symmetric, weights.group_size) == (4, True, 64)
    assert compose_config("quant=autoround_cpu").quant.iters == 10  # the CPU preset: AutoRound, 10 steps
