"""The config's schema: one dataclass per group, registered in Hydra's ConfigStore.

The YAML files under `conf/` hold the values and start from these schemas
(`defaults: [/schema/quant_gptq@_here_, _self_]`), so OmegaConf checks types, unknown keys and required
values (`???`) while Hydra composes, on the command line and in every YAML file alike.
What a type cannot say (ranges, files that must exist, group-size divisibility, task
names) is checked by `qexp.spec.prepare`, before any weights load.

`register()` must run before Hydra composes: the entry point, `compose()` and the
command-line tools call it. Composition errors become `ConfigError`s through
`config_errors.composition_error()`: what failed, `<key=value>`, and the fix, on one line.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

from .config_errors import composition_error
from .errors import config_error
from .files import CONF_DIR
from .identity import run_name

__all__ = [
    "CONF_DIR",
    "Config",
    "ModelConfig",
    "QuantConfig",
    "WeightQuantConfig",
    "GPTQConfig",
    "W8A8Config",
    "AWQConfig",
    "AutoRoundConfig",
    "CalibConfig",
    "EvalConfig",
    "TrackingConfig",
    "SpeedConfig",
    "VllmSpeedConfig",
    "SPEED_SCHEMAS",
    "PathsConfig",
    "QUANT_SCHEMAS",
    "register",
    "compose",
    "validate",
    "tracking_defaults",
]



@dataclass
class ModelConfig:
    name: str = MISSING  # names runs' model tag and checkpoint folders
    path: str = MISSING  # hub id, local folder, or qexp:<builtin>
    dtype: str = MISSING  # float32 | bfloat16 | float16: what the model is loaded in to quantize (eval.dtype: to evaluate)
    max_seq_length: int = MISSING  # calibration tokens per sample
    group_size: int | None = MISSING  # the quantization group size that suits this model
    note: str | None = None  # a caveat shown in every run's description


@dataclass
class QuantConfig:
    """quant=none: the unquantized baseline."""

    name: str = MISSING  # none | rtn | gptq | awq | autoround | w8a8 | fp8


@dataclass
class WeightQuantConfig(QuantConfig):
    """quant=rtn and quant=fp8: the scheme applied as it is, round-to-nearest, no calibration data."""

    scheme: str = MISSING  # a compressed-tensors preset: W4A16, W4A16_ASYM, W8A8, FP8_DYNAMIC, ...
    group_size: int | None = MISSING  # null for schemes that are not grouped (per channel: W8A8, FP8_DYNAMIC)
    targets: list[str] = MISSING  # the layers quantized: module types or names (llm-compressor's targets)
    ignore: list[str] = MISSING  # layers left unquantized (lm_head: the output layer)


@dataclass
class GPTQConfig(WeightQuantConfig):
    block_size: int = MISSING  # columns GPTQ quantizes at once before it updates the rest
    dampening_frac: float = MISSING  # added to the Hessian's diagonal, as a fraction of its mean: stabilises the inverse
    actorder: str | None = MISSING  # static | group | weight | null (columns in their own order)


@dataclass
class W8A8Config(GPTQConfig):
    """quant=w8a8: SmoothQuant moves activation outliers into the weights, then GPTQ."""

    smoothing_strength: float = MISSING


@dataclass
class AWQConfig(WeightQuantConfig):
    # true | false | both. Union fields break OmegaConf 2.3's merge of a subclass schema
    # (AssertionError in expand), so the type is Any and `prepare` checks the value.
    duo_scaling: Any = MISSING
    n_grid: int = MISSING
    offload_device: str = MISSING  # auto | cpu | none: where AWQ caches layer inputs (not in the config hash)


@dataclass
class AutoRoundConfig(WeightQuantConfig):
    iters: int = MISSING  # sign-gradient steps per decoder layer
    lr: float | None = MISSING  # null: AutoRound's default, 1 / iters
    batch_size: int = MISSING  # calibration samples per tuning step


@dataclass
class CalibConfig:
    n: int = MISSING  # calibration samples: the sweep's second axis (a smaller n is a prefix of a larger one)
    seed: int = MISSING  # the seeded permutation the samples are drawn from
    max_seq_length: int = MISSING
    source: str = MISSING  # package | file | hub
    path: str | None = None


@dataclass
class SequentialConfig:
    looks: int = MISSING  # 0: fixed size; K > 0: each task's documents in K chunks, stop when decided
    margin: float = MISSING  # points: "equivalent" means the average difference is within ±margin
    comparisons: int | None = MISSING  # the study's comparisons with the baseline; each stops at alpha/comparisons
    per_task: bool = MISSING  # also decide each requested task, at alpha/(comparisons × tasks)
    futility: float = MISSING  # stop undecided once a decision by the budget is predicted below this probability


@dataclass
class EvalVllmConfig:
    w4a8: bool | None = MISSING  # null: as speed.w4a8 (false with speed=none); CPU: int4 kernels quantize activations to int8
    enforce_eager: bool = MISSING  # true: no graph compilation (starts faster; may compute slightly differently)


@dataclass
class EvalConfig:
    tasks: list[str] = MISSING  # lm-eval task or group names; sharegpt_heldout is qexp's own perplexity task
    num_fewshot: int = MISSING  # examples in each prompt (0: zero-shot, as the original study)
    limit: int | None = MISSING
    batch_size: Any = MISSING  # an integer, auto, or null: per device (Any: see AWQConfig.duo_scaling)
    data_dir: str | None = None  # a folder of hub-style mirrors, qexp:packaged (the real data), or null: the hub
    heldout_docs: int = MISSING
    heldout_max_chars: int = MISSING
    dtype: str = MISSING  # auto | float32 | bfloat16 | float16: what the evaluated model computes in
    order: str = MISSING  # dataset (the first eval.limit documents) | shuffled (a seeded random sample)
    sequential: SequentialConfig = field(default_factory=SequentialConfig)
    backend: str = MISSING  # hf (transformers, in the job) | vllm (the serving runtime, in its own environment)
    vllm: EvalVllmConfig = field(default_factory=EvalVllmConfig)


@dataclass
class SpeedConfig:
    """speed=none: no speed measurement."""

    name: str = "none"  # none | vllm


@dataclass
class VllmSpeedConfig(SpeedConfig):
    """speed=vllm: each run's checkpoint served by vLLM and timed (qexp/speed)."""

    batch_sizes: list[int] = MISSING  # output tokens per second is measured at each
    prompt_tokens: int = MISSING  # each timed request's prompt length
    output_tokens: int = MISSING  # tokens generated per request (greedy, no early stop)
    warmup: int = MISSING  # untimed passes first
    repetitions: int = MISSING  # timed passes: each figure is their median, with their range
    dtype: str = MISSING  # the activations' (and the baseline's weights') dtype in vLLM
    w4a8: bool = MISSING  # CPU: let vLLM's int4 kernel quantize activations to int8 (faster, not W4A16)
    enforce_eager: bool = MISSING  # true: no graph compilation (loads faster, may run slower)
    python: str | None = None  # an interpreter that has vLLM; null: qexp builds one under its cache
    timeout_seconds: int = MISSING  # a measurement that takes longer is stopped; the run keeps its accuracy


