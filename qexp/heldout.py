"""`sharegpt_heldout`: perplexity on ShareGPT conversations that no calibration selection uses.

qexp writes the task's data (the first `eval.heldout_docs` reserved conversations as plain
text, JSON Lines) and its lm-eval YAML; lm-eval runs it like any other task.
"""

from __future__ import annotations

import json
from pathlib import Path

from . import calibration
from .files import digest, jsonl_text, write_atomic

__all__ = ["TASK", "write_data", "task_yaml"]

TASK = "sharegpt_heldout"


def write_data(source: Path, docs: int, max_chars: int, cache_dir: Path) -> Path:
    """Write the held-out conversations once; the file name hashes what they are."""
    held = calibration.heldout(calibration.load_conversations(source), docs)
    text = jsonl_text({"id": c.id, "text": calibration.plain_text(c, max_chars)} for c in held)
    path = Path(cache_dir) / "heldout" / f"sharegpt-{digest(text)}.jsonl"
    if not path.is_file():
        write_atomic(path, text)
    return path


def task_yaml(task: str, data_file: Path) -> str:
    """Perplexity on held-out text: lm-eval's rolling log-likelihood over whole documents."""
    return (
        f"task: {task}\n"
        "dataset_path: json\n"
        "dataset_kwargs:\n"
        "  data_files:\n"
        f"    test: {json.dumps(str(data_file))}\n"
        "output_type: loglikelihood_rolling\n"
        "test_split: test\n"
        'doc_to_text: ""\n'
        'doc_to_target: "{{text}}"\n'
        "metric_list:\n"
        "  - metric: word_perplexity\n"
        "  - metric: byte_perplexity\n"
        "  - metric: bits_per_byte\n"
        "metadata:\n"
        "  version: 1.0\n"
    )
