"""Every wrong value is refused before any model is loaded, with key, value and fix."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from omegaconf import open_dict

from qexp.spec import prepare
from qexp.errors import ConfigError, DataError
from qexp.fixtures import FIXTURES_DIR
from tests.conftest import compose_config


def _error(*overrides: str, edit=None) -> str:
    """The message of the ConfigError that composing (types, keys) or preparing (everything else) raises."""
    with pytest.raises(ConfigError) as info:
        cfg = compose_config("model=tiny", "eval=fixtures", *overrides)
        if edit:
            with open_dict(cfg):
                edit(cfg)
        prepare(cfg)
    return str(info.value)


def _same(shown: str, given: str) -> bool:
    if given.startswith("["):  # a list: the message may name only its offending items
        return all(item.strip(" '\"") in given for item in shown.strip("[]").split(","))
    try:
        return float(shown) == float(given)  # 2 is shown as 2.0 once typed as a float
    except ValueError:
        return shown == given


@pytest.mark.parametrize("overrides,key", [
    (["calib.n=0"], "calib.n"),
    (["calib.n=-5"], "calib.n"),
    (["calib.n=abc"], "calib.n"),
    (["calib.n=1.5"], "calib.n"),
    (["calib.n=100000000"], "calib.n"),
    (["calib.seed=-1"], "calib.seed"),
    (["calib.max_seq_length=0"], "calib.max_seq_length"),
    (["calib.source=ftp"], "calib.source"),
    (["calib.source=file"], "calib.path"),
    (["calib.source=file", "calib.path=/nonexistent/sharegpt.json"], "calib.path"),
    (["quant.group_size=96"], "quant.group_size"),
    (["quant.group_size=0"], "quant.group_size"),
    (["quant.scheme=W9A99"], "quant.scheme"),
    (["quant.dampening_frac=2"], "quant.dampening_frac"),
    (["quant.block_size=zero"], "quant.block_size"),
    (["quant=awq", "quant.duo_scaling=sometimes"], "quant.duo_scaling"),
    (["eval.limit=-1"], "eval.limit"),
    (["eval.limit=0"], "eval.limit"),
    (["eval.num_fewshot=-2"], "eval.num_fewshot"),
    (["eval.batch_size=0"], "eval.batch_size"),
    (["eval.tasks=[arc_easy,not_a_task]"], "eval.tasks"),
    (["eval.tasks=[]"], "eval.tasks"),
    (["eval.data_dir=/nonexistent/mirrors"], "eval.data_dir"),
    (["model.path=/nonexistent/model"], "model.path"),
    (["model.path=qexp:no-such-model"], "model.path"),
    (["model.path=Qwen/Qwen3-4B"], "model.path"),  # HF_HUB_OFFLINE=1 and not cached
    (["model.dtype=float8"], "model.dtype"),
    (["device=tpu"], "device"),
    (["seed=-3"], "seed"),
    (["force=maybe"], "force"),
    (["tracking.log_checkpoint=perhaps"], "tracking.log_checkpoint"),
    (["tracking.uri=./mlruns"], "tracking.uri"),
    (["tracking.uri=ftp://host/store"], "tracking.uri"),
    (["tracking.experiment="], "tracking.experiment"),
    (["tracking.heartbeat_seconds=0"], "tracking.heartbeat_seconds"),
    (["tracking.stale_after_seconds=soon"], "tracking.stale_after_seconds"),
    (["tracking.outage_seconds=-1"], "tracking.outage_seconds"),
    (["tracking.outage_seconds=290"], "tracking.outage_seconds"),  # + a 30 s heartbeat >= 300 s: looks dead
    (["eval.tasks=arc_easy"], "eval.tasks"),
    (["eval.limit=many"], "eval.limit"),
    (["eval.num_fewshot=1.5"], "eval.num_fewshot"),
    (["quant.targets=[]"], "quant.targets"),
    (["quant.ignore=lm_head"], "quant.ignore"),
    (["quant.group_size=big"], "quant.group_size"),
    (["quant=awq", "quant.n_grid=0"], "quant.n_grid"),
    (["quant=awq", "quant.offload_device=disk"], "quant.offload_device"),
    (["device=cuda:x"], "device"),
    (["device=cuda:0"], "device"),  # no GPU on a CPU machine
    (["quant=awq", "quant.scheme=null"], "quant.scheme"),
    (["model.name="], "model.name"),
    (["calib.n=null"], "calib.n"),
    (["quant=rtn", "quant.group_size=96"], "quant.group_size"),
    (["quant=autoround", "quant.group_size=96"], "quant.group_size"),
    (["quant=autoround", "quant.iters=0"], "quant.iters"),
    (["quant=autoround", "quant.lr=-0.1"], "quant.lr"),
    (["quant=autoround", "quant.batch_size=0"], "quant.batch_size"),
    (["quant=gptq", "quant.actorder=sometimes"], "quant.actorder"),
    (["quant=w8a8", "quant.actorder=group"], "quant.actorder"),
    (["quant=w8a8", "quant.smoothing_strength=1.5"], "quant.smoothing_strength"),
    (["quant=w8a8", "quant.group_size=128"], "quant.group_size"),
    (["quant=fp8", "quant.group_size=64"], "quant.group_size"),
    (["quant=rtn", "calib.n=-1"], "calib.n"),
    (["quant=fp8", "+quant.iters=3"], "quant.iters"),
    (["eval.order=random"], "eval.order"),
    (["eval.sequential.looks=-1"], "eval.sequential.looks"),
    (["eval.sequential.looks=many"], "eval.sequential.looks"),
    (["eval.sequential.looks=4"], "eval.order"),  # the first documents are not a random sample
    (["eval.order=shuffled", "eval.sequential.looks=4", "eval.limit=null"], "eval.limit"),
    (["eval.order=shuffled", "eval.sequential.looks=100", "eval.limit=8"], "eval.sequential.looks"),
    (["eval.order=shuffled", "eval.sequential.looks=4", "eval.sequential.margin=0"], "eval.sequential.margin"),
    (["eval.order=shuffled", "eval.sequential.looks=4", "eval.sequential.comparisons=0"], "eval.sequential.comparisons"),
    (["eval.sequential.per_task=true"], "eval.sequential.per_task"),  # no looks: nothing to decide per task
    (["eval.sequential.futility=1"], "eval.sequential.futility"),  # refused even without looks
    (["eval.backend=tgi"], "eval.backend"),
    (["eval.vllm.w4a8=maybe"], "eval.vllm.w4a8"),
    (["eval.backend=vllm", "eval.order=shuffled", "eval.sequential.looks=4", "eval.limit=8"], "eval.backend"),
    (["eval.backend=vllm", "quant=fp8"], "eval.backend"),  # no fast FP8 kernel on this CPU: vLLM never finishes
    (["eval.backend=vllm", "quant=rtn", "eval.vllm.w4a8=true", "eval.dtype=float32"], "eval.vllm.w4a8"),
    (["eval.backend=vllm", "quant=rtn", "eval.vllm.enforce_eager=true"], "eval.vllm.enforce_eager"),  # SIGILL
])
def test_bad_value_names_key_value_and_fix(overrides, key):
    message = _error(*overrides)
    assert len(message.splitlines()) == 1
    named = re.search(rf"<{re.escape(key)}=(.*?)>(.*)", message)
    assert named, message
    given = {o.split("=", 1)[0].lstrip("+"): o.split("=", 1)[1] for o in overrides}
    if key in given:  # the value as the user gave it (null is None once composed)
        assert _same(named.group(1).strip("'\""), {"null": "None"}.get(given[key], given[key])), message
    fix = named.group(2).strip(" .")  # what follows the offending key and value: the fix
    assert len(fix.split()) >= 2 and message.rstrip().endswith("."), message


def test_unknown_quantizer():
    assert "<quant.name='int3'>" in _error(edit=lambda c: c.quant.__setattr__("name", "int3"))


def test_missing_model_path():
    assert "<model.path=None>" in _error("model.path=null")


def test_model_folder_without_weights(tmp_path):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text("{}")
    assert "no weight files" in _error(f"model.path={tmp_path / 'm'}")


def test_group_size_error_suggests_sizes_that_work():
    message = _error("quant.group_size=96")
    assert "<quant.group_size=96>" in message and "[16, 32, 64, 128]" in message and "q_proj: 128" in message


def test_baseline_needs_no_calibration_settings():
    spec = prepare(compose_config("model=tiny", "eval=fixtures", "quant=none", "calib.n=-1"))
    assert spec.is_baseline and spec.calib_path is None


def test_sharegpt_file_that_is_not_json(tmp_path):
    bad = tmp_path / "sharegpt.json"
    bad.write_text("<html>not json</html>")
    cfg = compose_config("model=tiny", "eval=fixtures", "calib.source=file", f"calib.path={bad}")
    with pytest.raises(DataError, match="not a JSON array <calib.path="):
        prepare(cfg)


@pytest.fixture
def mirror(tmp_path) -> Path:
    """A writable copy of the shipped fixture mirrors, to damage."""
    copy = tmp_path / "mirror"
    shutil.copytree(FIXTURES_DIR, copy)
    return copy


@pytest.mark.parametrize("damage,expected", [
    ("cais/mmlu/anatomy/dev.jsonl", "reads split 'dev' of config 'anatomy'"),
    ("allenai/ai2_arc/ARC-Easy/test.jsonl", "reads split 'test' of config 'ARC-Easy'"),
])
def test_mirror_missing_a_split(mirror, damage, expected):
    (mirror / damage).unlink()
    assert expected in _error(f"eval.data_dir={mirror}")


def test_mirror_missing_a_subject(mirror):
    readme = mirror / "cais/mmlu/README.md"
    text = readme.read_text()
    start = text.index("- config_name: virology")
    end = text.index("- config_name: world_religions")
    readme.write_text(text[:start] + text[end:])
    assert "needs config 'virology'" in _error(f"eval.data_dir={mirror}")


def test_an_8bit_scheme_refuses_a_group_size_and_says_why():
    message = _error("quant=fp8", "quant.group_size=64")
    assert "<quant.group_size=64>" in message and "FP8_DYNAMIC quantizes weights per channel" in message
    assert "quant.group_size=null" in message


def test_data_free_methods_accept_any_non_negative_calib_n_and_name_one_configuration():
    """eval=fixtures scores the held-out perplexity, so the ShareGPT file is read for every method: only the
    method being data-free keeps calib.n and calib.seed out of its identity, while GPTQ's moves with them."""
    specs = [prepare(compose_config("model=tiny", "eval=fixtures", "quant=rtn", f"calib.n={n}", f"calib.seed={seed}"))
             for n, seed in ((0, 0), (215, 0), (512, 3))]
    assert "sharegpt_heldout" in specs[0].cfg.eval.tasks and specs[0].plan.own  # the file is read
    assert {s.calib_n for s in specs} == {0} and "calib" not in specs[0].identity
    assert len({s.config_hash for s in specs}) == 1 and len({s.checkpoint for s in specs}) == 1
    gptq = [prepare(compose_config("model=tiny", "eval=fixtures", "quant=gptq", f"calib.n={n}")) for n in (8, 16)]
    assert gptq[0].config_hash != gptq[1].config_hash
    assert "uses no calibration data" in _error("quant=rtn", "calib.n=-1")


def test_with_no_hub_a_hub_model_is_refused_after_one_attempt_naming_the_offline_routes(monkeypatch):
    """No network: one connection attempt, not huggingface_hub's five retries with back-off."""
    import huggingface_hub
    from huggingface_hub import constants

    from qexp import models

    calls = []
    real = huggingface_hub.hf_hub_download

    def download(*args, **kwargs):
        calls.append(kwargs.get("local_files_only", False))
        return real(*args, **kwargs)

    for name in ("HF_HUB_OFFLINE", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")  # nothing listens: refused at once
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", download)
    models._hub_reachable.cache_clear()
    try:
        message = _error("model.path=SomeOrg/some-model")
    finally:
        models._hub_reachable.cache_clear()
    assert calls == [True]  # the local cache only; the hub itself was never asked
    assert "<model.path='SomeOrg/some-model'>" in message
    assert "model=smollm2" in message and "model=tiny" in message and "local checkpoint folder" in message
