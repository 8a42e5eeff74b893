"""A job's live progress through its long phases, counted by the libraries' own progress bars.

llm-compressor's sequential pipeline counts calibration subgraph by subgraph (`(3/8): Calibrating`,
then the batches of that subgraph); lm-eval counts its requests (`Running loglikelihood requests`,
n of total). Both count with tqdm. While a phase runs, each tqdm bar's updates are also handed to
qexp (the bars themselves still go where the libraries' output goes: the job's libraries.log, or
the terminal with verbose=true) and become one line per job:

- on a terminal, one line redrawn in place (by tqdm's status printer): the phase, its
  percentage, the library's current step, the time spent and the time left;
- elsewhere (CI, SLURM logs, `| tee`), a plain log line when another 5% is done and 10 s have
  passed since the last one, or 30 s have passed with progress: no control characters, nothing
  for a phase of a few seconds.

A phase's percentage comes from the bars that count its work: the calibration subgraphs while
quantizing, the requests while evaluating. Other bars (loading shards, preparing caches) show as
the current step without moving the percentage.
"""

from __future__ import annotations

import logging
import re
import shutil
import sys
import time
from contextlib import contextmanager
from typing import IO, Iterator

from tqdm.std import tqdm

from .signals import raise_if_interrupted

log = logging.getLogger("qexp")

__all__ = ["phase", "PhaseProgress"]

STEP = 0.05            # a plain line when another 5% of the phase is done,
GAP_SECONDS = 10.0     # and this long after the last line (a phase of seconds needs none)
PLAIN_SECONDS = 30.0   # or this long after the last line, when there was progress
REDRAW_SECONDS = 0.1   # on a terminal, at most this often

_SUBGRAPH = re.compile(r"^\((\d+)/(\d+)\): \w+")  # llm-compressor: "(3/8): Calibrating"


class PhaseProgress:
    """One phase of one job (`gptq-8 quantizing`): what the libraries' bars say, as one line."""

    def __init__(self, job: str, name: str, stream: IO[str], tty: bool, counts: str):
        self.job, self.name, self.stream, self.counts = job, name, stream, counts
        self.fraction, self.step = 0.0, ""
        self.started = time.monotonic()
        self._origin: tuple[float, float] | None = None  # (time, fraction) of the first count
        self._counting: str | None = None  # the desc of the bar the percentage follows
        self._shown_at, self._shown_step, self._shown_fraction = 0.0, 0, 0.0
        self._print = tqdm.status_printer(stream) if tty else None

    def report(self, desc: str, n: float, total: float | None) -> None:
        """A library's bar `desc` is at `n` of `total`."""
        desc = desc.rstrip(": ")
        if desc:  # an unnamed bar says nothing a person can use
            self.step = f"{desc} {n:,.0f}/{total:,.0f}" if total else f"{desc} {n:,.0f}"
        fraction = self._fraction(desc, n, total)
        if fraction is not None:
            if self._origin is None:
                self._origin = (time.monotonic(), fraction)
            self.fraction = fraction
        self._show()

    def _fraction(self, desc: str, n: float, total: float | None) -> float | None:
        if not total:
            return None
        done = min(n / total, 1.0)
        if self.counts == "subgraphs":
            found = _SUBGRAPH.match(desc)
            if not found:
                return None
            index, count = int(found[1]), int(found[2])
            # A subgraph's calibration batches count as half its work; the modifiers' work once they
            # are through (GPTQ's solve, AWQ's grid search) is the other half, done when the next
            # subgraph starts. Its propagation pass counts the batches again: never go back.
            return max(self.fraction, (index - 1 + done / 2) / count)
        if self.counts == "passes":  # the speed phase: vLLM's timed passes (qexp.speed.bench)
            return done
        if not desc.startswith("Running "):  # lm-eval: "Running loglikelihood requests"
            return None
        if desc != self._counting:  # the next request type (held-out perplexity after the tasks) starts over
            self._counting, self._origin, self.fraction = desc, None, 0.0
            self._shown_step, self._shown_fraction = 0, 0.0
        return done

    def line(self) -> str:
        """`gptq-8 quantizing  40%, 12 s so far, about 18 s left: (3/8): Calibrating 5/16`."""
        now = time.monotonic()
        text = f"{self.job} {self.name} {100 * self.fraction:3.0f}%, {_clock(now - self.started)} so far"
        if self._origin is not None and self._origin[1] < self.fraction < 1:
            since, at = self._origin
            left = (now - since) / (self.fraction - at) * (1 - self.fraction)
            text += f", about {_clock(left)} left"
        return f"{text}: {self.step}" if self.step else text

    def _show(self) -> None:
        now = time.monotonic()
        if self._print is not None:
            if now - self._shown_at >= REDRAW_SECONDS:
                width = shutil.get_terminal_size().columns - 1
                self._print(self.line()[:width])
                self._shown_at = now
            return
        step = int(self.fraction / STEP)
        waited = now - max(self._shown_at, self.started)
        if (step > self._shown_step and waited >= GAP_SECONDS) or (
                waited >= PLAIN_SECONDS and self.fraction > self._shown_fraction):
            log.info("%s", self.line())
            self._shown_at, self._shown_step, self._shown_fraction = now, step, self.fraction

    def close(self) -> None:
        """On a terminal, clear the line: the job's next line (its finished line) replaces it."""
        if self._print is not None and self._shown_at:
            self._print("")  # blanks the line
            self.stream.write("\r")
            self.stream.flush()


@contextmanager
def phase(job: str, name: str, counts: str, enabled: bool = True, stream: IO[str] | None = None
          ) -> Iterator[PhaseProgress | None]:
    """Show the progress of `job`'s phase `name` while the block runs. `counts`: "subgraphs"
    (llm-compressor's sequential calibration), "requests" (lm-eval) or "passes" (the speed phase's
    timed passes, reported through the `PhaseProgress` it yields). Off (`enabled=False`)
    when the libraries' own bars are shown (verbose=true)."""
    if not enabled:
        yield None
        return
    stream = stream or sys.stdout
    live = PhaseProgress(job, name, stream, _is_tty(stream), counts)
    update, close = tqdm.update, tqdm.close

    def updated(bar, n=1):
        raise_if_interrupted()  # a Ctrl-C some library swallowed stops the phase at its next step
        shown = update(bar, n)
        _hand_over(live, bar)
        return shown

    def closed(bar):
        _hand_over(live, bar)  # a bar driven by iteration sets its final count just before closing
        return close(bar)

    tqdm.update, tqdm.close = updated, closed
    try:
        yield live
    finally:
        tqdm.update, tqdm.close = update, close
        live.close()


def _hand_over(live: PhaseProgress, bar: tqdm) -> None:
    try:
        if not getattr(bar, "disable", True):
            live.report(str(bar.desc or ""), bar.n, bar.total)
    except Exception:  # progress is a courtesy: it never fails the job
        pass


def _is_tty(stream: IO[str]) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def _clock(seconds: float) -> str:
    """`42 s`, `3 min 05 s`, `2 h 07 min`."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, rest = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {rest:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"
