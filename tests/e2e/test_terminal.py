"""What a person sees on a real terminal (a pseudo-terminal): one live line per job, redrawn in place."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import struct
import subprocess
import termios
import time

import pytest

from tests.e2e.conftest import _command

pytestmark = pytest.mark.e2e


def _run_on_a_terminal(command: list[str], cwd, env, timeout: float = 600) -> tuple[int, str]:
    """Run `command` with a 200-column pseudo-terminal as its stdin, stdout and stderr; return its
    exit status and everything it wrote, control characters included."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 200, 0, 0))
    proc = subprocess.Popen(command, cwd=cwd, env=env, stdin=slave, stdout=slave, stderr=slave, close_fds=True)
    os.close(slave)
    written, deadline = b"", time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if select.select([master], [], [], 0.5)[0]:
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # the job closed the terminal
                    break
                if not chunk:
                    break
                written += chunk
            elif proc.poll() is not None:
                break
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
    return proc.wait(), written.decode(errors="replace")


def test_a_job_on_a_terminal_shows_one_live_line_advancing_through_quantization_and_evaluation(tmp_path, cache_dir):
    # calib.n=7: a checkpoint no other test makes, so its evaluation runs instead of reading cached answers;
    # MMLU's 57 fixture subjects: enough requests (one loglikelihood count) for the line to be redrawn while
    # they run (ARC-Easy's fixture alone could finish between two redraws, 0.1 s apart: one frame)
    command, env = _command(("-m", "quant=gptq", "calib.n=7", "model=tiny", "eval=fixtures", "eval.tasks=[arc_easy,mmlu]",
                             "model.max_seq_length=64", "device=cpu"), tmp_path, cache_dir, "qexp", None)
    env.pop("COLUMNS", None)
    status, written = _run_on_a_terminal(command, tmp_path, env)
    assert status == 0, written[-3000:]
    assert "is_fx_tracing" not in written and "it/s]" not in written  # the libraries' lines went to their log files
    for phase in ("quantizing", "evaluating"):
        frames = re.findall(rf"\r(gptq-7 {phase} +(\d+)%, [^\r\n]*)", written)
        percents = [int(p) for _, p in frames]
        assert len(set(percents)) >= 2 and percents == sorted(percents), frames  # it advanced, never back
        assert "\n" not in "".join(text for text, _ in frames)
        assert re.search(rf"\rgptq-7 {phase} +\d+%[^\n]*\rgptq-7 {phase} +\d+%", written)  # redrawn in place
    assert "about " in written and " left" in written
    # the live line is blanked before qexp's next line, which starts at the left edge
    assert re.search(r"\r {20,}\r\[[^\]]+\]\[qexp\]\[INFO\] - gptq-7: ", written), written[-3000:]
    assert re.search(r"\n\[[^\]]+\]\[qexp\]\[INFO\] - gptq-7: finished: average ", written)
