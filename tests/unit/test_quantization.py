from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from llmcompressor.modifiers.gptq import GPTQModifier
from llmcompressor.modifiers.quantization import QuantizationModifier
from llmcompressor.modifiers.transform.awq import AWQModifier

from llmcompressor.recipe import Recipe

from qexp.errors import ConfigError
from qexp.quantization import build_recipe, check_scheme, quantized_widths, widths_to_check
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
    assert quantized_widths(widths, list(q.ignore)) == {"model.layers.0.mlp.down_proj": 256}


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


def test_the_table_of_schemes_is_compressed_tensors_own_and_cached_per_version(tmp_path):
    from compressed_tensors.quantization.quant_scheme import PRESET_SCHEMES

    check_scheme("W4A16", 128, tmp_path)
    (cached,) = (tmp_path / "library").glob("compressed-tensors-*-schemes.json")
    table = json.loads(cached.read_text())
    assert set(table) == set(PRESET_SCHEMES) and table["W4A16"] == "group" and table["FP8_DYNAMIC"] == "channel"
    del table["W4A16"]
    cached.write_text(json.dumps(table))  # the cached table is what the next check reads
    with pytest.raises(ConfigError, match="Unknown compressed-tensors scheme: <quant.scheme='W4A16'>"):
        check_scheme("W4A16", 128, tmp_path)
    cached.write_text("{not json")  # a damaged cache is rebuilt, not trusted
    check_scheme("W4A16", 128, tmp_path)
    assert json.loads(cached.read_text())["W4A16"] == "group"


def test_the_widths_to_check_are_cached_per_model_config_and_ignore_list(tmp_path):
    config = tmp_path / "config.json"
    config.write_text('{"hidden_size": 256}')
    calls = []

    def widths():
        calls.append(1)
        return {"model.layers.0.mlp.down_proj": 256, "lm_head": 128}

    assert widths_to_check(config, ["lm_head"], tmp_path, widths) == {"model.layers.0.mlp.down_proj": 256}
    assert widths_to_check(config, ["lm_head"], tmp_path, widths) == {"model.layers.0.mlp.down_proj": 256}
    assert len(calls) == 1
    assert widths_to_check(config, [], tmp_path, widths) == widths()  # another ignore list: computed again
    config.write_text('{"hidden_size": 512}')  # another model: computed again
    widths_to_check(config, ["lm_head"], tmp_path, widths)
    assert len(calls) == 4


def test_preparing_a_job_again_imports_neither_transformers_nor_compressed_tensors(cache_dir, tmp_path):
    """What makes a sweep with nothing left to do say so in seconds: the checks that need the
    libraries read what an earlier preparation cached."""
    script = ("import sys\n"
              "from qexp.spec import prepare\n"
              "from tests.conftest import compose_config\n"
              "prepare(compose_config('model=tiny', 'eval=fixtures', 'quant=gptq', 'calib.n=8'))\n"
              "print(sorted({m.split('.')[0] for m in sys.modules} & {'transformers', 'compressed_tensors'}))\n")
    env = {**os.environ, "QEXP_CACHE_DIR": str(cache_dir), "PYTHONPATH": str(Path(__file__).parents[2])}
    runs = [subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=tmp_path,
                           timeout=300) for _ in range(2)]
    assert all(r.returncode == 0 for r in runs), runs[-1].stderr[-2000:]
    assert runs[1].stdout.strip() == "[]", runs[1].stdout
