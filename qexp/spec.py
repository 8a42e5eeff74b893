"""From a composed config to a `RunSpec`: everything checked, everything found, nothing loaded.

`prepare(cfg)` re-checks the config against the schema (a config built by hand, or keys
added with `+key=`, get the same one-line errors as composition), then checks what a type
cannot say, cheapest first: values and ranges, then what needs files (the model's config,
the calibration file, lm-eval's task index, the dataset mirrors). No weights are read. The
spec carries what was found on the way (the calibration selection, the task plan, the
held-out data file) and the identity that names the result.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig, OmegaConf, read_write

from . import calibration, gpus, heldout, identity, models
from .calibration import Conversation
from .errors import config_error
from .evaluation import TaskPlan, plan_tasks
from .files import default_cache_dir, digest, file_sha256
from .quantization import check_scheme, widths_to_check
from .schema import validate
from .speed import SpeedPlan, plan_speed
from .speed.device import describe as describe_device
from .tracking import check_uri

__all__ = ["RunSpec", "prepare", "baseline_config"]

DTYPES = ("float32", "bfloat16", "float16")


@dataclass
class RunSpec:
    """A validated run: the resolved config plus what was found while checking it."""

    cfg: DictConfig
    model_path: str  # loadable by from_pretrained
    plan: TaskPlan
    calib_path: Path | None  # the ShareGPT file; None for the baseline and data-free methods
    calibration: list[Conversation] | None  # the selected samples, in order; None when nothing calibrates
    cache_dir: Path
    output_dir: Path
    device: str
    identity: dict  # what the config hash covers (logged as identity.json)
    checkpoint: Path | None  # where this configuration's checkpoint lives (None for the baseline)
    speed: SpeedPlan | None = None  # the speed phase's plan; None with speed=none

    @property
    def method(self) -> str:
        return str(self.cfg.quant.name)

    @property
    def is_baseline(self) -> bool:
        return self.method == identity.BASELINE

    @property
    def calibrated(self) -> bool:
        return identity.calibrated(self.method)

    @property
    def calib_n(self) -> int:
        return int(self.cfg.calib.n) if self.calibrated else 0

    @property
    def run_name(self) -> str:
        return identity.run_name(self.method, self.calib_n)

    @property
    def config_hash(self) -> str:
        return identity.config_hash(self.identity)

    @property
    def eval_hash(self) -> str:
        return digest(identity.eval_identity(self.identity))


def baseline_config(cfg: DictConfig) -> DictConfig:
    """The same model and evaluation, unquantized."""
    base = OmegaConf.to_container(cfg, resolve=True)
    base["quant"] = {"name": identity.BASELINE}
    return OmegaConf.create(base)


# ----------------------------------------------------------------------------- checks
def _at_least(cfg: DictConfig, key: str, minimum: int, fix: str) -> None:
    value = OmegaConf.select(cfg, key)
    if value is not None and value < minimum:
        raise config_error(key, value, f"Expected a number >= {minimum}", fix)


def _one_of(cfg: DictConfig, key: str, choices: tuple, fix: str | None = None) -> None:
    value = OmegaConf.select(cfg, key)
    if value not in choices:
        raise config_error(key, value, "Unknown value", fix or f"Use one of {list(choices)}.")


def _names(cfg: DictConfig, key: str, fix: str, allow_empty: bool = True) -> None:
    items = list(OmegaConf.select(cfg, key))
    if not all(items) or (not items and not allow_empty):
        raise config_error(key, items, "Expected a list of names", fix)


def _check_values(cfg: DictConfig, cache_dir: Path) -> None:
    """What the schema's types cannot say; no file is read but the cached table of schemes."""
    quant = cfg.quant
    if quant.name != identity.BASELINE:
        _at_least(cfg, "quant.group_size", 1, "Set quant.group_size to a positive integer such as 128 or 64.")
        check_scheme(quant.scheme, quant.group_size, cache_dir)
        _names(cfg, "quant.targets", "Set quant.targets to a list of module types, e.g. [Linear].", allow_empty=False)
        _names(cfg, "quant.ignore", "Set quant.ignore to a list of module names, e.g. [lm_head].")
    if quant.name in ("gptq", "w8a8"):
        _at_least(cfg, "quant.block_size", 1, "Set quant.block_size to a positive integer, e.g. 128.")
        if not 0 <= quant.dampening_frac < 1:
            raise config_error("quant.dampening_frac", quant.dampening_frac, "Expected a number in [0, 1)",
                               "Set quant.dampening_frac=0.01 (GPTQ's usual value).")
        _one_of(cfg, "quant.actorder", ("static", "group", "weight", None),
                "Use quant.actorder=static, group, weight or null (no activation ordering).")
        if quant.actorder == "group" and quant.group_size is None:
            raise config_error("quant.actorder", quant.actorder, f"Scheme {quant.scheme} has no groups to order",
                               "Use quant.actorder=static, weight or null.")
    if quant.name == "w8a8" and not 0 < quant.smoothing_strength <= 1:
        raise config_error("quant.smoothing_strength", quant.smoothing_strength, "Expected a number in (0, 1]",
                           "Set quant.smoothing_strength=0.8 (SmoothQuant's usual value for Llama-like models).")
    if quant.name == "autoround":
        _at_least(cfg, "quant.iters", 1, "Set quant.iters to a positive number of tuning steps, e.g. 200.")
        _at_least(cfg, "quant.batch_size", 1, "Set quant.batch_size to a positive number of samples, e.g. 8.")
        if quant.lr is not None and not quant.lr > 0:
            raise config_error("quant.lr", quant.lr, "Expected a positive learning rate or null",
                               "Set quant.lr=null (AutoRound's default, 1 / iters) or a positive number.")
    if quant.name == "awq":
        _one_of(cfg, "quant.duo_scaling", (True, False, "both"), "Use quant.duo_scaling=true, false or both.")
        _at_least(cfg, "quant.n_grid", 1, "Set quant.n_grid to a positive integer, e.g. 20.")
        _one_of(cfg, "quant.offload_device", ("auto", "cpu", "none"),
                "Use quant.offload_device=auto (cpu on a GPU), cpu (cached activations in host memory) "
                "or none (on the calibrating device).")
    for key in ("model.name", "model.path"):
        if not OmegaConf.select(cfg, key):
            raise config_error(key, OmegaConf.select(cfg, key), "Missing model setting",
                               "Choose a preset (model=tiny, model=qwen3_4b) or set model.path=<dir or hub id>.")
    _one_of(cfg, "model.dtype", DTYPES)
    _one_of(cfg, "eval.dtype", ("auto", *DTYPES))
    _at_least(cfg, "eval.heldout_docs", 1, "Set eval.heldout_docs to a positive number of conversations, e.g. 100.")
    _at_least(cfg, "eval.heldout_max_chars", 1, "Set eval.heldout_max_chars to a positive number, e.g. 2000.")
    if identity.calibrated(quant.name) or heldout.TASK in cfg.eval.tasks:
        _one_of(cfg, "calib.source", ("package", "file", "hub"))
    if quant.name in identity.DATA_FREE:  # calib.n does not apply, but a negative one means nothing
        _at_least(cfg, "calib.n", 0, f"quant={quant.name} uses no calibration data: leave calib.n at a "
                  "non-negative value (it is ignored), e.g. calib.n=0.")
    elif quant.name != identity.BASELINE:
        _at_least(cfg, "calib.n", 1, "Set calib.n to a positive number of calibration samples, e.g. calib.n=512.")
        _at_least(cfg, "calib.seed", 0, "Set calib.seed to a non-negative integer.")
        _at_least(cfg, "calib.max_seq_length", 1, "Set calib.max_seq_length to a positive number of tokens, e.g. 2048.")
    _names(cfg, "eval.tasks", "Set eval.tasks to a list of lm-eval task names, e.g. [arc_easy,mmlu].",
           allow_empty=False)
    _at_least(cfg, "eval.num_fewshot", 0, "Set eval.num_fewshot to 0 or a positive integer.")
    _at_least(cfg, "eval.limit", 1, "Set eval.limit to a positive number of documents per task, or "
              "eval.limit=null for all of them.")
    batch = cfg.eval.batch_size
    if batch not in ("auto", None) and (isinstance(batch, bool) or not isinstance(batch, int) or batch < 1):
        raise config_error("eval.batch_size", batch, "Expected a positive integer, auto or null",
                           "Set eval.batch_size to a positive integer, auto (lm-eval finds the largest that "
                           "fits), or null (auto on CUDA, 8 on CPU).")
    _at_least(cfg, "seed", 0, "Set seed to a non-negative integer.")
    _at_least(cfg, "gpus_per_job", 1, "Set gpus_per_job to a positive number of GPUs, e.g. 1.")
    _at_least(cfg, "tracking.heartbeat_seconds", 1, "Set tracking.heartbeat_seconds to a positive number, e.g. 30.")
    _at_least(cfg, "tracking.stale_after_seconds", 1, "Set tracking.stale_after_seconds to a positive number, e.g. 300.")
    _at_least(cfg, "tracking.outage_seconds", 0, "Set tracking.outage_seconds to 0 (stop at once) or more, e.g. 180.")
    tracking = cfg.tracking
    if tracking.outage_seconds + tracking.heartbeat_seconds >= tracking.stale_after_seconds:
        # a job waiting out an outage writes no heartbeat: another host's job must not take it for dead
        raise config_error("tracking.outage_seconds", tracking.outage_seconds,
                           f"A job waiting this long for its store, plus one heartbeat "
                           f"({tracking.heartbeat_seconds} s), would look dead to other hosts "
                           f"(tracking.stale_after_seconds={tracking.stale_after_seconds})",
                           "Lower tracking.outage_seconds, or raise tracking.stale_after_seconds above their sum.")
    _at_least(cfg, "tracking.system_metrics_seconds", 1, "Set tracking.system_metrics_seconds to a positive "
              "number, e.g. 10, or null to record no system metrics.")
    if not cfg.tracking.experiment:
        raise config_error("tracking.experiment", cfg.tracking.experiment, "Missing experiment name",
                           "Set tracking.experiment=<name>.")
    check_uri(cfg.tracking.uri)
    if not cfg.paths.output_dir:
        raise config_error("paths.output_dir", None, "No output folder", "Set paths.output_dir=<dir>.")


