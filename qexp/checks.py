"""What a config's types cannot say, checked before anything loads: values and ranges, the device
this process can honour, and what the model's config file settles (group sizes, context length)."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from . import heldout, identity, models
from .errors import at_least, config_error, one_of
from .quantization import check_scheme, widths_to_check
from .tracking import check_uri

__all__ = ["DTYPES", "check_values", "device", "check_group_size", "check_speed_length"]

DTYPES = ("float32", "bfloat16", "float16")


def _at_least(cfg: DictConfig, key: str, minimum: int, fix: str) -> None:
    at_least(key, OmegaConf.select(cfg, key), minimum, fix)


def _one_of(cfg: DictConfig, key: str, choices: tuple, fix: str | None = None) -> None:
    one_of(key, OmegaConf.select(cfg, key), choices, fix)


def _names(cfg: DictConfig, key: str, fix: str, allow_empty: bool = True) -> None:
    items = list(OmegaConf.select(cfg, key))
    if not all(items) or (not items and not allow_empty):
        raise config_error(key, items, "Expected a list of names", fix)


def check_values(cfg: DictConfig, cache_dir: Path) -> None:
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
    _one_of(cfg, "eval.order", ("dataset", "shuffled"))
    _sequential(cfg)
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


def _sequential(cfg: DictConfig) -> None:
    """eval.sequential: looks need a budget to split and a random sample to split it in."""
    looks = cfg.eval.sequential.looks
    _at_least(cfg, "eval.sequential.looks", 0, "Set eval.sequential.looks to 0 (fixed size) or a number of "
              "chunks, e.g. 10.")
    futility = cfg.eval.sequential.futility
    if isinstance(futility, bool) or not isinstance(futility, (int, float)) or not 0 <= futility < 1:
        raise config_error("eval.sequential.futility", futility, "Expected a probability in [0, 1)",
                           "Set eval.sequential.futility to e.g. 0.05, or 0 to spend the whole budget on "
                           "every undecided comparison.")
    if not looks:
        if cfg.eval.sequential.per_task:
            raise config_error("eval.sequential.per_task", "true", "Deciding each task needs a sequential evaluation",
                               "Set eval.sequential.looks to a number of chunks, e.g. 10, or drop "
                               "eval.sequential.per_task=true.")
        return
    if cfg.eval.limit is None:
        raise config_error("eval.limit", None, "A sequential evaluation needs a budget of documents per task",
                           "Set eval.limit to the most documents a run may use, e.g. eval.limit=500.")
    if looks > cfg.eval.limit:
        raise config_error("eval.sequential.looks", looks, f"More looks than documents per task "
                           f"(eval.limit={cfg.eval.limit})", "Set eval.sequential.looks to at most eval.limit, e.g. 10.")
    if cfg.eval.order != "shuffled":
        raise config_error("eval.order", cfg.eval.order, "A sequential evaluation needs a random sample: the first "
                           "documents of a task follow the dataset's order", "Add eval.order=shuffled.")
    _at_least(cfg, "eval.sequential.comparisons", 1, "Set eval.sequential.comparisons to the number of quantized "
              "runs the study compares with the baseline, or null (the sweep's).")
    margin = cfg.eval.sequential.margin
    if isinstance(margin, bool) or not isinstance(margin, (int, float)) or not margin > 0:
        raise config_error("eval.sequential.margin", margin, "Expected a positive number of points",
                           "Set eval.sequential.margin to the largest difference that does not matter, e.g. 1.0.")


def device(value: str, pinned: str | None) -> str:
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


def check_group_size(cfg: DictConfig, model_path: str, cache_dir: Path) -> None:
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


def check_speed_length(cfg: DictConfig, model_path: str) -> None:
    """The speed phase's sequences (prompt plus output tokens) must fit the model's context."""
    config = json.loads(models.config_path(model_path).read_text())
    limit = config.get("text_config", config).get("max_position_embeddings")
    length = cfg.speed.prompt_tokens + cfg.speed.output_tokens
    if limit and length > limit:
        raise config_error("speed.output_tokens", cfg.speed.output_tokens,
                           f"speed.prompt_tokens + speed.output_tokens = {length} tokens exceed the model's context "
                           f"({limit} tokens, max_position_embeddings of {cfg.model.path})",
                           "Lower speed.prompt_tokens or speed.output_tokens.")
