"""The SmolLM2 study's checkpoints evaluated by both lm-eval backends: transformers (`eval.backend=hf`) and the
serving runtime (`eval.backend=vllm`), on the same documents; their agreement, paired tests and wall times.

    python benchmarks/backend_parity.py [--out DIR] [--resume] [overrides ...]

Runs `+experiment=smollm2_study` (its tasks, each task's first 500 documents, the real data) three times, each
with an answers cache that starts empty, so every time is a first-time cost (models, checkpoints and data come
from the usual cache: a checkpoint already quantized is reused; this compares evaluations):

1. `eval.backend=hf`: the baseline, RTN, GPTQ-32, AWQ-32 and W8A8-32, in DIR/hf;
2. `eval.backend=vllm`: the same, in DIR/vllm (vLLM's own environment, built once under the usual cache);
3. `eval.backend=vllm eval.vllm.w4a8=true`: GPTQ-32 (W4A16) through vLLM's CPU W4A8 path, in DIR/w4a8 (it
   shares the second sweep's answers, so its baseline costs an engine start only).

Then prints, per run and task: each backend's accuracy, the share of documents both score alike, the exact
McNemar test between the backends, and over the average the paired difference (vLLM - hf) with its 95%
interval and the equivalence test within ±1 point (two one-sided tests); each backend's evaluation seconds;
held-out perplexity per backend. `--resume` reuses a sweep whose store is already in DIR.
"""

from __future__ import annotations

import argparse
import math
import tempfile
from pathlib import Path

import numpy as np

from record import tee  # docs/results/backend_parity.md
from sequential_study import sweep

RUNS = ["quant=rtn,gptq,awq,w8a8", "calib.n=32"]
MARGIN = 0.01  # ±1 point: the equivalence margin of the study's report


def _equivalence_p(delta: float, se: float, margin: float = MARGIN) -> float:
    """Two one-sided z-tests that the difference lies within ±margin: the larger p-value."""
    from scipy.stats import norm

    if se == 0:
        return 0.0 if abs(delta) < margin else 1.0
    return float(max(norm.sf((delta + margin) / se), norm.cdf((delta - margin) / se)))


def compare(a_study, b_study, a_label: str, b_label: str, tasks: list[str]) -> tuple[list[dict], dict]:
    """Per task, run `a_label` of `a_study` against `b_label` of `b_study` on the documents both scored; and
    over the average of tasks, the paired difference b - a."""
    from qexp.compare.stats import mcnemar_exact, weighted_mean_differences

    rows, n, sum_d, sum_sq = [], [], [], []
    for task in tasks:
        a, b = a_study.correctness(task)[a_label], b_study.correctness(task)[b_label]
        both = a.notna() & b.notna().reindex(a.index, fill_value=False)
        x, y = a[both].to_numpy(), b.reindex(a.index)[both].to_numpy()
        test = mcnemar_exact(x, y)
        d = y - x
        n.append(len(d)), sum_d.append(d.sum()), sum_sq.append((d * d).sum())
        rows.append({"task": task, "n": len(d), "a": 100 * x.mean(), "b": 100 * y.mean(),
                     "agree": 100 * float(np.mean(x == y)), "a_only": test.a_only, "b_only": test.b_only,
                     "p": test.p_value})
    avg = weighted_mean_differences(np.array([n]), np.array([sum_d]), np.array([sum_sq]))
    delta, se = float(avg["delta"][0]), float(avg["se"][0])
    return rows, {"delta": 100 * delta, "low": 100 * float(avg["ci_low"][0]), "high": 100 * float(avg["ci_high"][0]),
                  "p": float(avg["p_value"][0]), "equivalence_p": _equivalence_p(delta, se)}


def _loglikelihoods(store: Path, study, label: str, task: str) -> dict[int, list[float]]:
    """Per document, the log-likelihood of each choice as lm-eval logged it (`filtered_resps`)."""
    import json

    path = store / "artifacts" / study.runs.loc[label, "run_id"] / "artifacts" / "lm_eval" / "samples" / f"{task}.jsonl"
    out = {}
    for line in path.read_text().splitlines():
        record = json.loads(line)
        out[record["doc_id"]] = [float(r[0] if isinstance(r, list) else r) for r in record["filtered_resps"]]
    return out