@dataclass
class TrackingConfig:
    uri: str = MISSING
    experiment: str = MISSING  # the MLflow experiment every job and tool reads and writes
    log_checkpoint: bool = MISSING
    heartbeat_seconds: int = MISSING
    stale_after_seconds: int = MISSING
    outage_seconds: int = MISSING  # how long a running job waits for a store that went away
    system_metrics_seconds: int | None = MISSING  # MLflow system metrics' sampling interval; null: off
    register_model: bool = MISSING  # register each checkpoint's logged model (name: <model>-<method>)


@dataclass
class PathsConfig:
    cache_dir: str | None = None
    checkpoint_dir: str | None = None
    output_dir: str = MISSING


@dataclass
class Config:
    model: ModelConfig = MISSING
    quant: QuantConfig = MISSING
    calib: CalibConfig = MISSING
    eval: EvalConfig = MISSING
    tracking: TrackingConfig = MISSING
    speed: SpeedConfig = field(default_factory=SpeedConfig)
    paths: PathsConfig = field(default_factory=PathsConfig)
    seed: int = MISSING
    device: str = MISSING
    force: bool = MISSING
    verbose: bool = MISSING  # every library's logs and progress bars live (they always reach the job's log)
    gpus_per_job: int = MISSING  # GPUs a job holds while it runs (qexp/gpus.py)


SPEED_SCHEMAS = {"none": SpeedConfig, "vllm": VllmSpeedConfig}
QUANT_SCHEMAS = {"none": QuantConfig, "rtn": WeightQuantConfig, "gptq": GPTQConfig, "awq": AWQConfig,
                 "autoround": AutoRoundConfig, "w8a8": W8A8Config, "fp8": WeightQuantConfig}

# The presets extend these from a group of their own, so the groups a user picks from (`quant=…`,
# `--help`, shell completion) list presets only: `defaults: [/schema/quant_gptq@_here_, _self_]`.
SCHEMAS: dict[tuple[str | None, str], Any] = {
    (None, "base_config"): Config,
    ("schema", "model"): ModelConfig,
    ("schema", "quant_none"): QuantConfig,
    ("schema", "quant_weights"): WeightQuantConfig,
    ("schema", "quant_gptq"): GPTQConfig,
    ("schema", "quant_w8a8"): W8A8Config,
    ("schema", "quant_awq"): AWQConfig,
    ("schema", "quant_autoround"): AutoRoundConfig,
    ("schema", "calib"): CalibConfig,
    ("schema", "eval"): EvalConfig,
    ("schema", "tracking"): TrackingConfig,
    ("schema", "speed_none"): SpeedConfig,
    ("schema", "speed_vllm"): VllmSpeedConfig,
}


