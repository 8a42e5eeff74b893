"""The GPU benchmark quantizes with the study's settings and projects sensibly (no model is built here;
tests/e2e/test_gpu_study.py runs it)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from tests.conftest import compose_config

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("gpu_study", ROOT / "benchmarks" / "gpu_study.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("method", ["gptq", "awq"])
def test_the_benchmark_uses_the_study_presets(bench, method):
    composed = OmegaConf.to_container(compose_config("model=qwen3_4b", f"quant={method}").quant, resolve=True)
    if method == "awq":
        composed["offload_device"] = "cpu"  # what `auto` becomes on a GPU
    assert bench.QUANT[method] == composed
    assert compose_config("model=qwen3_4b").calib.max_seq_length == 2048


def test_extrapolation_is_linear_in_samples_and_never_below_what_was_measured(bench):
    assert bench.extrapolate([(64, 100.0), (128, 180.0)], 512) == pytest.approx(660.0)
    assert bench.extrapolate([(64, 900.0), (128, 880.0)], 512) == 900.0  # did not grow with n
    assert bench.extrapolate([(64, 100.0)], 512) is None


def test_the_model_has_qwen3_4b_shapes(bench):
    shapes = bench.QWEN3_4B
    assert (shapes["hidden_size"], shapes["num_hidden_layers"], shapes["intermediate_size"]) == (2560, 36, 9728)
    assert (shapes["num_attention_heads"], shapes["num_key_value_heads"], shapes["vocab_size"]) == (32, 8, 151936)
    widths = {shapes["hidden_size"], shapes["intermediate_size"], shapes["num_attention_heads"] * shapes["head_dim"]}
    assert all(width % bench.QUANT["gptq"]["group_size"] == 0 for width in widths)
