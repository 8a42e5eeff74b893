"""The schema checks every YAML file and override at composition, in qexp's one-line error form."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from omegaconf import MISSING, OmegaConf, open_dict

from qexp.errors import ConfigError
from qexp.schema import CONF_DIR, CalibConfig, EvalConfig, ModelConfig, TrackingConfig, compose
from qexp.spec import prepare
from tests.conftest import compose_config


@pytest.fixture
def conf(tmp_path) -> Path:
    """A writable copy of conf/, to damage."""
    return Path(shutil.copytree(CONF_DIR, tmp_path / "conf"))


def _one_paragraph(message: str) -> str:
    assert len(message.splitlines()) == 1 and message.rstrip().endswith(".")
    return message


def _compose_error(*overrides: str, config_dir: Path | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        compose(overrides, config_dir=config_dir)
    return _one_paragraph(str(info.value))


def test_a_typo_in_a_model_preset_is_refused(conf):
    preset = conf / "model" / "tiny.yaml"
    preset.write_text(preset.read_text().replace("group_size: 128", "group_sise: 64"))
    message = _compose_error("model=tiny", config_dir=conf)
    assert "<model.group_sise=64>" in message and "conf/model/tiny.yaml" in message
    assert "'group_size'" in message  # the keys that exist, to spot the typo


def test_a_wrong_type_in_a_quant_preset_is_refused(conf):
    preset = conf / "quant" / "gptq.yaml"
    preset.write_text(preset.read_text().replace("block_size: 128", "block_size: big"))
    message = _compose_error("quant=gptq", config_dir=conf)
    assert "<quant.block_size='big'>" in message and "conf/quant/gptq.yaml" in message
    assert "an integer" in message


@pytest.mark.parametrize("override,expected", [
    ("calib.n=abc", "<calib.n='abc'>"),
    ("calib.nn=5", "<calib.nn="),
    ("quant=none", None),  # composes: quant=none only has `name`
    ("eval.limit=null", None),
    ("model.note=null", None),
])
def test_overrides_are_checked_by_type(override, expected):
    if expected is None:
        compose([override])
    else:
        assert expected in _compose_error(override)


def test_keys_a_schema_does_not_have_cannot_sneak_in():
    # `+key=value` adds a key past composition; prepare re-checks against the schema.
    cfg = compose_config("model=tiny", "eval=fixtures", "+calib.nn=5")
    with pytest.raises(ConfigError) as info:
        prepare(cfg)
    assert "<calib.nn=5>" in _one_paragraph(str(info.value))


def test_quant_none_refuses_gptq_keys():
    assert "<quant.block_size=" in _compose_error("quant=none", "quant.block_size=64")


def test_required_values_left_open_are_named():
    cfg = compose_config("model=tiny", "eval=fixtures")
    with open_dict(cfg):
        cfg.model.path = MISSING
    with pytest.raises(ConfigError) as info:
        prepare(cfg)
    assert "Missing required value: <model.path='???'>" in _one_paragraph(str(info.value))


@pytest.mark.parametrize("group,schema", [("model", ModelConfig), ("quant", None), ("calib", CalibConfig),
                                          ("eval", EvalConfig), ("tracking", TrackingConfig)])
def test_every_preset_composes_against_its_schema(group, schema):
    """Every YAML file of the group, found on disk (a new preset is covered without editing this test),
    composes and validates as its schema's type; a quant preset as its method's schema."""
    from qexp.schema import QUANT_SCHEMAS, validate

    options = sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))
    assert options
    for option in options:
        node = validate(compose_config(f"{group}={option}"))[group]
        expected = QUANT_SCHEMAS[node.name] if group == "quant" else schema
        assert OmegaConf.get_type(node) is expected, (group, option)


def test_help_lists_every_group_a_user_picks_from_and_no_schema():
    import subprocess
    import sys

    from qexp.schema import GROUPS

    groups = {p.name for p in CONF_DIR.iterdir() if p.is_dir()}
    assert {g.lstrip("+") for g in GROUPS} == groups  # a new group is described, or this fails
    shown = subprocess.run([sys.executable, "-m", "qexp", "--help"], capture_output=True, text=True, timeout=120)
    assert shown.returncode == 0, shown.stderr[-2000:]
    for group in groups:
        options = ", ".join(sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml")))
        assert f"options: {options}\n" in shown.stdout, group
    assert "schema" not in shown.stdout.split("== Settings")[0] and "base_" not in shown.stdout
    assert "quant:\n  name: gptq\n" in shown.stdout  # the settings of this command follow