# What each config group a user picks from is for, in the order `python -m qexp --help` lists them.
GROUPS = {
    "model": "what to quantize (or model.path=<folder or hub id>)",
    "quant": "how: a quantization method, or none for the unquantized baseline; the sweep's first axis",
    "calib": "the calibration data; calib.n=<samples> is the sweep's second axis",
    "eval": "the lm-eval tasks and where their data comes from",
    "speed": "speed and serving memory of each checkpoint, measured in vLLM (or none)",
    "tracking": "where runs are logged (MLflow)",
    "launcher": "how a sweep's jobs run",
    "+experiment": "a whole study in one word: python -m qexp -m +experiment=<option>",
}


def group_help() -> str:
    """The groups and their options, read from conf/ (what `--help` shows; see conf/config.yaml)."""
    lines = []
    for group, purpose in GROUPS.items():
        options = sorted(f.stem for f in (CONF_DIR / group.lstrip("+")).glob("*.yaml"))
        lines.append(f"  {group:<12} {purpose}\n  {'':<12} options: {', '.join(options)}")
    return "\n".join(lines)


def register() -> None:
    """Put the schemas in Hydra's ConfigStore and register qexp's resolvers (idempotent)."""
    from .fixtures import FIXTURES_DIR

    store = ConfigStore.instance()
    for (group, name), node in SCHEMAS.items():
        store.store(group=group, name=name, node=node)
    resolvers = {
        "qexp_fixtures": lambda: str(FIXTURES_DIR),  # eval=fixtures: the shipped fixture mirrors
        "qexp_cwd": lambda: os.getcwd(),  # the default store lives under the working directory
        "qexp_run_name": run_name,  # the sweep sub-folder: ${qexp_run_name:${quant.name},${calib.n}}
        "qexp_groups": group_help,  # --help: the groups a user picks from
    }
    for name, resolver in resolvers.items():
        OmegaConf.register_new_resolver(name, resolver, replace=True)


def compose(overrides: list[str] | tuple[str, ...] = (), config_dir: Path | None = None) -> DictConfig:
    """The config tree composed as `python -m qexp <overrides>` would, for tools and tests.

    Composition errors are raised as one-line `ConfigError`s. Interpolations that need a
    running Hydra app (`paths.output_dir`) are left unresolved.
    """
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    register()
    with initialize_config_dir(config_dir=str(config_dir or CONF_DIR), version_base="1.3"):
        try:
            return hydra_compose(config_name="config", overrides=list(overrides))
        except Exception as err:
            raise composition_error(err, config_dir) from None


def validate(cfg: DictConfig) -> DictConfig:
    """`cfg` resolved and checked against the schema, `hydra` node dropped: a typed, read-only copy.

    Composition already checked the YAML files and overrides; this also covers keys added
    with `+key=value`, configs built by hand, and required values left at `???`.
    """
    from omegaconf.errors import OmegaConfBaseException

    if "hydra" in cfg:  # present when composed with return_hydra_config; resolvable only in the app
        cfg = OmegaConf.masked_copy(cfg, [key for key in cfg if key != "hydra"])
    try:
        plain = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    except OmegaConfBaseException as err:
        raise composition_error(err) from None
    method = (plain.get("quant") or {}).get("name")
    if method not in QUANT_SCHEMAS:
        raise config_error("quant.name", method, "Unknown quantization method",
                           f"Use one of quant={','.join(QUANT_SCHEMAS)}.")
    speed = (plain.get("speed") or {}).get("name", "none")
    if speed not in SPEED_SCHEMAS:
        raise config_error("speed.name", speed, "Unknown speed measurement", f"Use one of speed={','.join(SPEED_SCHEMAS)}.")
    try:
        typed = OmegaConf.merge(OmegaConf.structured(Config),
                                {"quant": OmegaConf.structured(QUANT_SCHEMAS[method]),
                                 "speed": OmegaConf.structured(SPEED_SCHEMAS[speed])}, plain)
        OmegaConf.to_container(typed, throw_on_missing=True)
    except OmegaConfBaseException as err:
        raise composition_error(err, given=plain) from None
    OmegaConf.set_readonly(typed, True)
    return typed


def tracking_defaults() -> DictConfig:
    """The composed `tracking` group: the defaults `python -m qexp` logs with, for the other tools."""
    return compose().tracking
