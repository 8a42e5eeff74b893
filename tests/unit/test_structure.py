"""Each library is reached through its one adapter, so a version change touches one file."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "qexp"

# library -> (pattern of a direct use, the one module allowed to use it)
ADAPTERS = {
    "mlflow": (r"^\s*(import|from) mlflow\b|MlflowClient|\bclient\.\w+\(", "tracking.py"),
    "llmcompressor": (r"^\s*(import|from) (llmcompressor|compressed_tensors)\b", "quantization.py"),
    "lm-eval": (r"^\s*(import|from) lm_eval\b", "evaluation.py"),
}


@pytest.mark.parametrize("library", sorted(ADAPTERS))
def test_library_is_used_in_its_adapter_only(library):
    pattern, adapter = ADAPTERS[library]
    offenders = [
        f"{path.relative_to(PACKAGE)}:{number}: {line.strip()}"
        for path in sorted(PACKAGE.rglob("*.py")) if path.relative_to(PACKAGE) != Path(adapter)
        for number, line in enumerate(path.read_text().splitlines(), 1) if re.search(pattern, line)
    ]
    assert offenders == [], f"{library} outside qexp/{adapter}"
    assert re.search(pattern, (PACKAGE / adapter).read_text(), re.MULTILINE)  # the pattern does find uses


def test_every_tag_the_package_writes_is_named_in_TAGS():
    from qexp.tracking import TAGS

    named = {v for k, v in vars(TAGS).items() if k.isupper()}
    literals = {m for path in PACKAGE.rglob("*.py") for m in re.findall(r"[\"'](qexp\.[a-z_]+)[\"']", path.read_text())}
    assert literals <= named, f"tag names written as literals: {sorted(literals - named)}"
