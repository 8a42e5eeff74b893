from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from qexp.fixtures import FIXTURES_DIR
from qexp.identity import config_hash
from qexp.schema import CONF_DIR
from qexp.spec import baseline_config
from tests.conftest import compose_config


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
    ("rtn", {"name", "scheme", "group_size", "targets", "ignore"}),
    ("fp8", {"name", "scheme", "group_size", "targets", "ignore"}),
    ("gptq", {"name", "scheme", "group_size", "targets", "ignore", "block_size", "dampening_frac", "actorder"}),
    ("w8a8", {"name", "scheme", "group_size", "targets", "ignore", "block_size", "dampening_frac", "actorder",
              "smoothing_strength"}),
    ("awq", {"name", "scheme", "group_size", "targets", "ignore", "duo_scaling", "n_grid", "offload_device"}),
    ("autoround", {"name", "scheme", "group_size", "targets", "ignore", "iters", "lr", "batch_size"}),
])
def test_quant_presets(quant, keys):
    cfg = compose_config(f"quant={quant}")
    assert set(cfg.quant) == keys


def test_awq_is_asymmetric_gptq_symmetric():
    assert compose_config("quant=awq").quant.scheme == "W4A16_ASYM"
    assert compose_config("quant=gptq").quant.scheme == "W4A16"


def test_4bit_methods_share_the_model_group_size_and_8bit_ones_have_none():
    for quant in ("rtn", "gptq", "awq", "autoround"):
        cfg = compose_config(f"quant={quant}", "model=smollm2")
        assert (cfg.quant.group_size, list(cfg.quant.ignore)) == (64, ["lm_head"]), quant
    assert compose_config("quant=rtn").quant.scheme == compose_config("quant=gptq").quant.scheme == "W4A16"
    assert [compose_config(f"quant={q}").quant.group_size for q in ("w8a8", "fp8")] == [None, None]


def test_eval_fixtures_points_at_shipped_data():
    cfg = compose_config("eval=fixtures")
    assert cfg.eval.data_dir == str(FIXTURES_DIR)
    assert list(cfg.eval.tasks) == ["arc_challenge", "arc_easy", "hellaswag", "mmlu", "sharegpt_heldout"]


def test_tracking_default_is_sqlite_under_mlruns_unless_mlflow_says_otherwise(tmp_path, monkeypatch):
    from qexp.schema import compose, tracking_defaults

    assert compose().tracking.uri == f"sqlite:///{tmp_path}/mlruns/mlflow.db"  # conftest chdirs to tmp_path
    assert tracking_defaults().experiment == "qexp"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert compose().tracking.uri == "http://127.0.0.1:5000"


@pytest.mark.parametrize("experiment,model,data,quant", [
    ("offline", "tiny-qwen3", str(FIXTURES_DIR), "gptq,awq"),
    ("study", "qwen3-4b", None, "gptq,awq"),
    ("smollm2_study", "smollm2-135m", "qexp:packaged", "gptq,awq"),
    ("smollm2_methods", "smollm2-135m", "qexp:packaged", "rtn,gptq,awq,autoround_cpu"),
])
def test_experiment_presets_compose(experiment, model, data, quant):
    cfg = compose_config(f"+experiment={experiment}")
    assert (cfg.model.name, cfg.eval.data_dir) == (model, data)
    sweep = OmegaConf.load(CONF_DIR / "experiment" / f"{experiment}.yaml").hydra.sweeper.params
    assert sweep.quant == quant


def test_baseline_config_drops_quantization_only():
    cfg = compose_config("model=tiny", "quant=awq", "calib.n=7")
    base = baseline_config(cfg)
    assert base.quant == OmegaConf.create({"name": "none"})
    assert base.model == cfg.model and base.eval == cfg.eval


def test_hash_is_order_insensitive_and_value_sensitive():
    a = config_hash({"x": 1, "y": {"a": 2, "b": 3}})
    assert a == config_hash({"y": {"b": 3, "a": 2}, "x": 1})
    assert a != config_hash({"x": 1, "y": {"a": 2, "b": 4}})
