"""What the config hash covers, as the manual lists it (docs/contract.md): changing any input changes `config_hash`
(and `eval_hash` when it is an evaluation input); changing what it leaves out changes neither.
A hash that missed an input would make resume skip a changed configuration silently."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from qexp import identity
from qexp.fixtures import FIXTURES_DIR
from qexp.models import resolve_model
from qexp.spec import prepare
from tests.conftest import compose_config

BASE = ("model=tiny", "eval=fixtures", "quant=gptq", "calib.n=8")


def _hashes(*overrides: str) -> tuple[str, str]:
    spec = prepare(compose_config(*BASE, *overrides))
    return spec.config_hash, spec.eval_hash


@pytest.mark.parametrize("override,evaluation", [
    ("calib.n=16", False),
    ("calib.seed=1", False),
    ("calib.max_seq_length=32", False),
    ("quant=awq", False),
    ("quant.group_size=32", False),
    ("quant.dampening_frac=0.05", False),
    ("quant.block_size=64", False),
    ("quant.actorder=weight", False),
    ("quant.ignore=[lm_head,model.layers.0.mlp.down_proj]", False),
    ("model.dtype=bfloat16", False),  # what the model is quantized in: the checkpoint, not the evaluation
    ("eval.dtype=float32", True),  # (auto is bfloat16 on this machine's CPU; see test_devices)
    ("eval.tasks=[arc_easy]", True),
    ("eval.limit=5", True),
    ("seed=1", True),
])
def test_each_input_changes_the_config_hash(override, evaluation):
    base_config, base_eval = _hashes()
    config, evaluated = _hashes(override)
    assert config != base_config
    assert (evaluated != base_eval) == evaluation


def test_the_baseline_is_only_evaluated_so_model_dtype_leaves_its_hashes_alone():
    """model.dtype is what a model is loaded in to quantize: a quantized run's sweep with
    model.dtype=bfloat16 must find (and reuse) the baseline evaluated without it."""
    plain = prepare(compose_config("model=tiny", "eval=fixtures", "quant=none"))
    other = prepare(compose_config("model=tiny", "eval=fixtures", "quant=none", "model.dtype=bfloat16"))
    assert (plain.config_hash, plain.eval_hash) == (other.config_hash, other.eval_hash)


@pytest.mark.parametrize("override", [
    "device=cpu", "eval.batch_size=2", "verbose=true", "force=true", "tracking.experiment=elsewhere",
    "tracking.heartbeat_seconds=5", "paths.checkpoint_dir=/tmp/elsewhere", "paths.output_dir=/tmp/elsewhere/out",
])
def test_what_the_hash_leaves_out_changes_neither_hash(override):
    assert _hashes(override) == _hashes()


def _sharegpt(path: Path, words: str) -> Path:
    path.write_text(json.dumps([{"id": f"c{i}", "conversations": [
        {"from": "human", "value": f"question {i}: {words}"}, {"from": "gpt", "value": f"answer {i}: {words}"}]}
        for i in range(1200)]))  # qexp reserves held-out conversations beyond the first 1,000
    return path


def test_the_calibration_file_content_changes_the_hash_even_at_the_same_size(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = _sharegpt(tmp_path / "a" / "sharegpt.json", "red")
    second = _sharegpt(tmp_path / "b" / "sharegpt.json", "tan")  # same name, same size, other text
    assert first.stat().st_size == second.stat().st_size
    hashes = [_hashes("calib.source=file", f"calib.path={path}") for path in (first, second)]
    assert hashes[0][0] != hashes[1][0]
    assert hashes[0][1] != hashes[1][1]  # the held-out perplexity's conversations come from the same file


def test_weights_saved_over_a_local_model_change_the_hash(tmp_path, cache_dir):
    model = Path(shutil.copytree(resolve_model("qexp:tiny-qwen3", cache_dir), tmp_path / "model"))
    before = _hashes(f"model.path={model}")
    weights = next(model.glob("*.safetensors"))
    data = bytearray(weights.read_bytes())
    data[-8:] = bytes(8)  # the last tensor's last bytes: a fine-tune saved over, same names and sizes
    weights.write_bytes(bytes(data))
    after = _hashes(f"model.path={model}")
    assert after[0] != before[0] and after[1] == before[1]


def test_a_mirror_data_file_changes_both_hashes(tmp_path):
    mirror = Path(shutil.copytree(FIXTURES_DIR, tmp_path / "mirror"))
    before = _hashes(f"eval.data_dir={mirror}")
    data = next(p for p in sorted(mirror.rglob("*.jsonl")) if "arc" in str(p).lower())
    lines = data.read_text().splitlines()
    data.write_text("\n".join(lines[1:] + lines[:1]) + "\n")  # the same rows, another order
    after = _hashes(f"eval.data_dir={mirror}")
    assert after[0] != before[0] and after[1] != before[1]


@pytest.mark.parametrize("library,evaluation", [
    ("llmcompressor", False), ("compressed-tensors", False), ("lm_eval", True), ("transformers", True),
    ("torch", True),
])
def test_a_library_version_changes_the_hash(library, evaluation, monkeypatch):
    before = _hashes()
    real = identity.metadata.version
    monkeypatch.setattr(identity.metadata, "version", lambda name: "999.0" if name == library else real(name))
    after = _hashes()
    assert after[0] != before[0] and (after[1] != before[1]) == evaluation


def test_same_inputs_give_the_same_hash_in_another_folder(tmp_path, monkeypatch):
    here = _hashes()  # run in tmp_path: outputs and store under it
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    assert compose_config(*BASE).paths.output_dir != compose_config(*BASE, root=tmp_path).paths.output_dir
    assert _hashes() == here
