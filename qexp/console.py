"""What the terminal shows: qexp's own lines by default, everything with verbose=true; the libraries'
output goes to the job's files."""

from __future__ import annotations

import logging
import sys
from contextlib import contextmanager, redirect_stderr
from pathlib import Path
from typing import Iterator

__all__ = ["setup", "library_output"]


def setup(verbose: bool) -> None:
    """By default the terminal shows qexp's own lines (conf/config.yaml filters the console handler);
    libraries' log lines and warnings still reach the job's log file, their progress bars the job's
    libraries.log (see `library_output`). verbose=true shows everything."""
    logging.captureWarnings(True)
    if verbose:
        for handler in logging.getLogger().handlers:
            handler.filters.clear()
        logging.getLogger("mlflow").setLevel(logging.INFO)


@contextmanager
def library_output(path: Path, verbose: bool) -> Iterator[None]:
    """What the libraries write to stderr (progress bars per layer, per task and per request type,
    hundreds of lines a run) goes to the job's libraries.log, unless verbose=true. So do the log lines
    of libraries that print through a handler of their own (torch's on the `torch` logger, which
    does not propagate to qexp's log file) rather than through the root logger."""
    if verbose:
        yield
        return
    terminal = sys.stderr
    own = [h for h in _all_handlers() if type(h) is logging.StreamHandler and h.stream is terminal]
    with open(path, "a", encoding="utf-8") as sink, redirect_stderr(sink):
        for handler in own:
            handler.setStream(sink)
        try:
            yield
        finally:
            for handler in own:
                handler.setStream(terminal)


def _all_handlers() -> list[logging.Handler]:
    loggers = [logging.getLogger()] + [logging.getLogger(name) for name in list(logging.root.manager.loggerDict)]
    return [handler for logger in loggers for handler in logger.handlers]