def _device(value: str, pinned: str | None) -> str:
    """The torch device every phase of the job uses, or a ConfigError when `value` cannot be honoured.

    llmcompressor calibrates on the first GPU this process sees, whatever qexp asks, so a
    device is honoured by what the process sees: `python -m qexp` pins each job process to
    its device before CUDA starts (`gpus.pin`; `pinned` is that device). A process that was
    not pinned (a notebook calling `run`) can use the first GPU or, with no GPU visible, the
    CPU; anything else would quantize on one device and evaluate on another, and is refused.
    """
    import torch

    cuda = re.fullmatch(r"cuda(?::(\d+))?", value)
    if value not in ("auto", "cpu") and not cuda:
        raise config_error("device", value, "Unknown device", "Use device=auto, cpu, cuda or cuda:N.")
    # device_count asks NVML and leaves CUDA unstarted (is_available would start it), so a sweep's
    # process that prepares its first job here can still be pinned when the job runs in it.
    count = torch.cuda.device_count()
    if value == "auto":
        return "cuda" if count else "cpu"
    if value == "cpu":
        if count and pinned != "cpu":
            raise config_error("device", value, "GPUs are visible to this process, and llmcompressor calibrates "
                               "on the first of them whatever device says",
                               "Run the job with `python -m qexp device=cpu` (which hides the GPUs from the job), "
                               "or start Python with CUDA_VISIBLE_DEVICES= (empty).")
        return "cpu"
    if not count:
        raise config_error("device", value, "No CUDA device is available on this machine",
                           "Use device=cpu or device=auto.")
    if value == pinned:
        return "cuda"  # the one GPU the job's process sees
    index = int(cuda.group(1) or 0)
    if index >= count:
        raise config_error("device", value, f"Only {count} GPUs are visible here",
                           f"Use device=cuda:0 .. cuda:{count - 1}, or device=auto.")
    if index != 0:
        raise config_error("device", value, "llmcompressor calibrates on the first visible GPU (cuda:0), so this "
                           "job would quantize on cuda:0 and evaluate on another GPU",
                           f"Run the job with `python -m qexp device={value}` (which makes that GPU the only one "
                           "the job sees), or start Python with CUDA_VISIBLE_DEVICES=<that GPU> and use device=cuda.")
    return value


