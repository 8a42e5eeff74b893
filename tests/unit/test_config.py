from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from qexp.config import baseline_config, flatten, hash_identity
from qexp.fixtures import FIXTURES_DIR
from tests.conftest import CONF_DIR, compose_config


@pytest.mark.parametrize("model,path,dtype,group_size", [("qwen3_4b", "Qwen/Qwen3-4B", "bfloat16", 128),
                                                         ("tiny", "qexp:tiny-qwen3", "float32", 128),
                                                         ("smollm2", "qexp:smollm2", "float32", 64)])
def test_model_presets(model, path, dtype, group_size):
    cfg = compose_config(f"model={model}")
    assert (cfg.model.path, cfg.model.dtype) == (path, dtype)
    assert cfg.calib.max_seq_length == cfg.model.max_seq_length
    assert cfg.quant.group_size == group_size == compose_config(f"model={model}", "quant=awq").quant.group_size


def test_smollm2_says_its_baseline_was_quantized_before():
    assert "GGUF Q4_1" in compose_config("model=smollm2").model.note


def test_default_study_settings():
    cfg = compose_config()
    assert cfg.quant.name == "gptq" and cfg.quant.scheme == "W4A16" and cfg.quant.group_size == 128
    assert list(cfg.quant.ignore) == ["lm_head"]
    assert list(cfg.eval.tasks) == ["arc_challenge", "arc_easy", "hellaswag", "mmlu"]
    assert (cfg.eval.num_fewshot, cfg.eval.limit, cfg.eval.data_dir) == (0, 50, None)
    assert cfg.calib.source == "package" and cfg.calib.n == 512
    assert cfg.tracking.log_checkpoint is True


@pytest.mark.parametrize("quant,keys", [
    ("none", {"name"}),
    ("gptq", {"name", "scheme", "group_size", "targets", "ignore", "block_size", "dampening_frac"}),
    ("awq", {"name", "scheme", "group_size", "targets", "ignore", "duo_scaling", "n_grid"}),
])
def test_quant_presets(quant, keys):
    cfg = compose_config(f"quant={quant}")
    assert set(cfg.quant) == keys


def test_awq_is_asymmetric_gptq_symmetric():
    assert compose_config("quant=awq").quant.scheme == "W4A16_ASYM"
    assert compose_config("quant=gptq").quant.scheme == "W4A16"


def test_eval_fixtures_points_at_shipped_data():
    cfg = compose_config("eval=fixtures")
    assert cfg.eval.data_dir == str(FIXTURES_DIR)
    assert list(cfg.eval.tasks) == ["arc_challenge", "arc_easy", "hellaswag", "mmlu", "sharegpt_heldout"]


def test_tracking_default_is_sqlite_under_mlruns():
    text = (CONF_DIR / "tracking" / "mlflow.yaml").read_text()
    assert "sqlite:///${hydra:runtime.cwd}/mlruns/mlflow.db" in text


@pytest.mark.parametrize("experiment", ["offline", "study"])
def test_experiment_presets_compose(experiment):
    cfg = compose_config(f"+experiment={experiment}")
    assert cfg.model.name in ("tiny-qwen3", "qwen3-4b")


def test_baseline_config_drops_quantization_only():
    cfg = compose_config("model=tiny", "quant=awq", "calib.n=7")
    base = baseline_config(cfg)
    assert base.quant == OmegaConf.create({"name": "none"})
    assert base.model == cfg.model and base.eval == cfg.eval


def test_flatten_gives_dotted_string_params():
    flat = flatten({"quant": {"name": "gptq", "ignore": ["lm_head"]}, "eval": {"limit": None}})
    assert flat == {"quant.name": "gptq", "quant.ignore": '["lm_head"]', "eval.limit": "None"}


def test_hash_is_order_insensitive_and_value_sensitive():
    a = hash_identity({"x": 1, "y": {"a": 2, "b": 3}})
    assert a == hash_identity({"y": {"b": 3, "a": 2}, "x": 1})
    assert a != hash_identity({"x": 1, "y": {"a": 2, "b": 4}})
