"""The live progress line, fed by real tqdm bars as llm-compressor and lm-eval drive them."""

from __future__ import annotations

import io
import logging
import re

import pytest
from tqdm import tqdm

from qexp import progress


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _calibrate(subgraphs: int, batches: int, sink: io.StringIO) -> None:
    """llm-compressor's sequential pipeline: per subgraph, a calibration and a propagation pass."""
    for index in range(1, subgraphs + 1):
        for stage in ("Calibrating", "Propagating"):
            for _ in tqdm(range(batches), desc=f"({index}/{subgraphs}): {stage}", file=sink, mininterval=0):
                pass


def _requests(desc: str, total: int, sink: io.StringIO) -> None:
    """lm-eval's request loop: a bar with a total, updated per request."""
    bar = tqdm(total=total, desc=desc, file=sink, mininterval=0)
    for _ in range(total):
        bar.update(1)
    bar.close()


def _plain_lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "qexp"]


@pytest.fixture
def no_gap(monkeypatch):
    """Plain lines as often as every 5% (the real gap, 10 s, would leave these fast bars silent)."""
    monkeypatch.setattr(progress, "GAP_SECONDS", 0.0)


class Clock:
    def __init__(self):
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


def test_quantizing_counts_subgraphs_and_never_goes_back(caplog, no_gap):
    caplog.set_level(logging.INFO, logger="qexp")
    libraries = io.StringIO()
    with progress.phase("gptq-8", "quantizing", "subgraphs", stream=io.StringIO()) as live:
        for _ in tqdm(range(8), desc="Preparing cache", file=libraries, mininterval=0):
            pass
        assert live.fraction == 0 and live.step == "Preparing cache 8/8"  # not a counting bar
        fractions, report = [], live.report

        def recorded(desc, n, total):  # every value the percentage takes, not only the lines shown
            report(desc, n, total)
            fractions.append(live.fraction)

        live.report = recorded
        _calibrate(subgraphs=4, batches=5, sink=libraries)
        assert fractions == sorted(fractions) and len(set(fractions)) > 8  # propagation never takes it back
        # the last subgraph's batches are through; its quantization is not (the phase is not over)
        assert live.fraction == (3 + 0.5) / 4
    percents = [int(m[1]) for m in (re.match(r"gptq-8 quantizing +(\d+)%", line) for line in _plain_lines(caplog))]
    assert percents == sorted(percents) and 85 <= percents[-1] <= 88
    assert len({p // 5 for p in percents}) == len(percents) >= 10  # at most one line per 5%
    assert "(4/4): Propagating: 100%" in libraries.getvalue()  # the libraries' own bars still write where they did


def test_plain_lines_have_no_control_characters_and_say_the_time_left(caplog, no_gap):
    caplog.set_level(logging.INFO, logger="qexp")
    with progress.phase("awq-16", "evaluating", "requests", stream=io.StringIO()):
        _requests("Running loglikelihood requests", 400, io.StringIO())
    lines = _plain_lines(caplog)
    assert len(lines) == 1 / progress.STEP  # 5%, 10%, ..., 100%: 20 lines for 400 updates
    assert not any(ch in line for line in lines for ch in "\r\x1b")
    assert lines[0].startswith("awq-16 evaluating   5%, 0 s so far, about ")
    assert lines[0].endswith(" left: Running loglikelihood requests 20/400")
    assert lines[-1] == lines[-1].split(",")[0] + ", 0 s so far: Running loglikelihood requests 400/400"


def test_a_new_request_type_starts_its_own_count(caplog, no_gap):
    caplog.set_level(logging.INFO, logger="qexp")
    with progress.phase("rtn", "evaluating", "requests", stream=io.StringIO()) as live:
        _requests("Running loglikelihood requests", 40, io.StringIO())
        _requests("Checking cached requests", 10, io.StringIO())
        assert live.fraction == 1.0  # a cache check is not the work being counted
        _requests("Running loglikelihood_rolling requests", 4, io.StringIO())
    rolling = [line for line in _plain_lines(caplog) if "loglikelihood_rolling" in line]
    assert [line.split(",")[0] for line in rolling] == [f"rtn evaluating {p:3d}%" for p in (25, 50, 75, 100)]


def test_on_a_terminal_one_line_is_redrawn_in_place_then_cleared(caplog, monkeypatch):
    monkeypatch.setattr(progress, "REDRAW_SECONDS", 0.0)
    caplog.set_level(logging.INFO, logger="qexp")
    terminal = Terminal()
    with progress.phase("gptq-8", "quantizing", "subgraphs", stream=terminal):
        _calibrate(subgraphs=2, batches=3, sink=io.StringIO())
    drawn = terminal.getvalue()
    assert "\n" not in drawn and drawn.endswith("\r")
    frames = [frame.rstrip() for frame in drawn.split("\r") if frame.strip()]
    assert frames[0].startswith("gptq-8 quantizing   8%") and "(1/2): Calibrating 1/3" in frames[0]
    assert frames[-1].startswith("gptq-8 quantizing  75%") and "(2/2): Propagating 3/3" in frames[-1]
    assert _plain_lines(caplog) == []  # a terminal gets the redrawn line, not log lines


def test_the_hook_is_gone_after_the_phase_even_when_it_fails():
    update, close = tqdm.update, tqdm.close
    try:
        with progress.phase("gptq-8", "quantizing", "subgraphs", stream=io.StringIO()):
            assert tqdm.update is not update
            raise RuntimeError("quantization failed")
    except RuntimeError:
        pass
    assert (tqdm.update, tqdm.close) == (update, close)


def test_disabled_bars_and_verbose_mode_report_nothing(caplog):
    caplog.set_level(logging.INFO, logger="qexp")
    with progress.phase("gptq-8", "evaluating", "requests", stream=io.StringIO()) as live:
        for _ in tqdm(range(10), desc="Running loglikelihood requests", disable=True):
            pass
        assert live.fraction == 0 and live.step == ""
    with progress.phase("gptq-8", "evaluating", "requests", enabled=False) as live:
        assert live is None
        _requests("Running loglikelihood requests", 10, io.StringIO())
    assert _plain_lines(caplog) == []


def test_clock():
    assert [progress._clock(s) for s in (0.4, 59, 65, 3600 + 7 * 60 + 3)] == ["0 s", "59 s", "1 min 05 s", "1 h 07 min"]


def test_plain_lines_keep_their_distance_and_a_slow_phase_still_says_it_is_alive(caplog, monkeypatch):
    caplog.set_level(logging.INFO, logger="qexp")
    clock = Clock()
    monkeypatch.setattr(progress.time, "monotonic", clock.monotonic)
    monkeypatch.setattr(tqdm, "update", tqdm.update)  # restored after the phase either way

    def requests(total: int, seconds_each: float) -> list[float]:
        caplog.clear()
        shown = []
        with progress.phase("gptq-8", "evaluating", "requests", stream=io.StringIO()):
            bar = tqdm(total=total, desc="Running loglikelihood requests", file=io.StringIO(), mininterval=0)
            for _ in range(total):
                clock.now += seconds_each
                before = len(caplog.records)
                bar.update(1)
                if len(caplog.records) > before:
                    shown.append(clock.now)
            bar.close()
        return shown

    fast = requests(100, 0.05)  # 5 s in all: a phase of seconds prints nothing
    assert fast == []
    steady = requests(400, 0.1)  # 40 s: one line per 10 s at most, each 5% further on
    gaps = [b - a for a, b in zip(steady, steady[1:])]
    assert 3 <= len(steady) <= 4 and all(gap >= progress.GAP_SECONDS - 1e-9 for gap in gaps)
    slow = requests(200, 12.0)  # 40 min, 0.5% per request: never 30 s without a line (12 s per request)
    gaps = [b - a for a, b in zip(slow, slow[1:])]
    assert len(slow) > 50 and all(progress.GAP_SECONDS <= gap <= progress.PLAIN_SECONDS + 12 for gap in gaps)


def test_the_time_left_falls_as_work_is_done_and_is_right_on_a_steady_phase(monkeypatch):
    """A fake clock: 30 s of loading before the first count (not work the count measures), then one
    request a second. The time left is then exact at every step and never counts the loading."""
    clock = Clock()
    monkeypatch.setattr(progress, "time", clock)
    live = progress.PhaseProgress("rtn", "evaluating", io.StringIO(), tty=False, counts="requests")
    clock.now += 30
    lefts = []
    for done in range(0, 100, 10):
        live.report("Running loglikelihood requests", done, 100)
        if done:
            line = live.line()
            assert f"{progress._clock(30 + done)} so far" in line  # the phase's own clock, loading included
            lefts.append(line.split("about ", 1)[1].split(" left", 1)[0])
        clock.now += 10
    assert lefts == [progress._clock(100 - done) for done in range(10, 100, 10)]  # 90 s, 80 s, ..., 10 s
