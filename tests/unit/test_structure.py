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
    # speed/harness.py: lm-eval's vllm backend, run by vLLM's own interpreter for evaluation.py (eval.backend=vllm)
    "lm-eval": (r"^\s*(import|from) lm_eval\b", "evaluation.py", "speed/harness.py"),
}


@pytest.mark.parametrize("library", sorted(ADAPTERS))
def test_library_is_used_in_its_adapter_only(library):
    pattern, *adapters = ADAPTERS[library]
    inside = [path for adapter in adapters for path in _sources(adapter)]
    offenders = _matches(pattern, [path for path in _sources() if path not in inside])
    assert offenders == [], f"{library} outside {adapters}"
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


# ----------------------------------------------------------------------------- layering
def _imports() -> dict[str, set[str]]:
    """Module -> the qexp modules it imports (at the top, inside functions, or for type checking alike)."""
    import ast

    def name_of(path: Path) -> str:
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)

    modules = {name_of(path): path for path in _sources()}
    graph: dict[str, set[str]] = {}
    for module, path in modules.items():
        package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                base = package.split(".")[:len(package.split(".")) - node.level + 1] if node.level else []
                target = ".".join(base + ([node.module] if node.module else []))
                names = [f"{target}.{alias.name}" for alias in node.names]
                found |= {n for n in names if n in modules}
                if any(n not in modules for n in names) and target in modules:
                    found.add(target)
            elif isinstance(node, ast.Import):
                found |= {alias.name for alias in node.names if alias.name in modules}
        graph[module] = found - {module}
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str]:
    """One import cycle, or [] when the modules can be stacked on floors with every import pointing down."""
    state: dict[str, int] = {}  # 1: on the path, 2: done
    path: list[str] = []

    def visit(module: str) -> list[str]:
        state[module] = 1
        path.append(module)
        for target in sorted(graph[module]):
            if state.get(target) == 1:
                return path[path.index(target):] + [target]
            if target not in state and (found := visit(target)):
                return found
        state[module] = 2
        path.pop()
        return []

    for module in sorted(graph):
        if module not in state and (found := visit(module)):
            return found
    return []


def test_no_import_circles():
    """Every import points down a floor: a type two modules share lives below both (`task_plan`,
    `compare.contents`, `files.CONF_DIR`), never in one of them."""
    graph = _imports()
    assert "qexp.pipeline" in graph["qexp.job"]  # the graph is read
    assert _cycle(graph) == []
    assert _cycle({"a": {"b"}, "b": {"a"}}) == ["a", "b", "a"]  # and a circle would be found


# The floors, from the ground up: a module may import its own floor's modules and those below, never above.
# Tools (entry points) stand on top and nothing imports them.
FLOORS = {
    "ground": ["qexp.errors", "qexp.contract", "qexp.files", "qexp.console", "qexp.signals", "qexp.outcome",
               "qexp.fixtures", "qexp.compare.stats", "qexp.speed.bench", "qexp.speed.device", "qexp.speed.wire"],
    "adapters": ["qexp.tracking", "qexp.calibration", "qexp.identity", "qexp.wheels", "qexp.gpus", "qexp.progress",
                 "qexp.config_errors", "qexp.sweep_jobs", "qexp.models", "qexp.packaged", "qexp.heldout",
                 "qexp.quantization", "qexp.task_plan", "qexp.mirrors", "qexp.evaluation", "qexp.schema",
                 "qexp.speed", "qexp.perf", "qexp.checks", "qexp.cli"],
    "report": ["qexp.compare"],
    "job": ["qexp.spec", "qexp.stopping", "qexp.shuffled", "qexp.records", "qexp.summary", "qexp.baseline",
            "qexp.callbacks", "qexp.pipeline"],
    "tools": ["qexp.job", "qexp.__main__", "qexp.cleanup", "qexp.compare.__main__", "qexp.compare.plan",
              "qexp.reference"],
}


def _floor(module: str) -> int:
    """The floor of a module: its own entry in FLOORS, else its package's."""
    for name in (module, *(module.rsplit(".", n)[0] for n in range(1, module.count(".") + 1))):
        for number, members in enumerate(FLOORS.values()):
            if name in members:
                return number
    raise AssertionError(f"{module} is on no floor: add it to FLOORS in {__file__}")


def test_imports_point_down_the_floors():
    """The job is built on the adapters and the report, never the other way round: `tracking` and `evaluation`
    know nothing of a sweep, `compare` nothing of quantization or of how a job runs."""
    graph = _imports()
    upward = [f"{m} -> {t}" for m, targets in graph.items() for t in targets if _floor(t) > _floor(m)]
    assert upward == []
    tools = set(FLOORS["tools"])
    assert [f"{m} -> {t}" for m, targets in graph.items() for t in targets & tools if m not in tools] == []
