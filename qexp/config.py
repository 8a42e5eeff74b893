"""Check a composed config before anything heavy runs, and say what identifies its result.

`prepare(cfg)` validates every key (cheap checks first, then those that read the model's
config, the calibration file and lm-eval's task index), and returns a `RunSpec` with the
resolved pieces and the `config_hash` that names the result.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from . import calibration, models, tracking
from .errors import config_error
from .evaluation import TaskPlan, plan_tasks
from .fixtures import FIXTURES_DIR
from .quantization import METHODS, quantized_widths

__all__ = ["RunSpec", "prepare", "baseline_config", "flatten", "hash_identity"]

OmegaConf.register_new_resolver("qexp_fixtures", lambda: str(FIXTURES_DIR), replace=True)

DTYPES = ("float32", "bfloat16", "float16")
# What a result depends on besides the config: a version change re-runs the sweep.
EVAL_LIBRARIES = ("torch", "transformers", "lm_eval")
QUANT_LIBRARIES = ("llmcompressor", "compressed-tensors")


@dataclass
class RunSpec:
    """A validated run: the resolved config plus what was found while checking it."""

    cfg: DictConfig
    model_path: str  # loadable by from_pretrained
    plan: TaskPlan
    calib_path: Path | None  # None for the baseline
    cache_dir: Path
    output_dir: Path
    device: str
    identity: dict
    config_hash: str
    checkpoint: Path | None  # where this configuration's checkpoint lives (None for the baseline)

    @property
    def method(self) -> str:
        return str(self.cfg.quant.name)

    @property
    def is_baseline(self) -> bool:
        return self.method == "none"

    @property
    def calib_n(self) -> int:
        return 0 if self.is_baseline else int(self.cfg.calib.n)

    @property
    def run_name(self) -> str:
        return spec_name(self.cfg)


# ----------------------------------------------------------------------------- key checks
def _get(cfg: DictConfig, key: str) -> Any:
    return OmegaConf.select(cfg, key, default=None)


def _int(cfg, key: str, minimum: int, fix: str, allow_none: bool = False) -> int | None:
    value = _get(cfg, key)
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise config_error(key, value, "Expected an integer", fix)
    if value < minimum:
        raise config_error(key, value, f"Expected an integer >= {minimum}", fix)
    return value


def _choice(cfg, key: str, choices: tuple, fix: str | None = None) -> Any:
    value = _get(cfg, key)
    if value not in choices:
        raise config_error(key, value, "Unknown value", fix or f"Use one of {list(choices)}.")
    return value


def _str_list(cfg, key: str, fix: str, allow_empty: bool = True) -> list[str]:
    value = _get(cfg, key)
    items = list(value) if OmegaConf.is_list(value) or isinstance(value, (list, tuple)) else None
    if items is None or not all(isinstance(v, str) and v for v in items) or (not items and not allow_empty):
        raise config_error(key, value, "Expected a list of names", fix)
    return items


def _check_quant(cfg: DictConfig) -> None:
    from compressed_tensors.quantization.quant_scheme import PRESET_SCHEMES

    method = _choice(cfg, "quant.name", METHODS, "Use quant=none, quant=gptq or quant=awq.")
    if method == "none":
        return
    scheme = _get(cfg, "quant.scheme")
    if not isinstance(scheme, str) or scheme.upper() not in PRESET_SCHEMES:
        raise config_error("quant.scheme", scheme, "Unknown compressed-tensors scheme",
                           "Use a preset such as W4A16 (GPTQ) or W4A16_ASYM (AWQ).")
    _int(cfg, "quant.group_size", 1, "Set quant.group_size to a positive integer such as 128 or 64.", allow_none=True)
    _str_list(cfg, "quant.targets", "Set quant.targets to a list of module types, e.g. [Linear].", allow_empty=False)
    _str_list(cfg, "quant.ignore", "Set quant.ignore to a list of module names, e.g. [lm_head].")
    if method == "gptq":
        _int(cfg, "quant.block_size", 1, "Set quant.block_size to a positive integer, e.g. 128.")
        damp = _get(cfg, "quant.dampening_frac")
        if isinstance(damp, bool) or not isinstance(damp, (int, float)) or not 0 <= damp < 1:
            raise config_error("quant.dampening_frac", damp, "Expected a number in [0, 1)",
                               "Set quant.dampening_frac=0.01 (GPTQ's usual value).")
    if method == "awq":
        _choice(cfg, "quant.duo_scaling", (True, False, "both"), "Use quant.duo_scaling=true, false or both.")
        _int(cfg, "quant.n_grid", 1, "Set quant.n_grid to a positive integer, e.g. 20.")


def _check_group_size(cfg: DictConfig, model_path: str) -> None:
    """Group quantization needs every quantized layer's input width divisible by the group size.

    llmcompressor only finds out after loading the model; the model's config is enough.
    """
    group_size = _get(cfg, "quant.group_size")
    if group_size is None:
        return
    widths = quantized_widths(models.linear_input_widths(model_path), cfg.quant)
    bad = {name: w for name, w in widths.items() if w % group_size}
    if bad:
        common = math.gcd(*widths.values())
        valid = [g for g in (16, 32, 64, 128, 256) if common % g == 0]
        name, width = next(iter(bad.items()))
        raise config_error(
            "quant.group_size", group_size,
            f"The group size does not divide the input width of {len(bad)} quantized layers "
            f"(e.g. {name}: {width}) of model {cfg.model.path}",
            f"Use a group size that divides every width: {valid or [common]}"
            f" (e.g. quant.group_size={(valid or [common])[-1]}), or list those layers in quant.ignore.",
        )


def _check_device(cfg: DictConfig) -> str:
    import torch

    device = _get(cfg, "device")
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu":
        return "cpu"
    if isinstance(device, str) and (device == "cuda" or device.startswith("cuda:")):
        if not torch.cuda.is_available():
            raise config_error("device", device, "No CUDA device is available on this machine",
                               "Use device=cpu or device=auto.")
        return device
    raise config_error("device", device, "Unknown device", "Use device=auto, cpu, cuda or cuda:N.")


# ----------------------------------------------------------------------------- identity
def _versions(names: tuple[str, ...]) -> dict[str, str]:
    return {name: metadata.version(name) for name in names}


def _folder_fingerprint(folder: Path) -> str:
    """Names and sizes of every file: cheap, and changes when the data does in practice."""
    entries = sorted((str(p.relative_to(folder)), p.stat().st_size) for p in folder.rglob("*") if p.is_file())
    return hashlib.sha256(json.dumps(entries).encode()).hexdigest()[:16]


def hash_identity(identity: dict) -> str:
    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _identity(cfg: DictConfig, model_path: str, plan: TaskPlan, calib_path: Path | None) -> dict:
    """Everything that determines the result, and nothing that does not.

    Left out on purpose: output folders, tracking settings, eval.batch_size and device
    (they change numerics at most in the last float bits; both are logged as params).
    """
    identity: dict[str, Any] = {
        "model": {**models.model_fingerprint(str(cfg.model.path), model_path), "dtype": cfg.model.dtype},
        "eval": {
            "tasks": list(cfg.eval.tasks),
            "num_fewshot": cfg.eval.num_fewshot,
            "limit": cfg.eval.limit,
            "seed": cfg.seed,
            "data": {task: _folder_fingerprint(path) for task, path in sorted(plan.local.items())} or "hub",
            "own_data": {task: path.name for task, path in sorted(plan.own.items())},
        },
        "versions": _versions(EVAL_LIBRARIES),
    }
    if calib_path is not None:
        identity["quant"] = OmegaConf.to_container(cfg.quant)
        identity["calib"] = {
            "n": cfg.calib.n,
            "seed": cfg.calib.seed,
            "max_seq_length": cfg.calib.max_seq_length,
            "source": cfg.calib.source,
            "file": [calib_path.name, calib_path.stat().st_size],
        }
        identity["versions"].update(_versions(QUANT_LIBRARIES))
    return identity


def _heldout_file(cfg: DictConfig, cache_dir: Path) -> Path:
    """Write the held-out conversations as JSON Lines once; the name hashes what they are."""
    source = calibration.source_path(cfg.calib.source, cfg.calib.path)
    docs = calibration.heldout(calibration.load_conversations(source), cfg.eval.heldout_docs)
    records = [{"id": c.id, "text": calibration.plain_text(c, cfg.eval.heldout_max_chars)} for c in docs]
    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    path = cache_dir / "heldout" / f"sharegpt-{hashlib.sha256(text.encode()).hexdigest()[:16]}.jsonl"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(text)
        tmp.replace(path)
    return path


def flatten(node: Any, prefix: str = "") -> dict[str, str]:
    """`{"a": {"b": 1}}` -> `{"a.b": "1"}`, lists as JSON: the shape MLflow params take."""
    if isinstance(node, dict):
        out: dict[str, str] = {}
        for key, value in node.items():
            out.update(flatten(value, f"{prefix}{key}."))
        return out
    value = json.dumps(node) if isinstance(node, list) else str(node)
    return {prefix.rstrip("."): value}


def baseline_config(cfg: DictConfig) -> DictConfig:
    """The same model and evaluation, unquantized."""
    base = OmegaConf.to_container(cfg, resolve=True)
    base["quant"] = {"name": "none"}
    return OmegaConf.create(base)


# ----------------------------------------------------------------------------- prepare
def prepare(cfg: DictConfig) -> RunSpec:
    """Validate the whole config, cheapest checks first; raise ConfigError on the first problem."""
    if "hydra" in cfg:
        cfg = OmegaConf.create({k: v for k, v in cfg.items() if k != "hydra"})
    try:
        cfg = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
    except Exception as err:  # an interpolation that cannot resolve
        raise config_error("config", str(err).splitlines()[0], "The config does not resolve",
                           "Fix the interpolation named above.") from None

    _check_quant(cfg)
    is_baseline = cfg.quant.name == "none"
    for key in ("model.name", "model.path"):
        value = _get(cfg, key)
        if not isinstance(value, str) or not value:
            raise config_error(key, value, "Missing model setting",
                               "Choose a preset (model=tiny, model=qwen3_4b) or set model.path=<dir or hub id>.")
    _choice(cfg, "model.dtype", DTYPES)
    _int(cfg, "eval.heldout_docs", 1, "Set eval.heldout_docs to a positive number of conversations, e.g. 100.")
    _int(cfg, "eval.heldout_max_chars", 1, "Set eval.heldout_max_chars to a positive number, e.g. 2000.")
    if not is_baseline or "sharegpt_heldout" in (_get(cfg, "eval.tasks") or []):
        _choice(cfg, "calib.source", ("package", "file", "hub"))
    if not is_baseline:
        _int(cfg, "calib.n", 1, "Set calib.n to a positive number of calibration samples, e.g. calib.n=512.")
        _int(cfg, "calib.seed", 0, "Set calib.seed to a non-negative integer.")
        _int(cfg, "calib.max_seq_length", 1, "Set calib.max_seq_length to a positive number of tokens, e.g. 2048.")
    _str_list(cfg, "eval.tasks", "Set eval.tasks to a list of lm-eval task names, e.g. [arc_easy,mmlu].",
              allow_empty=False)
    _int(cfg, "eval.num_fewshot", 0, "Set eval.num_fewshot to 0 or a positive integer.")
    _int(cfg, "eval.limit", 1, "Set eval.limit to a positive number of documents per task, or "
         "eval.limit=null for all of them.", allow_none=True)
    if _get(cfg, "eval.batch_size") != "auto":
        _int(cfg, "eval.batch_size", 1, "Set eval.batch_size to a positive integer or auto.")
    _int(cfg, "seed", 0, "Set seed to a non-negative integer.")
    _int(cfg, "tracking.heartbeat_seconds", 1, "Set tracking.heartbeat_seconds to a positive number, e.g. 30.")
    _int(cfg, "tracking.stale_after_seconds", 1, "Set tracking.stale_after_seconds to a positive number, e.g. 300.")
    for key in ("force", "tracking.log_checkpoint"):
        if not isinstance(_get(cfg, key), bool):
            raise config_error(key, _get(cfg, key), "Expected true or false", f"Set {key}=true or {key}=false.")
    if not isinstance(_get(cfg, "tracking.experiment"), str) or not cfg.tracking.experiment:
        raise config_error("tracking.experiment", _get(cfg, "tracking.experiment"), "Missing experiment name",
                           "Set tracking.experiment=<name>.")
    tracking.check_uri(_get(cfg, "tracking.uri"))
    device = _check_device(cfg)
    if not _get(cfg, "paths.output_dir"):
        raise config_error("paths.output_dir", None, "No output folder", "Set paths.output_dir=<dir>.")
    cache_dir = Path(cfg.paths.cache_dir).expanduser() if cfg.paths.cache_dir else models.default_cache_dir()

    # Reads files, but no weights.
    models.check_model_path(cfg.model.path)
    calib_path = None
    if not is_baseline:
        calib_path = calibration.source_path(cfg.calib.source, cfg.calib.path)
        calibration.select(calibration.load_conversations(calib_path), cfg.calib.n, cfg.calib.seed)
    own = {}
    if "sharegpt_heldout" in cfg.eval.tasks:
        own["sharegpt_heldout"] = _heldout_file(cfg, cache_dir)
    plan = plan_tasks(list(cfg.eval.tasks), cfg.eval.data_dir, cache_dir, own)
    model_path = models.resolve_model(cfg.model.path, cache_dir)
    if not is_baseline:
        _check_group_size(cfg, model_path)

    identity = _identity(cfg, model_path, plan, calib_path)
    checkpoint = None
    if not is_baseline:
        # Keyed by everything but the evaluation: a checkpoint survives a failed evaluation.
        checkpoint_root = Path(cfg.paths.checkpoint_dir or cache_dir / "checkpoints").expanduser()
        quant_hash = hash_identity({**{k: v for k, v in identity.items() if k != "eval"},
                                    "versions": {k: v for k, v in identity["versions"].items() if k != "lm_eval"}})
        checkpoint = checkpoint_root / f"{cfg.model.name}-{spec_name(cfg)}-{quant_hash}"
    return RunSpec(
        cfg=cfg,
        model_path=model_path,
        plan=plan,
        calib_path=calib_path,
        cache_dir=cache_dir,
        output_dir=Path(cfg.paths.output_dir),
        device=device,
        identity=identity,
        config_hash=hash_identity(identity),
        checkpoint=checkpoint,
    )


def spec_name(cfg: DictConfig) -> str:
    return "baseline" if cfg.quant.name == "none" else f"{cfg.quant.name}-{cfg.calib.n}"
