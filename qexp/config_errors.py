"""Hydra's and OmegaConf's composition errors said in qexp's words: what failed, `<key=value>`, and
the fix, on one line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from .errors import ConfigError, config_error
from .files import CONF_DIR

__all__ = ["composition_error"]


def _field_type(node: Any, key: str) -> str:
    """The schema's type for `key` of `node`, in words: `an integer`, `a list of strings or null`."""
    import typing

    cls = OmegaConf.get_type(node) if isinstance(node, DictConfig) else None
    hint = typing.get_type_hints(cls).get(key) if cls and hasattr(cls, "__dataclass_fields__") else None
    args = typing.get_args(hint)
    optional = type(None) in args
    base = next((a for a in args if a is not type(None)), hint) if optional else hint
    words = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}.get(base)
    if words is None and typing.get_origin(base) is list:
        words = "a list, e.g. [a,b]"
    return (words or "a value of the schema's type") + (" or null" if optional else "")


def _yaml_value(config_dir: Path, file: str, key: str) -> Any:
    """The value a YAML file under `conf/` gives `key` (its last part), for the error message."""
    import yaml

    try:
        return (yaml.safe_load((config_dir / f"{file}.yaml").read_text()) or {}).get(key.rsplit(".", 1)[-1])
    except (OSError, yaml.YAMLError, AttributeError):
        return None


def composition_error(err: BaseException, config_dir: Path | None = None, given: dict | None = None) -> ConfigError:
    """Turn a Hydra/OmegaConf composition error into qexp's one-line message.

    `config_dir` is where the YAML files are, `given` the config as a dict: both only serve
    to show the offending value.
    """
    from hydra.errors import MissingConfigException
    from omegaconf.errors import ConfigKeyError, MissingMandatoryValue, OmegaConfBaseException, ValidationError

    if isinstance(err, ConfigError):
        return err
    cause = next((e for e in (err, err.__cause__, err.__context__) if isinstance(e, OmegaConfBaseException)), err)
    text = str(err)
    file = text[4:text.index("'", 4)] if text.startswith("In '") and "'" in text[4:] else None
    where = f" in conf/{file}.yaml" if file else ""
    key = getattr(cause, "full_key", None)
    if isinstance(cause, (ConfigKeyError, AttributeError)) and key:
        if given is not None:
            value = OmegaConf.select(OmegaConf.create(given), key)
        elif file:
            value = _yaml_value(config_dir or CONF_DIR, file, key)
        else:
            value = _override_value(text, key)
        node = getattr(cause, "parent_node", None)
        keys = sorted(str(k) for k in node.keys()) if isinstance(node, DictConfig) else []
        return config_error(key, value, f"Unknown config key{where}",
                            f"Remove it or correct its spelling; the keys of {key.rsplit('.', 1)[0]} are {keys}.")
    if isinstance(cause, MissingMandatoryValue) and key:
        return config_error(key, "???", f"Missing required value{where}",
                            f"Set {key}=<value>, or choose a preset that sets it.")
    if isinstance(cause, ValidationError) and key:
        expected = _field_type(getattr(cause, "parent_node", None), str(getattr(cause, "key", "")))
        return config_error(key, cause.value, f"Wrong type{where}", f"Set {key} to {expected}.")
    if isinstance(err, MissingConfigException):
        options = sorted(getattr(err, "options", None) or [])
        missing = text.split("Could not find '", 1)[-1].split("'", 1)[0]
        group, _, option = missing.rpartition("/")
        return config_error(group or "config", option, f"Could not find '{missing}'", f"Use one of {options}.")
    first = text.strip().splitlines()[0] if text.strip() else type(err).__name__
    return ConfigError(f"The config does not compose: {first}. Check the overrides and the files under conf/.")


def _override_value(text: str, full_key: str) -> Any:
    """The value given for an unknown key, from Hydra's 'use +key=value' hint."""
    marker = f"+{full_key}="
    return text.split(marker, 1)[1].split()[0] if marker in text else None