def _check_group_size(cfg: DictConfig, model_path: str, cache_dir: Path) -> None:
    """Group quantization needs every quantized layer's input width divisible by the group size.

    llmcompressor only finds out after loading the model; the model's config is enough.
    """
    group_size = cfg.quant.group_size
    if group_size is None:
        return
    widths = widths_to_check(models.config_path(model_path), list(cfg.quant.ignore), cache_dir,
                             lambda: models.linear_input_widths(model_path))
    bad = {name: w for name, w in widths.items() if w % group_size}
    if bad:
        common = math.gcd(*widths.values())
        valid = [g for g in (16, 32, 64, 128, 256) if common % g == 0] or [common]
        name, width = next(iter(bad.items()))
        raise config_error(
            "quant.group_size", group_size,
            f"The group size does not divide the input width of {len(bad)} quantized layers "
            f"(e.g. {name}: {width}) of model {cfg.model.path}",
            f"Use a group size that divides every width: {valid} (e.g. quant.group_size={valid[-1]}), "
            "or list those layers in quant.ignore.",
        )


def _check_speed_length(cfg: DictConfig, model_path: str) -> None:
    """The speed phase's sequences (prompt plus output tokens) must fit the model's context."""
    config = json.loads(models.config_path(model_path).read_text())
    limit = config.get("text_config", config).get("max_position_embeddings")
    length = cfg.speed.prompt_tokens + cfg.speed.output_tokens
    if limit and length > limit:
        raise config_error("speed.output_tokens", cfg.speed.output_tokens,
                           f"speed.prompt_tokens + speed.output_tokens = {length} tokens exceed the model's context "
                           f"({limit} tokens, max_position_embeddings of {cfg.model.path})",
                           "Lower speed.prompt_tokens or speed.output_tokens.")


