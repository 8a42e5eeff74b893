"""GPTQ and AWQ at Qwen3-4B's real size, through qexp's own quantization and evaluation code.

    python benchmarks/gpu_study.py --samples 64 128                 # on a GPU machine
    python benchmarks/gpu_study.py --layers 1 --samples 2 4 --seq-len 64 --device cpu   # smoke run
    # the test's run: narrower too, in float32 (CPUs without bfloat16 units are slow at it)
    python benchmarks/gpu_study.py --layers 1 --samples 1 2 --hidden-size 1024 --intermediate-size 3072 \
        --vocab-size 131072 --dtype float32 --device cpu

No download: the model is built here with Qwen3-4B's exact architecture (hidden 2560, 36
layers, 32 query / 8 key-value heads of 128, intermediate 9728, vocabulary 151,936, tied
embeddings) and random weights, on the device, with qexp's byte-level tokenizer; so every
matrix has the real shape and accuracy means nothing. Calibration samples are synthetic
conversations rendered with the chat template and cut at `--seq-len` tokens (2048, as in
the study), so every sample is exactly that long.

For each method and sample count it runs `qexp.quantization.quantize` (the `quant` phase),
and for each method's largest sample count `qexp.evaluation.evaluate` on qexp's fixture
tasks (the `eval` phase), each measured like a qexp run (`qexp.perf.PhaseMemory`): wall
time, peak GPU memory allocated, peak RSS, and GPU memory and RSS still held after the
phase, once memory was released. From two or more sample counts it extrapolates the
`quant` phase to `--target` samples (512), linear in the sample count. On a GPU each checkpoint
is evaluated by both lm-eval backends (`--eval-backends`): `eval` (transformers) and `eval-vllm`
(lm-eval's vllm backend in vLLM's environment, as `eval.backend=vllm` runs it, engine start
included), so the first GPU this project is lent says which is faster there.

Then (unless `--no-speed`) the `speed` phase of `qexp.speed`: the unquantized model and each
method's largest checkpoint served by vLLM (the `vllm` wheel on a GPU, in qexp's environment
under its cache, or `--vllm-python`): output tokens per second at batch 1 and 16, time to first
token, time per output token, load time and peak GPU memory, medians of 5 repetitions with their
range, and the kernel vLLM chose. Where vLLM cannot be had (no registry, no `--vllm-python`), each
speed row says why and the other figures stand.

Imports only what quantization and evaluation need (torch, transformers, llmcompressor,
compressed-tensors, lm-eval, qexp): no MLflow, no Hydra. `--json PATH` writes the figures.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # qexp from this checkout, installed or not

from qexp.calibration import Conversation  # noqa: E402
from qexp.perf import PhaseMemory  # noqa: E402

# Qwen/Qwen3-4B's config.json, the parts that give every tensor its shape.
QWEN3_4B = dict(
    hidden_size=2560,
    intermediate_size=9728,
    num_hidden_layers=36,
    num_attention_heads=32,
    num_key_value_heads=8,
    head_dim=128,
    vocab_size=151936,
    max_position_embeddings=40960,
    rope_theta=1000000.0,
    rms_norm_eps=1e-6,
    tie_word_embeddings=True,
)

# The study's presets (conf/quant/gptq.yaml, awq.yaml with model=qwen3_4b); a unit test checks
# that they match what `python -m qexp model=qwen3_4b quant=...` composes.
QUANT = {
    "gptq": dict(name="gptq", scheme="W4A16", group_size=128, targets=["Linear"], ignore=["lm_head"],
                 block_size=128, dampening_frac=0.01, actorder="static"),
    "awq": dict(name="awq", scheme="W4A16_ASYM", group_size=128, targets=["Linear"], ignore=["lm_head"],
                duo_scaling=True, n_grid=20, offload_device="cpu"),
}

EVAL_TASKS = ["arc_easy", "hellaswag"]
WORDS = ("the model weights quantize group scale zero point layer calibration sample token hidden "
         "state attention head matrix vector error loss grid search smooth activation channel").split()


def build_model(folder: Path, shape: dict, dtype: str, device: str) -> None:
    """A random-weight Qwen3 with Qwen3-4B's shapes, but for what `shape` changes (the number of
    layers, for a quick run the widths), made on `device`, saved in `dtype`."""
    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM

    from qexp.models import build_byte_tokenizer

    tokenizer = build_byte_tokenizer()
    config = Qwen3Config(**{**QWEN3_4B, **shape},
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, bos_token_id=None)
    torch.manual_seed(0)
    with torch.device(device):
        model = Qwen3ForCausalLM._from_config(config, dtype=getattr(torch, dtype))
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)


def conversations(n: int, chars: int) -> list[Conversation]:
    """`n` synthetic two-turn conversations of at least `chars` characters (one byte-level token each)."""
    rng = random.Random(0)

    def text(length: int) -> str:
        words: list[str] = []
        while sum(len(w) + 1 for w in words) < length:
            words.append(rng.choice(WORDS))
        return " ".join(words)

    return [Conversation(f"synthetic-{i}", (("user", text(chars // 2)), ("assistant", text(chars // 2))))
            for i in range(n)]


def measure(memory: PhaseMemory, phase: str, work) -> dict:
    started = time.perf_counter()
    with memory.phase(phase):
        work()
    return {"seconds": time.perf_counter() - started, **memory.phases[phase]}


def extrapolate(points: list[tuple[int, float]], target: int) -> float | None:
    """Least-squares line through (samples, value), read at `target`; None from fewer than two counts.

    A figure that did not grow with the sample count (a negative slope: noise, or a cost that
    does not depend on n) is projected as its largest measured value.
    """
    if len({n for n, _ in points}) < 2:
        return None
    mean_n = sum(n for n, _ in points) / len(points)
    mean_v = sum(v for _, v in points) / len(points)
    slope = (sum((n - mean_n) * (v - mean_v) for n, v in points)
             / sum((n - mean_n) ** 2 for n, _ in points))
    return mean_v + slope * (target - mean_n) if slope > 0 else max(v for _, v in points)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, nargs="+", default=[64, 128], help="calibration sample counts")
    parser.add_argument("--target", type=int, default=512, help="sample count to extrapolate the quant phase to")
    parser.add_argument("--methods", nargs="+", choices=sorted(QUANT), default=["gptq", "awq"])
    parser.add_argument("--layers", type=int, default=QWEN3_4B["num_hidden_layers"],
                        help="decoder layers (36 is Qwen3-4B; fewer for a quick run)")
    parser.add_argument("--hidden-size", type=int, default=QWEN3_4B["hidden_size"],
                        help="model width (2560 is Qwen3-4B; a multiple of 128 for the group size)")
    parser.add_argument("--intermediate-size", type=int, default=QWEN3_4B["intermediate_size"],
                        help="MLP width (9728 is Qwen3-4B; a multiple of 128)")
    parser.add_argument("--vocab-size", type=int, default=QWEN3_4B["vocab_size"],
                        help="embedding rows (151,936 is Qwen3-4B; at least the byte tokenizer's 259)")
    parser.add_argument("--dtype", choices=["bfloat16", "float32"], default="bfloat16",
                        help="weights and activations (the study's bfloat16; float32 for a quick CPU run)")
    parser.add_argument("--seq-len", type=int, default=2048, help="tokens per calibration sample")
    parser.add_argument("--awq-offload", choices=["cpu", "none"], default="cpu",
                        help="quant.offload_device for AWQ (qexp's default on a GPU is cpu)")
    parser.add_argument("--eval-limit", type=int, default=20, help="documents per evaluation task")
    parser.add_argument("--no-eval", action="store_true", help="measure quantization only")
    parser.add_argument("--eval-backends", nargs="+", choices=["hf", "vllm"], default=None,
                        help="lm-eval backends to evaluate each checkpoint with (default: both on a GPU, where "
                             "which is faster is to be measured; hf on a CPU)")
    parser.add_argument("--no-speed", action="store_true", help="skip the speed phase (vLLM)")
    parser.add_argument("--vllm-python", default=None,
                        help="a Python that has vLLM (default: qexp builds vLLM's environment under its cache)")
    parser.add_argument("--speed-batch-sizes", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--device", default=None, help="cuda (default when available) or cpu")
    parser.add_argument("--workdir", type=Path, default=None, help="where the model and checkpoints go")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    parser.add_argument("--library-log", type=Path, default=Path("gpu_study.libraries.log"),
                        help="where the libraries' progress bars and warnings go ('-': the terminal)")
    args = parser.parse_args(argv)
    if str(args.library_log) == "-":
        return study(args)
    with open(args.library_log, "w", encoding="utf-8") as sink, contextlib.redirect_stderr(sink):
        return study(args)


def study(args: argparse.Namespace) -> int:
    import torch

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        print("--device cuda, but torch sees no CUDA device", file=sys.__stderr__)
        return 2
    memory = PhaseMemory.for_device(device)
    figures = {"device": device, "card": torch.cuda.get_device_name() if device.startswith("cuda") else "CPU",
               "torch": torch.__version__, "layers": args.layers, "hidden_size": args.hidden_size,
               "intermediate_size": args.intermediate_size, "vocab_size": args.vocab_size,
               "dtype": args.dtype, "seq_len": args.seq_len, "rows": [],
               "extrapolated": []}
    print(f"device: {device} ({figures['card']}); torch {torch.__version__}; {args.layers} layers of width "
          f"{args.hidden_size} (MLP {args.intermediate_size}), vocabulary {args.vocab_size:,}, {args.dtype}; "
          f"{args.seq_len}-token samples; n = {args.samples}", flush=True)

    def record(method: str, n: int, phase: str, work) -> None:
        """Run and measure one phase; print it and save the figures so far (a run cut short keeps them)."""
        row = {"method": method, "n": n, "phase": phase, **measure(memory, phase, work)}
        figures["rows"].append(row)
        _print(row)
        _save(args.json, figures)

    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        work = Path(tmp)
        model_path = work / "qwen3-4b-shaped"
        shape = {"num_hidden_layers": args.layers, "hidden_size": args.hidden_size,
                 "intermediate_size": args.intermediate_size, "vocab_size": args.vocab_size}
        record("-", 0, "build", lambda: build_model(model_path, shape, args.dtype, device))
        for method in args.methods:
            settings = dict(QUANT[method])
            if method == "awq":
                settings["offload_device"] = args.awq_offload  # replaces the preset's
            q = SimpleNamespace(**settings)
            for n in sorted(args.samples):
                out = work / f"{method}-{n}"
                record(method, n, "quant", lambda: _quantize(model_path, q, n, args.seq_len, args.dtype, out))
            if not args.no_eval:
                checkpoint = work / f"{method}-{max(args.samples)}"
                for backend in args.eval_backends or (["hf", "vllm"] if device.startswith("cuda") else ["hf"]):
                    record(method, max(args.samples), "eval" if backend == "hf" else f"eval-{backend}",
                           lambda: _evaluate(checkpoint, device, args.eval_limit, args.dtype, work / "cache", backend,
                                             args.vllm_python))
        if not args.no_speed:
            for method, n, folder in [("none", 0, model_path)] + [(m, max(args.samples), work / f"{m}-{max(args.samples)}")
                                                                   for m in args.methods]:
                row = {"method": method, "n": n, "phase": "speed", **_speed(folder, device, args, work)}
                figures["rows"].append(row)
                print(f"speed {method:>4} n={n:<4} " + (row["note"] or ", ".join(
                    f"{k.split('/', 1)[1]} {v:,.1f}" for k, v in row.items() if k.startswith("speed/")
                    and not k.endswith(("_min", "_max")))) + f" [{row['kernel'] or row['status']}]", flush=True)
                _save(args.json, figures)

    for method in args.methods:
        quant = [r for r in figures["rows"] if r["method"] == method and r["phase"] == "quant"]
        projection = {"method": method, "n": args.target}
        for key in ("seconds", "peak_gpu_mb", "peak_rss_mb"):
            if quant and key in quant[0]:
                projection[key] = extrapolate([(r["n"], r[key]) for r in quant], args.target)
        figures["extrapolated"].append(projection)
        if projection.get("seconds") is not None:
            print(f"{method} quant at n={args.target} (linear in n from n={sorted(args.samples)}): "
                  + ", ".join(f"{k} {v:,.0f}" for k, v in projection.items()
                              if k not in ("method", "n") and v is not None), flush=True)
    _save(args.json, figures)
    return 0


def _save(path: Path | None, figures: dict) -> None:
    if path is not None:
        path.write_text(json.dumps(figures, indent=2))


def _quantize(model_path: Path, q, n: int, seq_len: int, dtype: str, out: Path) -> None:
    from qexp.quantization import quantize

    quantize(str(model_path), conversations(n, 2 * seq_len), q, dtype=dtype, max_seq_length=seq_len, out=out)


def _evaluate(checkpoint: Path, device: str, limit: int, dtype: str, cache_dir: Path, backend: str = "hf",
              vllm_python: str | None = None) -> None:
    """lm-eval on the checkpoint with `backend`: hf (transformers, in this process) or vllm (lm-eval's vllm
    backend in vLLM's environment, as eval.backend=vllm runs it; its engine start is part of the time)."""
    from qexp.evaluation import evaluate, plan_tasks
    from qexp.fixtures import FIXTURES_DIR
    from qexp.speed.environment import PACKAGES, VLLM_VERSION
    from qexp.speed.plan import installed_vllm
    from qexp.speed.served import ServedPlan

    kind = "cuda" if device.startswith("cuda") else "cpu"
    served = None
    if backend == "vllm":
        package, version = installed_vllm(vllm_python) if vllm_python else (PACKAGES[kind], VLLM_VERSION)
        served = ServedPlan(device_kind=kind, python=vllm_python, package=package, version=version, w4a8=False,
                            enforce_eager=False)
    plan = plan_tasks(EVAL_TASKS, FIXTURES_DIR, cache_dir)
    evaluate(checkpoint, plan, dtype=dtype, device=device, num_fewshot=0, limit=limit,
             batch_size="auto" if kind == "cuda" else 8, seed=0, cache_dir=cache_dir, served=served,
             log_path=Path("gpu_study.vllm_eval.log").resolve())


def _speed(model: Path, device: str, args: argparse.Namespace, work: Path) -> dict:
    """The speed phase of a qexp run (`qexp.speed`), on `model`, with conf/speed/vllm.yaml's settings."""
    from omegaconf import OmegaConf

    from qexp.files import default_cache_dir
    from qexp.speed import measure_checkpoint, plan_speed

    settings = OmegaConf.load(Path(__file__).resolve().parents[1] / "conf" / "speed" / "vllm.yaml")
    settings.pop("defaults", None)
    settings.update({"batch_sizes": args.speed_batch_sizes, "dtype": args.dtype, "python": args.vllm_python})
    plan = plan_speed(OmegaConf.create({"speed": settings}), "cuda" if device.startswith("cuda") else "cpu", None)
    outcome = measure_checkpoint(str(model), [str(model)], plan, cache_dir=default_cache_dir(),
                                 workdir=work / "speed" / model.name, log_path=Path("gpu_study.speed.log").resolve(),
                                 job=model.name, show_progress=False)
    return {"status": outcome.status, "note": outcome.note, "kernel": outcome.labels.get("kernel", ""),
            "path": outcome.labels.get("path", ""), "device_label": outcome.labels.get("device", ""),
            **outcome.metrics}


def _print(row: dict) -> None:
    figures = ", ".join(f"{k} {row[k]:,.1f}" for k in ("seconds", "peak_gpu_mb", "held_gpu_mb", "peak_rss_mb",
                                                       "held_rss_mb") if k in row)
    print(f"{row['phase']:>5} {row['method']:>4} n={row['n']:<4} {figures}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
