"""The manual builds without a warning, every page is in its navigation, and the README's links land."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
LINK = re.compile(r"\]\(([^)#\s]+)(#[^)\s]*)?\)")


def test_the_manual_builds_strictly(tmp_path):
    """`mkdocs build --strict`: a broken link, a missing page or a bad anchor fails the build."""
    build = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                           cwd=ROOT, capture_output=True, text=True, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert build.returncode == 0, build.stderr
    assert (tmp_path / "site" / "report" / "index.html").is_file()


def test_every_page_is_in_the_navigation():
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    listed = {next(iter(entry.values())) for entry in config["nav"]}
    assert listed == {path.name for path in (ROOT / "docs").glob("*.md")}


def test_the_readmes_relative_links_point_at_files():
    readme = (ROOT / "README.md").read_text()
    targets = [target for target, _ in LINK.findall(readme) if "://" not in target]
    assert targets, "the README links to the manual"
    assert [t for t in targets if not (ROOT / t).exists()] == []
    assert len(readme.splitlines()) < 200  # a screen or two; the rest is the manual's
