"""Each library is reached through its one adapter, so a version change touches one file."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "qexp"

# library -> (pattern of a direct use, the one module or package allowed to use it)
ADAPTERS = {
    "mlflow": (r"^\s*(import|from) mlflow\b|MlflowClient|\bclient\.\w+\(", "tracking"),
    "llmcompressor": (r"^\s*(import|from) (llmcompressor|compressed_tensors)\b", "quantization.py"),
    "lm-eval": (r"^\s*(import|from) lm_eval\b", "evaluation.py"),
}


@pytest.mark.parametrize("library", sorted(ADAPTERS))
def test_library_is_used_in_its_adapter_only(library):
    pattern, adapter = ADAPTERS[library]
    inside = _sources(adapter)
    offenders = _matches(pattern, [path for path in _sources() if path not in inside])
    assert offenders == [], f"{library} outside qexp/{adapter}"
    assert _matches(pattern, inside)  # the pattern does find uses


def _sources(under: str = ".") -> list[Path]:
    """The package's modules: all of them, those of a subpackage, or the one module `under` names."""
    root = PACKAGE / under
    return [root] if root.is_file() else sorted(root.rglob("*.py")) if root.is_dir() else [root.with_suffix(".py")]


def _matches(pattern: str, paths: list[Path]) -> list[str]:
    return [f"{path.relative_to(PACKAGE)}:{number}: {line.strip()}" for path in paths
            for number, line in enumerate(path.read_text().splitlines(), 1) if re.search(pattern, line)]


# MLflow's run model: `run.info.<field>` and `run.data.<params|metrics|tags>`.
MLFLOW_RUN_FIELDS = r"\.info\.(run_id|run_name|status|start_time|end_time|lifecycle_stage|experiment_id)\b|\.data\.(params|metrics|tags)\b"


def test_no_module_outside_tracking_reads_an_mlflow_run():
    """The store hands out qexp's `RunRecord`s: a change of MLflow's run model touches `qexp.tracking` only."""
    inside = _sources("tracking")
    assert _matches(MLFLOW_RUN_FIELDS, [path for path in _sources() if path not in inside]) == []
    assert _matches(MLFLOW_RUN_FIELDS, inside)  # the pattern does find the reads where they belong


# A metric name written out: "perf/...", "speed/...", "average/...", f"{task}/acc", f"{x}/bits_per_byte".
METRIC_LITERAL = r"[\"'](perf|speed|average|recovery)/|\}/(acc|acc_norm|bits_per_byte|word_perplexity|n_samples)\b"


def test_metric_names_come_from_the_contract():
    """One place names the metrics (`qexp.contract.METRICS`); the rest of the package uses it."""
    contract = PACKAGE / "contract.py"
    assert _matches(METRIC_LITERAL, [path for path in _sources() if path != contract]) == []
    assert _matches(METRIC_LITERAL, [contract])


def test_the_contract_imports_without_mlflow():
    import subprocess
    import sys

    code = "import sys, qexp.contract; assert 'mlflow' not in sys.modules, 'mlflow imported'"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True).returncode == 0


MAX_LINES = 350


def test_every_module_has_one_job_that_fits_in_a_few_pages():
    sizes = {str(path.relative_to(PACKAGE)): len(path.read_text().splitlines()) for path in _sources()}
    assert {name: lines for name, lines in sizes.items() if lines > MAX_LINES} == {}


def test_every_tag_the_package_writes_is_named_in_TAGS():
    from qexp.tracking import TAGS

    named = {v for k, v in vars(TAGS).items() if k.isupper()}
    literals = {m for path in PACKAGE.rglob("*.py") for m in re.findall(r"[\"'](qexp\.[a-z_]+)[\"']", path.read_text())}
    assert literals <= named, f"tag names written as literals: {sorted(literals - named)}"