def why(out: Path, a_name: str, a, b_name: str, b, label: str, tasks: list[str]) -> list[str]:
    """How far apart the two backends' log-likelihoods are, and whether the answers that differ were near-ties."""
    lines = []
    stores = {"hf": out / "hf" / "mlruns", "vLLM": out / "vllm" / "mlruns", "vLLM W4A8": out / "w4a8" / "mlruns"}
    for task in tasks:
        x = _loglikelihoods(stores[a_name], a, label, task)
        y = _loglikelihoods(stores[b_name], b, label, task)
        shared = [d for d in x if d in y and len(x[d]) == len(y[d])]
        diffs = np.concatenate([np.abs(np.subtract(x[d], y[d])) for d in shared])
        flipped = [d for d in shared if len(x[d]) > 1 and int(np.argmax(x[d])) != int(np.argmax(y[d]))]

        def gap(d):  # how far A's best choice was ahead of its second
            top = sorted(x[d], reverse=True)
            return top[0] - top[1]

        gaps = [gap(d) for d in shared if len(x[d]) > 1]
        lines.append(f"| {label} | {a_name} | {b_name} | {task} | {np.median(diffs):.3f} | {np.percentile(diffs, 99):.3f} "
                     f"| {len(flipped)} | {np.median([gap(d) for d in flipped]) if flipped else math.nan:.3f} | "
                     f"{np.median(gaps) if gaps else math.nan:.3f} |")
    return lines


