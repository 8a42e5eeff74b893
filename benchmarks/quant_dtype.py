"""What quantizing in bfloat16 instead of float32 changes: the time, the checkpoint and the scores.

    python benchmarks/quant_dtype.py [--out DIR] [--quant awq] [--limit 500]

Quantizes SmolLM2-135M (conf/experiment/smollm2_study.yaml, `--quant` W4A16 at 16 ShareGPT
samples) twice through `python -m qexp`: loaded in model.dtype=float32, then in bfloat16, each
into its own MLflow experiment of one store and its own checkpoint folder under DIR (so neither
reuses a checkpoint made earlier), and evaluates both the same way (eval.dtype=auto, `--limit`
documents per task on the real packaged data plus the held-out ShareGPT perplexity).

Prints each quantization's wall time (`perf/quant_seconds`) and peak RSS; how far apart the two
checkpoints are, per kind of quantized layer (the share of weights with the same 4-bit code, and
the distance between the weights transformers decompresses); then, from benchmarks/eval_dtype.py,
each task's score in both with its paired McNemar test, the average's equivalence test within ±1
point and the held-out bits per byte. `--report-only` prints these again from an earlier `--out`.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from eval_dtype import DTYPES, compare
from record import tee  # docs/results/: this script's output


def sweep(out: Path, dtype: str, quant: str, limit: int) -> float:
    command = [sys.executable, "-m", "qexp", "-m", "+experiment=smollm2_study", f"quant={quant}", "calib.n=16",
               f"eval.limit={limit}", f"model.dtype={dtype}", f"paths.checkpoint_dir={out / 'checkpoints' / dtype}",
               f"tracking.experiment=quant-{dtype}"]
    print("$", " ".join(command[1:]), flush=True)
    started = time.perf_counter()
    subprocess.run(command, cwd=out, check=True)
    return time.perf_counter() - started


def linear_weights(path: str) -> dict[str, np.ndarray]:
    """The float32 weight of every quantized Linear layer of a checkpoint, decompressed by transformers."""
    import torch
    from transformers import AutoModelForCausalLM, CompressedTensorsConfig

    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32,
                                                 quantization_config=CompressedTensorsConfig(run_compressed=False))
    return {name: module.weight.detach().float().numpy().copy() for name, module in model.named_modules()
            if isinstance(module, torch.nn.Linear) and name != "lm_head"}


def codes(path: str) -> dict[str, np.ndarray]:
    """Each quantized layer's 4-bit codes, unpacked from its int32 words (eight codes a word)."""
    from safetensors import safe_open

    out = {}
    for shard in sorted(Path(path).glob("*.safetensors")):
        with safe_open(shard, "pt") as tensors:  # torch: the scales may be bfloat16, which numpy lacks
            for name in tensors.keys():
                if name.endswith(".weight_packed"):
                    words = tensors.get_tensor(name).numpy().astype(np.uint32)
                    out[name.removesuffix(".weight_packed")] = np.stack([(words >> (4 * i)) & 0xF for i in range(8)], -1)
    return out


def checkpoints(paths: dict[str, str]) -> str:
    """Per layer kind, how far the bf16-made checkpoint is from the float32-made one: the share of
    weights with the same 4-bit code, and the distance between the decompressed weights. (AWQ also
    folds its smoothing scales into the layers before, so equal codes need not mean equal weights.)"""
    weights = {dtype: linear_weights(path) for dtype, path in paths.items()}
    packed = {dtype: codes(path) for dtype, path in paths.items()}
    kinds: dict[str, list] = {}
    for name, w_f in weights["float32"].items():
        w_b = weights["bfloat16"][name]
        c_f, c_b = packed["float32"][name], packed["bfloat16"][name]
        kinds.setdefault(name.rsplit(".", 1)[-1], []).append(
            (np.sum(c_f == c_b), c_f.size, np.sum((w_b - w_f) ** 2), np.sum(w_f ** 2)))
    lines = ["| layers | weights | same 4-bit code | ‖bf16-made − fp32-made‖ / ‖fp32-made‖ |", "|---|---|---|---|"]
    for kind, rows in sorted(kinds.items()) + [("all", [r for rows in kinds.values() for r in rows])]:
        same, size, apart, norm = (sum(column) for column in zip(*rows))
        lines.append(f"| {kind} | {size:,} | {same / size:.1%} | {np.sqrt(apart / norm):.3f} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="folder for the store and outputs (default: temporary)")
    parser.add_argument("--quant", default="awq", help="the 4-bit method (a conf/quant/ name)")
    parser.add_argument("--limit", type=int, default=500, help="documents per task")
    parser.add_argument("--report-only", action="store_true", help="only print the comparison of an earlier --out")
    args = parser.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="qexp-quant-dtype-"))
    out.mkdir(parents=True, exist_ok=True)
    walls = {}
    if not args.report_only:
        walls = {dtype: sweep(out, dtype, args.quant, args.limit) for dtype in DTYPES}

    from qexp.compare.data import load_study
    from qexp.contract import METRICS, TAGS
    from qexp.tracking import Store

    uri = f"sqlite:///{out / 'mlruns' / 'mlflow.db'}"
    studies = {dtype: load_study(uri, f"quant-{dtype}") for dtype in DTYPES}
    labels = [label for label in studies["float32"].labels if label != studies["float32"].baseline]
    paths = {}
    for dtype, study in studies.items():
        store = Store.open(uri, f"quant-{dtype}", create=False)
        for label in labels:
            paths[dtype, label] = store.get_run(study.runs.loc[label, "run_id"]).tags[TAGS.CHECKPOINT_PATH]

    print(f"\nSmolLM2-135M, {args.quant} W4A16 at 16 samples, quantized in float32 and in bfloat16; "
          f"{args.limit} documents per task, eval=packaged"
          + "".join(f"; {d} sweep {w / 60:.1f} min" for d, w in walls.items()) + "\n")
    times = ["| run | model.dtype | quantize s | peak RSS GB |", "|---|---|---|---|"]
    for label in labels:
        for dtype, study in studies.items():
            run = study.runs.loc[label]
            times.append(f"| {label} | {dtype} | {run[METRICS.QUANT_SECONDS]:.0f} | {run[METRICS.PEAK_RSS_MB] / 1024:.1f} |")
    print("\n".join(times) + "\n")
    for label in labels:
        print(f"{label}: the two checkpoints, layer by layer\n")
        print(checkpoints({d: paths[d, label] for d in DTYPES}) + "\n")
    print(compare(studies, labels, times=False))  # both evaluated in the same dtype: times say nothing here
    return 0


if __name__ == "__main__":
    with tee("quant_dtype", markdown=True):  # docs/results/quant_dtype.md
        status = main()
    sys.exit(status)
