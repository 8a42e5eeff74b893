"""Small file helpers every module shares: the cache folder, atomic writes, JSON Lines, digests.

Anything qexp writes that another process may read (a cached model, a checkpoint, a task
index) is written under a temporary name and renamed once complete, so a reader never sees
half a file and a killed writer leaves nothing that looks finished.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

__all__ = ["CONF_DIR", "default_cache_dir", "digest", "file_sha256", "atomic_file", "write_atomic", "atomic_folder", "read_jsonl",
           "jsonl_text", "write_jsonl", "cached_json"]

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"  # the Hydra config tree qexp composes


def default_cache_dir() -> Path:
    """Built models, task overrides, checkpoints: `$QEXP_CACHE_DIR`, else `~/.cache/qexp`."""
    return Path(os.environ.get("QEXP_CACHE_DIR") or Path.home() / ".cache" / "qexp")


def digest(value: Any, length: int = 16) -> str:
    """A short sha256 of bytes, text, or anything JSON can encode (keys sorted, so order-insensitive)."""
    if isinstance(value, str):
        value = value.encode()
    elif not isinstance(value, bytes):
        value = json.dumps(value, sort_keys=True, default=str).encode()
    return hashlib.sha256(value).hexdigest()[:length]


def file_sha256(path: Path) -> str:
    """The sha256 of a file's content, read in chunks (weights run to gigabytes) and computed once per
    version of the file (its size and modification time) in this process."""
    path = Path(path).resolve()
    stat = path.stat()
    return _file_sha256(str(path), stat.st_size, stat.st_mtime_ns)


def cached_json(path: Path, compute: Callable[[], Any]) -> Any:
    """`compute()`'s JSON value, kept at `path`: read when there, else computed and written
    atomically (a cache that cannot be written costs the computation next time, nothing else).
    The caller puts everything the value depends on into the file's name."""
    with contextlib.suppress(OSError, ValueError):
        return json.loads(Path(path).read_text(encoding="utf-8"))
    value = compute()
    with contextlib.suppress(OSError):
        write_atomic(path, json.dumps(value))
    return value


@functools.lru_cache(maxsize=256)
def _file_sha256(path: str, size: int, mtime_ns: int) -> str:
    sha = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 24), b""):
            sha.update(chunk)
    return sha.hexdigest()


def _temporary(final: Path) -> Path:
    return final.with_name(f".{final.name}.tmp-{os.getpid()}")


@contextlib.contextmanager
def atomic_file(final: Path) -> Iterator[Path]:
    """Yield a temporary sibling of `final` to write; it replaces `final` when the block succeeds."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temporary(final)
    try:
        yield tmp
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    tmp.replace(final)


def write_atomic(path: Path, text: str) -> Path:
    """Write `text` to `path` through a temporary sibling and a rename."""
    with atomic_file(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


@contextlib.contextmanager
def atomic_folder(final: Path, replace: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling of `final` to fill; rename it to `final` when the block succeeds.

    When `final` appeared meanwhile (a parallel job built the same thing), theirs is kept,
    unless `replace` asks for ours. On an exception the temporary folder is removed.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temporary(final)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if replace and final.exists():
        shutil.rmtree(final)
    try:
        tmp.rename(final)
    except OSError:  # another process finished first; keep theirs
        shutil.rmtree(tmp, ignore_errors=True)


def read_jsonl(path: Path) -> list[dict]:
    """JSON Lines split on newlines only (`str.splitlines` would also split on U+2028 in the text)."""
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").split("\n") if line.strip()]


def jsonl_text(records: Iterable[Any]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)


def write_jsonl(path: Path, records: Iterable[Any]) -> Path:
    return write_atomic(path, jsonl_text(records))
