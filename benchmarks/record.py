"""Where a benchmark's figures go: `docs/results/<name>.md`, which the manual includes as it is.

Each file starts with the date, the machine and the command that wrote it, then holds the script's own
output. A rerun replaces the file and the manual follows; nobody types a measured figure.

    from record import Recorder
    out = Recorder("fresh_clone", argv)   # the command line, as it was run
    out.print("...")                      # printed, and kept for the file
    out.write()                           # docs/results/fresh_clone.md
"""

from __future__ import annotations

import contextlib
import datetime
import os
import platform
import shlex
import subprocess
import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parents[1] / "docs" / "results"


def machine() -> str:
    """`2 cores, 23.4 GiB, AMD EPYC 9B14 (AVX512-BF16, no AMX)`: what the speed of any figure depends on."""
    model, flags = platform.processor() or platform.machine(), set()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
            elif line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
    bf16 = ("AMX-BF16" if "amx_bf16" in flags else "AVX512-BF16, no AMX" if "avx512_bf16" in flags
            else "no bf16 instructions")
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{os.cpu_count()} cores, {memory:.1f} GiB, {model} ({bf16})"


def commit() -> str:
    root = Path(__file__).resolve().parents[1]
    found = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    return found.stdout.strip() or "unknown"


class Recorder:
    """A benchmark's output, printed as it comes and written to `docs/results/<name>.md` at the end."""

    def __init__(self, name: str, argv: list[str] | None = None):
        self.name, self.lines = name, []
        argv = sys.argv if argv is None else argv
        self.command = "python " + shlex.join([os.path.relpath(argv[0]) if argv and argv[0].endswith(".py") else "",
                                               *argv[1:]]).strip()
        self.started = datetime.datetime.now(datetime.timezone.utc)

    def print(self, text: str = "") -> None:
        print(text, flush=True)
        self.lines.append(text)

    def write(self, path: Path | None = None, markdown: bool = False) -> Path:
        """The file: its header, then the output as a code block, or as it is where the output is Markdown."""
        path = path or RESULTS / f"{self.name}.md"
        path.parent.mkdir(parents=True, exist_ok=True)
        header = (f"Measured {self.started:%Y-%m-%d} on {machine()}, commit {commit()}, by "
                  f"`{self.command}`:\n\n")
        body = "\n".join(self.lines).rstrip()
        path.write_text(header + (body + "\n" if markdown else "```\n" + body + "\n```\n"))
        return path


class _Tee:
    def __init__(self, stream, lines: list[str]):
        self.stream, self.lines, self.partial = stream, lines, ""

    def write(self, text: str) -> int:
        self.stream.write(text)
        self.partial += text
        *done, self.partial = self.partial.split("\n")
        self.lines.extend(done)
        return len(text)

    def flush(self) -> None:
        self.stream.flush()

    def __getattr__(self, name: str):  # isatty, fileno, encoding...: the terminal's
        return getattr(self.stream, name)


@contextlib.contextmanager
def tee(name: str, markdown: bool = False):
    """Everything the block prints goes to the terminal and, when the block ends without an error, to
    `docs/results/<name>.md` (see `Recorder.write`): a benchmark's whole output, as it printed it."""
    out = Recorder(name)
    stream = _Tee(sys.stdout, out.lines)
    with contextlib.redirect_stdout(stream):
        yield out
    if stream.partial:
        out.lines.append(stream.partial)
    print(f"wrote {out.write(markdown=markdown)}", file=sys.stderr)
