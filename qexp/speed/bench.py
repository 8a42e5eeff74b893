"""The measurement itself, run by vLLM's own interpreter (qexp is not importable there).

    <vllm python> bench.py <settings.json> <result.json>

Loads the checkpoint once, then times, after `warmup` untimed passes, `repetitions` passes of:
batch 1 with one output token (time to first token: the prefill), batch 1 with
`output_tokens` tokens (time per output token: the rest over the other tokens), and each batch
size in `batch_sizes` (output tokens per second, end to end, prefill included). Every prompt is
`prompt_tokens` tokens of fixed English text, distinct per sequence, prefix caching off, greedy,
end-of-sequence ignored: each pass does exactly the same work. Writes every repetition's times;
qexp takes medians and spreads. Progress goes to stdout as `wire.progress_line`s. The files' shapes are
`wire.BenchSettings` and `wire.BenchResult`. Only the standard library, vLLM and `wire` (beside this file)
are used here.
"""

from __future__ import annotations

import sys
import time

from wire import (BATCH_1_FULL, FIRST_TOKEN, BenchResult, BenchSettings, batch_series, die_with_parent,
                  kv_bytes_per_token, progress_line)

TEXT = ("The history of measurement is the history of agreement: a length, a weight or a second means "
        "something only when two people who never met obtain the same number for it. ")


def _prompts(tokenizer, count: int, length: int) -> list[list[int]]:
    """`count` distinct prompts of exactly `length` token ids (a number first, so no two share a prefix)."""
    out = []
    for i in range(count):
        ids: list[int] = tokenizer.encode(f"{i}. " + TEXT * 4, add_special_tokens=False)
        while len(ids) < length:
            ids += tokenizer.encode(TEXT, add_special_tokens=False)
        out.append(ids[:length])
    return out


def _kv_cache_bytes(model: str, tokens: int, dtype_bytes: int) -> int | None:
    """The KV cache the workload needs (every sequence of the largest batch at full length), with
    headroom, from the model's config; None when the config does not say (vLLM's default then)."""
    sized = kv_bytes_per_token(model, dtype_bytes)
    if sized is None:
        return None
    return max(int(sized[0] * tokens * 1.25), 64 * 2**20)


def main(settings_path: str, result_path: str) -> None:
    die_with_parent()
    s = BenchSettings.read(settings_path)
    total = s.warmup + s.repetitions
    batches = [b for b in s.batch_sizes if b != 1]  # batch 1's pass is the full batch-1 pass
    steps, done = total * (2 + len(batches)), 0

    def progress() -> None:
        nonlocal done
        done += 1
        print(progress_line(done, steps), flush=True)

    import vllm
    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt

    largest = max(s.batch_sizes)
    max_len = s.prompt_tokens + s.output_tokens
    kv = _kv_cache_bytes(s.model, largest * max_len, 2 if s.dtype in ("bfloat16", "float16") else 4)
    started = time.perf_counter()
    llm = LLM(model=s.model, dtype=s.dtype, max_model_len=max_len, max_num_seqs=largest,
              max_num_batched_tokens=max(largest * max_len, 2048), enable_prefix_caching=False, seed=0,
              enforce_eager=s.enforce_eager, kv_cache_memory_bytes=kv)
    load_seconds = time.perf_counter() - started

    prompts = _prompts(llm.get_tokenizer(), largest, s.prompt_tokens)

    def timed(batch: int, tokens: int) -> float:
        params = SamplingParams(max_tokens=tokens, min_tokens=tokens, ignore_eos=True, temperature=0.0)
        begin = time.perf_counter()
        outputs = llm.generate([TokensPrompt(prompt_token_ids=p) for p in prompts[:batch]], params, use_tqdm=False)
        seconds = time.perf_counter() - begin
        produced = [len(o.outputs[0].token_ids) for o in outputs]
        if produced != [tokens] * batch:
            raise RuntimeError(f"asked for {tokens} tokens per sequence, vLLM produced {produced}")
        return seconds

    runs: dict[str, list[float]] = {FIRST_TOKEN: [], BATCH_1_FULL: [], **{batch_series(b): [] for b in batches}}
    for rep in range(total):
        times = {FIRST_TOKEN: timed(1, 1)}
        progress()
        times[BATCH_1_FULL] = timed(1, s.output_tokens)
        progress()
        for b in batches:
            times[batch_series(b)] = timed(b, s.output_tokens)
            progress()
        if rep >= s.warmup:
            for key, value in times.items():
                runs[key].append(value)
    BenchResult(vllm.__version__, load_seconds, kv, runs).write(result_path)


if __name__ == "__main__":  # vLLM starts its engine with spawn: the module must be importable
    main(sys.argv[1], sys.argv[2])