def _identity(cfg: DictConfig, model_path: str, plan: TaskPlan, calib_path: Path | None,
              speed: SpeedPlan | None) -> dict:
    """What the config hash covers: `calib_path` is the calibration file, None when nothing calibrates;
    `speed` the speed phase's plan, None when there is none."""
    evaluation = {
        "tasks": list(cfg.eval.tasks),
        "num_fewshot": cfg.eval.num_fewshot,
        "limit": cfg.eval.limit,
        "seed": cfg.seed,
        "data": plan.data_fingerprints() or "hub",
        "own_data": {task: path.name for task, path in sorted(plan.own.items())},
        "dtype": cfg.eval.dtype,  # resolved by _resolve_per_device
    }
    model = models.model_fingerprint(str(cfg.model.path), model_path)
    measured = speed.identity if speed is not None else None
    if cfg.quant.name == identity.BASELINE:  # nothing is quantized, so model.dtype changes nothing
        return identity.identity(model=model, dtype=None, eval=evaluation, speed=measured)
    calib = None if calib_path is None else {
        "n": cfg.calib.n, "seed": cfg.calib.seed, "max_seq_length": cfg.calib.max_seq_length,
        "source": cfg.calib.source,
        "file": [calib_path.name, calib_path.stat().st_size, file_sha256(calib_path)[:16]]}
    quant = OmegaConf.to_container(cfg.quant)
    quant.pop("offload_device", None)  # where activations wait does not change the checkpoint
    return identity.identity(model=model, dtype=cfg.model.dtype, eval=evaluation, quant=quant, calib=calib,
                             speed=measured)


