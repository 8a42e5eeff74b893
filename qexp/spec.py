"""From a composed config to a `RunSpec`: everything checked, everything found, nothing loaded.

`prepare(cfg)` runs two passes. The first checks values only: the config against the schema (a
config built by hand, or keys added with `+key=`, get the same one-line errors as composition),
then what a type cannot say (`checks.check_values`, `speed.check_speed_values`) and the device;
nothing is read but the cached table of schemes. The second resolves what the values name, in
order of cost: the model's path, the calibration file and its selection, the held-out data, lm-eval's
task index and the dataset mirrors, the model's config (group sizes, context length), and last the
interpreter `speed.python` names (a subprocess). No weights are read. The spec carries what was
found on the way (the calibration selection, the task plan, the held-out data file) and the
identity that names the result.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig, OmegaConf, read_write

from . import calibration, checks, gpus, heldout, identity, models
from .calibration import Conversation
from .evaluation import TaskPlan, plan_tasks
from .files import default_cache_dir, digest, file_sha256
from .schema import validate
from .speed import SpeedPlan, plan_speed
from .speed.plan import check_speed_values
from .speed.device import describe as describe_device
from .speed.served import ServedPlan, plan_backend

__all__ = ["RunSpec", "prepare", "baseline_config"]


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
    served: ServedPlan | None = None  # how the run is evaluated in vLLM; None with eval.backend=hf

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
    def sequential(self) -> bool:
        """Evaluated in chunks, stopping once decided against the baseline (eval.sequential.looks > 0)."""
        return bool(self.cfg.eval.sequential.looks)

    @property
    def eval_hash(self) -> str:
        return digest(identity.eval_identity(self.identity))


def baseline_config(cfg: DictConfig) -> DictConfig:
    """The same model and evaluation, unquantized."""
    base = OmegaConf.to_container(cfg, resolve=True)
    base["quant"] = {"name": identity.BASELINE}
    return OmegaConf.create(base)


def _identity(cfg: DictConfig, model_path: str, plan: TaskPlan, calib_path: Path | None,
              speed: SpeedPlan | None, served: ServedPlan | None = None) -> dict:
    """What the config hash covers: `calib_path` is the calibration file, None when nothing calibrates;
    `speed` the speed phase's plan, None when there is none; `served` the evaluation's in vLLM, if any."""
    evaluation = {
        "tasks": list(cfg.eval.tasks),
        "num_fewshot": cfg.eval.num_fewshot,
        "limit": cfg.eval.limit,
        "seed": cfg.seed,
        "data": plan.data_fingerprints() or "hub",
        "own_data": {task: path.name for task, path in sorted(plan.own.items())},
        "dtype": cfg.eval.dtype,  # resolved by _resolve_per_device
    }
    # Named only when not the defaults, so a fixed-size study's identity (and its resume) is as it was.
    if cfg.eval.order != "dataset":
        evaluation["order"] = cfg.eval.order
    if cfg.eval.sequential.looks:
        evaluation["sequential"] = {"looks": cfg.eval.sequential.looks, "margin": float(cfg.eval.sequential.margin),
                                    "comparisons": cfg.eval.sequential.comparisons or 1}
        if cfg.eval.sequential.per_task:  # named only when asked: the average-only identity is as it was
            evaluation["sequential"]["per_task"] = True
        if cfg.eval.sequential.futility:  # named only when used: a study without it keeps its identity
            evaluation["sequential"]["futility"] = float(cfg.eval.sequential.futility)
    if served is not None:
        evaluation["backend"] = served.identity
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
    """Validate the whole config, values first, then what they name by cost; ConfigError on the first problem.

    `pinned`: the device the job's process is pinned to (`gpus.pin`), when that is not this
    process (a sweep checks its first job before the launcher starts it); else this process's.
    """
    # 1. Values: nothing is read or run.
    cfg = validate(cfg)
    cache_dir = Path(cfg.paths.cache_dir).expanduser() if cfg.paths.cache_dir else default_cache_dir()
    checks.check_values(cfg, cache_dir)
    device = checks.device(cfg.device, pinned or gpus.pinned())
    device_kind = "cuda" if device.startswith("cuda") else "cpu"
    check_speed_values(cfg.speed, device_kind)
    _resolve_per_device(cfg, device)
    is_baseline = cfg.quant.name == identity.BASELINE
    calibrates = identity.calibrated(cfg.quant.name)

    # 2. Resources, cheapest first: files and configs, no weights; a subprocess last.
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
        checks.check_group_size(cfg, model_path, cache_dir)
    if cfg.speed.name != "none":
        checks.check_speed_length(cfg, model_path)
    speed = plan_speed(cfg, device_kind, None if is_baseline else str(cfg.quant.scheme))
    served = plan_backend(cfg, device_kind, None if is_baseline else str(cfg.quant.scheme))

    ident = _identity(cfg, model_path, plan, calib_path if calibrates else None, speed, served)
    checkpoint = None
    if not is_baseline:
        root = Path(cfg.paths.checkpoint_dir or cache_dir / "checkpoints").expanduser()
        checkpoint = identity.checkpoint_folder(root, cfg.model.name, cfg.quant.name, cfg.calib.n, ident)
    return RunSpec(cfg=cfg, model_path=model_path, plan=plan, calib_path=calib_path if calibrates else None,
                   calibration=samples, cache_dir=cache_dir, output_dir=Path(cfg.paths.output_dir), device=device,
                   identity=ident, checkpoint=checkpoint, speed=speed, served=served)