def report(out: Path) -> None:
    from qexp.compare import load_study
    from qexp.contract import METRICS

    hf, vllm = (load_study(f"sqlite:///{out / name / 'mlruns' / 'mlflow.db'}", "qexp") for name in ("hf", "vllm"))
    w4a8 = load_study(f"sqlite:///{out / 'w4a8' / 'mlruns' / 'mlflow.db'}", "qexp")
    tasks = hf.tasks
    print(f"Tasks: {', '.join(tasks)}; each task's first 500 documents (fewer where it has fewer); eval.dtype "
          f"{hf.settings[hf.baseline].get('eval dtype', hf.settings[hf.baseline].get('dtype', '?'))}.\n")
    pairs = [(label, hf, label, vllm, "vLLM") for label in hf.labels if label in vllm.labels]
    pairs += [(label, hf, label, w4a8, "vLLM W4A8") for label in w4a8.labels if label != w4a8.baseline]
    pairs += [(label, vllm, label, w4a8, "vLLM W4A8") for label in w4a8.labels if label != w4a8.baseline]
    print("#### Per run: the average over tasks (B - A, points), A and B on the same documents\n")
    print("| run | A | B | A avg | B avg | scored alike | Δ avg [95%] | p | equivalent ±1 (p) | A eval s | B eval s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    details = []
    for label, a, b_label, b, b_name in pairs:
        a_name = "hf" if a is hf else "vLLM"
        rows, avg = compare(a, b, label, b_label, tasks)
        agree = sum(r["agree"] * r["n"] for r in rows) / sum(r["n"] for r in rows)
        seconds = [s.runs.loc[label_, METRICS.EVAL_SECONDS] for s, label_ in ((a, label), (b, b_label))]
        print(f"| {label} | {a_name} | {b_name} | {np.mean([r['a'] for r in rows]):.1f} | "
              f"{np.mean([r['b'] for r in rows]):.1f} | {agree:.1f}% | {avg['delta']:+.2f} "
              f"[{avg['low']:+.2f}, {avg['high']:+.2f}] | {avg['p']:.3g} | "
              f"{'yes' if avg['equivalence_p'] < 0.05 else 'no'} ({avg['equivalence_p']:.3g}) | "
              f"{seconds[0]:.0f} | {seconds[1]:.0f} |")
        details.append((label, a_name, b_name, rows))
    print("\n#### Per task: accuracy, agreement and the exact McNemar test between the backends\n")
    print("| run | A | B | task | n | A acc | B acc | scored alike | only A right | only B right | McNemar p |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for label, a_name, b_name, rows in details:
        for r in rows:
            print(f"| {label} | {a_name} | {b_name} | {r['task']} | {r['n']} | {r['a']:.1f} | {r['b']:.1f} | "
                  f"{r['agree']:.1f}% | {r['a_only']} | {r['b_only']} | {r['p']:.3g} |")
    print("\n#### Why answers differ: log-likelihoods of the same choices (nats), and the argmax flips\n")
    print("| run | A | B | task | median abs Δ log-likelihood | 99th percentile | argmax differs | A's gap, those docs "
          "(median) | A's gap, all docs (median) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for label, a, b_label, b, b_name in pairs:
        for line in why(out, "hf" if a is hf else "vLLM", a, b_name, b, label, tasks):
            print(line)
    print("\n#### Resolution of the log-likelihoods: documents whose choices tie exactly, values on a 1/64 grid\n")
    print("| backend | run | task | tied choices | on the 1/64 grid |")
    print("|---|---|---|---|---|")
    for name, study in (("hf", hf), ("vLLM", vllm)):
        for label in (hf.baseline, "GPTQ-32"):
            for task in tasks:
                ll = _loglikelihoods(out / ("hf" if name == "hf" else "vllm") / "mlruns", study, label, task)
                choices = [v for v in ll.values() if len(v) > 1]
                if not choices:
                    continue
                tied = np.mean([len(set(v)) < len(v) for v in choices])
                grid = np.mean([abs(x * 64 - round(x * 64)) < 1e-9 for v in ll.values() for x in v])
                print(f"| {name} | {label} | {task} | {100 * tied:.1f}% | {100 * grid:.1f}% |")
    print("\n#### Held-out perplexity (word perplexity, lower is better)\n")
    print("| run | hf | vLLM | vLLM W4A8 |")
    print("|---|---|---|---|")
    for label in hf.labels:
        cells = []
        for study in (hf, vllm, w4a8):
            values = [study.runs.loc[label].get(METRICS.task(t, "word_perplexity"), math.nan)
                      if label in study.labels else math.nan for t in study.perplexity_tasks]
            cells.append(" ".join(f"{v:.2f}" for v in values if not math.isnan(v)) or "–")
        print(f"| {label} | " + " | ".join(cells) + " |")
    print("\n#### What computed each accuracy (qexp.eval_backend, qexp.eval_path)\n")
    for name, study in (("hf", hf), ("vllm", vllm), ("w4a8", w4a8)):
        for label in study.labels:
            run = study.runs.loc[label]
            print(f"- {name} {label}: {run.get('eval_backend')}: {run.get('eval_path')}")
    seconds = {name: float(np.nansum([s.runs.loc[label, METRICS.EVAL_SECONDS] for label in hf.labels
                                      if label in s.labels])) for name, s in (("hf", hf), ("vllm", vllm))}
    print(f"\nEvaluation wall time, all {len(hf.labels)} runs: hf {seconds['hf'] / 60:.1f} min, vLLM "
          f"{seconds['vllm'] / 60:.1f} min (vLLM's engine start and graph compilation included, once per run).")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="folder for the stores, outputs and answers (default: temporary)")
    parser.add_argument("--resume", action="store_true", help="reuse a sweep whose store is already in --out")
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides")
    args = parser.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="qexp-backends-"))
    for name, overrides in (("hf", [*RUNS, "eval.backend=hf"]), ("vllm", [*RUNS, "eval.backend=vllm"]),
                            ("w4a8", ["quant=gptq", "calib.n=32", "eval.backend=vllm", "eval.vllm.w4a8=true"])):
        cache = out / "vllm" / "cache" if name == "w4a8" else None
        code = sweep(out / name, [*overrides, *args.overrides], name, args.resume, cache)
        if code:
            return code
    with tee("backend_parity", markdown=True):
        report(out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