def _resolve_per_device(cfg: DictConfig, device: str) -> None:
    """Settings whose default depends on the device get their value for this one, so the logged
    config says what the run used.

    - eval.batch_size null: lm-eval's `auto` on CUDA (the largest batch that fits); 8 on CPU,
      where `auto` spends minutes probing.
    - quant.offload_device auto (AWQ): `cpu` on a GPU, where caching every layer's inputs would
      take an estimated ~30 GB (not yet measured) for Qwen3-4B at 512 x 2048 tokens; `none` on CPU.
    - eval.dtype auto: `bfloat16` on CUDA and on a CPU with bf16 matrix units, `float32` elsewhere
      (`eval_dtype`). Unlike the two above it changes scores, so the resolved value is in the eval
      identity: a bf16 and a float32 evaluation never pass for each other.
    """
    on_gpu = device.startswith("cuda")
    with read_write(cfg):
        if cfg.eval.batch_size is None:
            cfg.eval.batch_size = "auto" if on_gpu else 8
        if cfg.quant.name == "awq" and cfg.quant.offload_device == "auto":
            cfg.quant.offload_device = "cpu" if on_gpu else "none"
        if cfg.eval.dtype == "auto":
            cfg.eval.dtype = eval_dtype(device)


def eval_dtype(device: str, cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """What `eval.dtype=auto` means on `device`: bfloat16 where matrix units compute it natively
    (every CUDA GPU qexp targets; a CPU with AMX-BF16 or AVX512-BF16, where oneDNN runs bf16
    matmuls about 2x faster than float32), float32 elsewhere (bf16 emulated is slower)."""
    if device.startswith("cuda"):
        return "bfloat16"
    features = describe_device("cpu", cpuinfo)["features"]
    return "bfloat16" if {"AMX-BF16", "AVX512-BF16"} & set(features) else "float32"


# ----------------------------------------------------------------------------- prepare
def prepare(cfg: DictConfig, pinned: str | None = None) -> RunSpec:
    """Validate the whole config, cheapest checks first; raise ConfigError on the first problem.

    `pinned`: the device the job's process is pinned to (`gpus.pin`), when that is not this
    process (a sweep checks its first job before the launcher starts it); else this process's.
    """
    cfg = validate(cfg)
    cache_dir = Path(cfg.paths.cache_dir).expanduser() if cfg.paths.cache_dir else default_cache_dir()
    _check_values(cfg, cache_dir)
    device = _device(cfg.device, pinned or gpus.pinned())
    _resolve_per_device(cfg, device)
    speed = plan_speed(cfg, "cuda" if device.startswith("cuda") else "cpu",
                       None if cfg.quant.name == identity.BASELINE else str(cfg.quant.scheme))
    is_baseline = cfg.quant.name == identity.BASELINE
    calibrates = identity.calibrated(cfg.quant.name)

    # Reads files, but no weights.
    models.check_model_path(cfg.model.path)
    calib_path = samples = None
    if calibrates or heldout.TASK in cfg.eval.tasks:
        calib_path = calibration.source_path(cfg.calib.source, cfg.calib.path)
    if calibrates:
        samples = calibration.select(calibration.load_conversations(calib_path), cfg.calib.n, cfg.calib.seed)
    own = {}
    if heldout.TASK in cfg.eval.tasks:
        own[heldout.TASK] = heldout.write_data(calib_path, cfg.eval.heldout_docs, cfg.eval.heldout_max_chars,
                                               cache_dir)
    plan = plan_tasks(list(cfg.eval.tasks), cfg.eval.data_dir, cache_dir, own, cfg.eval.num_fewshot)
    model_path = models.resolve_model(cfg.model.path, cache_dir)
    if not is_baseline:
        _check_group_size(cfg, model_path, cache_dir)
    if speed is not None:
        _check_speed_length(cfg, model_path)

    ident = _identity(cfg, model_path, plan, calib_path if calibrates else None, speed)
    checkpoint = None
    if not is_baseline:
        root = Path(cfg.paths.checkpoint_dir or cache_dir / "checkpoints").expanduser()
        checkpoint = identity.checkpoint_folder(root, cfg.model.name, cfg.quant.name, cfg.calib.n, ident)
    return RunSpec(cfg=cfg, model_path=model_path, plan=plan, calib_path=calib_path if calibrates else None,
                   calibration=samples, cache_dir=cache_dir, output_dir=Path(cfg.paths.output_dir), device=device,
                   identity=ident, checkpoint=checkpoint, speed=speed)

