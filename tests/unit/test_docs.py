"""The manual builds without a warning, its reference is generated from the code, every figure comes from
an output file, and every key, flag, module and file the manual and the README name exists."""

from __future__ import annotations

import ast
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
LINK = re.compile(r"\]\(([^)#\s]+)(#[^)\s]*)?\)")
PAGES = sorted(p for p in DOCS.rglob("*.md") if "results" not in p.parts)
WRITTEN = [*PAGES, ROOT / "README.md"]  # what people type (results/ is what scripts write)


def test_the_manual_builds_strictly(tmp_path):
    """`mkdocs build --strict`: a broken link, a missing page, a bad anchor or a missing included output fails."""
    build = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                           cwd=ROOT, capture_output=True, text=True, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert build.returncode == 0, build.stderr
    config = (tmp_path / "site" / "reference" / "config" / "index.html").read_text()
    assert "quant.dampening_frac" in config and "generated:" not in config  # the marker was filled in
    assert "Measured" in (tmp_path / "site" / "testing" / "index.html").read_text()  # an output file was included


def test_a_missing_output_file_fails_the_build(tmp_path):
    import shutil

    copy = tmp_path / "repo"  # the manual's sources; the hook imports qexp from where it is installed
    shutil.copytree(DOCS, copy / "docs")
    for name in ("mkdocs.yml", "mkdocs_hooks.py"):
        shutil.copy(ROOT / name, copy / name)
    (copy / "docs" / "results" / "fresh_clone.md").unlink()
    build = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                           cwd=copy, capture_output=True, text=True, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert build.returncode != 0 and "fresh_clone.md" in build.stderr


def _nav_pages(entries) -> set[str]:
    out = set()
    for entry in entries:
        value = next(iter(entry.values())) if isinstance(entry, dict) else entry
        out |= _nav_pages(value) if isinstance(value, list) else {value}
    return out


def test_every_page_is_in_the_navigation():
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text().replace("!!python", ""))
    assert _nav_pages(config["nav"]) == {str(p.relative_to(DOCS)) for p in PAGES}


def test_every_included_output_exists_and_says_where_it_came_from():
    included = {m for page in PAGES for m in re.findall(r'--8<-- "([^"]+)"', page.read_text())}
    assert included, "the manual includes measured outputs"
    for name in sorted(included):
        text = (DOCS / name).read_text()
        assert text.startswith(("Measured ", "Pasted from the terminal of `python benchmarks/")), name
        assert "`python " in text.split("\n", 1)[0], f"{name}: its first line names the command"


def test_the_readmes_relative_links_point_at_files():
    readme = (ROOT / "README.md").read_text()
    targets = [target for target, _ in LINK.findall(readme) if "://" not in target]
    assert targets, "the README links to the manual"
    assert [t for t in targets if not (ROOT / t).exists()] == []
    assert len(readme.splitlines()) < 200  # a screen or two; the rest is the manual's


def test_the_readmes_figures_are_the_output_files():
    """GitHub shows the README as it is: its included blocks must equal their files (`python mkdocs_hooks.py`)."""
    sys.path.insert(0, str(ROOT))
    from mkdocs_hooks import INCLUDE, readme_includes

    readme = (ROOT / "README.md").read_text()
    assert INCLUDE.search(readme), "the README includes a measured output"
    assert readme_includes(readme) == readme, "run `python mkdocs_hooks.py` to copy the outputs into the README"


# ----------------------------------------------------------------------------- names that must exist
def _code(path: Path) -> list[str]:
    """The code a page shows: inline spans and the lines of fenced blocks."""
    text = path.read_text()
    blocks = re.findall(r"```[^\n]*\n(.*?)```", text, re.S)
    rest = re.sub(r"```[^\n]*\n.*?```", "", text, flags=re.S)
    return [line for block in blocks for line in block.splitlines()] + re.findall(r"`([^`\n]+)`", rest)


REPO_PATH = re.compile(r"(?<![\w/.])((?:conf|qexp|tests|benchmarks|docs|notebooks|\.ci)/[\w./-]*[\w/])")


def test_every_file_named_exists():
    missing = [f"{page.relative_to(ROOT)}: {found}" for page in WRITTEN for found in REPO_PATH.findall(page.read_text())
               if "<" not in found and "*" not in found and not (ROOT / found).exists()]
    assert missing == []


def test_every_module_named_exists():
    from qexp.contract import TAGS

    tags = {v for k, v in vars(TAGS).items() if k.isupper()}
    missing = []
    for page in WRITTEN:
        for span in _code(page):
            for name in re.findall(r"(?<![\w./-])(qexp(?:\.\w+)+)", span):
                if name not in tags and not _resolves(name):
                    missing.append(f"{page.relative_to(ROOT)}: {name}")
    assert missing == []


def _resolves(dotted: str) -> bool:
    """A module, or a name defined in one (`qexp.compare.plan`, `qexp.contract.TAGS`, `qexp.pipeline.run`)."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        module = ".".join(parts[:cut])
        try:
            found = importlib.util.find_spec(module)
        except ModuleNotFoundError:
            found = None
        if found:
            obj = importlib.import_module(module)
            for attr in parts[cut:]:
                if not hasattr(obj, attr):
                    return False
                obj = getattr(obj, attr)
            return True
    return False


SECTIONS = {"model", "quant", "calib", "eval", "speed", "tracking", "paths", "launcher", "experiment"}


def test_every_config_key_and_option_named_exists():
    """`quant.block_size=...` names a key; `quant=awq,gptq` and `+experiment=...` name options of a group."""
    from qexp.files import CONF_DIR
    from qexp.reference import config_keys

    keys = config_keys()
    top = {key for key in keys if "." not in key}
    wrong = []
    for page in WRITTEN:
        for span in _code(page):
            for key, value in re.findall(r"(?<![\w.$-])\+?([a-z_]+(?:\.[a-z_0-9]+)*)=([^\s`\"')]+)", span):
                head = key.split(".")[0]
                if head not in SECTIONS | top or "<" in value or "..." in value or "$" in value:
                    continue
                if "." in key:
                    ok = key in keys
                elif key in top:
                    ok = True
                else:
                    options = {p.stem for p in (CONF_DIR / key).glob("*.yaml")}
                    ok = set(re.split(r"[,|]", value.strip("[]"))) <= options
                if not ok:
                    wrong.append(f"{page.relative_to(ROOT)}: {key}={value}")
    assert wrong == []


def _script_flags(path: Path) -> set[str]:
    return {node.args[0].value for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "add_argument"
            and node.args and isinstance(node.args[0], ast.Constant) and str(node.args[0].value).startswith("--")}


def test_every_flag_of_a_qexp_command_or_benchmark_exists():
    from qexp.reference import command_flags

    tools = command_flags()
    hydra = {"--cfg", "--help", "--hydra-help", "--multirun", "--config-path", "--config-name", "--info"}
    wrong = []
    for page in WRITTEN:
        for span in _code(page):
            flags = set(re.findall(r"(?<![\w-])--[a-z][a-z-]*", span.split("#")[0]))
            found = re.search(r"python (?:-m (qexp(?:\.[\w.]+)?)|(benchmarks/\w+\.py))", span)
            if not flags or not found:
                continue
            module, script = found.groups()
            known = (_script_flags(ROOT / script) | {"--help"} if script
                     else hydra if module == "qexp" else tools.get(f"python -m {module}", set()))
            wrong += [f"{page.relative_to(ROOT)}: {span.strip()}: {flag}" for flag in sorted(flags - known)]
    assert wrong == []
