"""The manual's generated parts, filled in at build time (mkdocs.yml: `hooks`).

A page holds a marker, `<!-- generated: NAME -->`, where the code's own words go: the configuration keys,
the store's contract, the command lines (`qexp.reference`), each module's and each benchmark's job (their
docstrings' first lines). Measured figures are included from the files their benchmarks write, with
`--8<-- "results/<name>.md"` (pymdownx.snippets, which fails the build when a file is missing).

`python mkdocs_hooks.py` also refreshes the README's included blocks (`<!-- include: FILE -->` ... `<!-- end -->`):
GitHub shows the README as it is, so its figures are copied there from the same files, and a test holds
the copy equal to them.
"""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
MARKER = re.compile(r"<!-- generated: (\w+) -->")
INCLUDE = re.compile(r"(<!-- include: (\S+) -->\n)(.*?)(<!-- end -->)", re.S)


def _first_line(path: Path) -> str:
    doc = ast.get_docstring(ast.parse(path.read_text())) or ""
    return " ".join(doc.split("\n\n")[0].split())


def modules() -> str:
    rows = ["| module | its one job |", "|---|---|"]
    for path in sorted((ROOT / "qexp").rglob("*.py")):
        name = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        rows.append(f"| `{name}` | {_first_line(path)} |")
    return "\n".join(rows)


def benchmarks() -> str:
    rows = ["| script | what it measures |", "|---|---|"]
    rows += [f"| `benchmarks/{path.name}` | {_first_line(path)} |" for path in sorted((ROOT / "benchmarks").glob("*.py"))]
    return "\n".join(rows)


def generated(name: str) -> str:
    from qexp.reference import PAGES

    return {"modules": modules, "benchmarks": benchmarks, **PAGES}[name]()


def on_page_markdown(markdown: str, page, config, files) -> str:
    return MARKER.sub(lambda found: generated(found[1]), markdown)


def readme_includes(text: str) -> str:
    """The README with each included block replaced by its file's content."""
    return INCLUDE.sub(lambda m: m[1] + (ROOT / m[2]).read_text().rstrip() + "\n" + m[4], text)


if __name__ == "__main__":
    readme = ROOT / "README.md"
    readme.write_text(readme_includes(readme.read_text()))
    print("README.md: included blocks refreshed", file=sys.stderr)
