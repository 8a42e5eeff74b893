"""What qexp's command lines share: the store and study arguments of the tools (`qexp.compare`,
`qexp.compare.plan`, `qexp.cleanup`), how a tool refuses (one line on
stderr, exit status 2), and what `python -m qexp` does to its arguments before Hydra reads them."""

from __future__ import annotations

import argparse
import functools
import os
import re
import sys
from pathlib import Path
from typing import Callable
from urllib.parse import unquote

from omegaconf import DictConfig

from .errors import QexpError

__all__ = ["refusing", "store_parser", "add_study_args", "credentials_out_of", "config_dir_of"]


def refusing(main: Callable[..., int]) -> Callable[..., int]:
    """A tool's `main` that says a `QexpError` as `<tool>: <message>` (`qexp.compare: ...`, the tool
    named by its module) and returns exit status 2."""
    prog = main.__module__.removesuffix(".__main__")

    @functools.wraps(main)
    def run(*args, **kwargs) -> int:
        try:
            return main(*args, **kwargs)
        except QexpError as err:
            print(f"{prog}: {err}", file=sys.stderr)
            return 2
    return run


def store_parser(prog: str, description: str | None) -> tuple[argparse.ArgumentParser, DictConfig]:
    """An argument parser with --tracking-uri and --experiment, defaulting to where `python -m qexp`
    logs (the composed `tracking` group), and that group; ConfigError when conf/ does not compose."""
    from .schema import tracking_defaults

    defaults = tracking_defaults()
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--tracking-uri", default=defaults.uri, help=f"MLflow store (default: {defaults.uri})")
    parser.add_argument("--experiment", default=defaults.experiment,
                        help=f"MLflow experiment (default: {defaults.experiment})")
    return parser, defaults


def add_study_args(parser: argparse.ArgumentParser, what: str) -> None:
    """--model and --sweep-id: which runs of the experiment the tool reads (`what`: "report on", "plan from")."""
    parser.add_argument("--model", help=f"the qexp.model tag to {what}, when the experiment holds several")
    parser.add_argument("--sweep-id", help="only the runs of this sweep (its baseline may be older)")


# ----------------------------------------------------------------------------- python -m qexp
_HTTP_CREDENTIALS = re.compile(r"^(?P<scheme>https?://)(?P<user>[^/\s:@]+):(?P<password>[^@\s/]*)@(?P<rest>\S*)$")


def credentials_out_of(argv: list[str]) -> list[str]:
    """`argv` with a password written into `tracking.uri=http(s)://user:password@host` moved out: the
    user and password go to MLFLOW_TRACKING_USERNAME/PASSWORD (how MLflow's client authenticates, the
    job processes a launcher starts included), the URI keeps the host. This runs before Hydra reads
    the command line, which it prints per job and saves under the output folders. A database URI
    (postgresql://user:password@...) keeps its password: its driver reads it there."""
    out = []
    for arg in argv:
        key, sep, value = arg.partition("=")
        found = _HTTP_CREDENTIALS.match(value) if sep and key.lstrip("+~") == "tracking.uri" else None
        if found:
            os.environ["MLFLOW_TRACKING_USERNAME"] = unquote(found["user"])
            os.environ["MLFLOW_TRACKING_PASSWORD"] = unquote(found["password"])
            arg = f"{key}={found['scheme']}{found['rest']}"
        out.append(arg)
    return out


def config_dir_of(argv: list[str]) -> Path | None:
    """The folder given with Hydra's --config-path/-cp, where the YAML files of this command are."""
    for i, arg in enumerate(argv):
        if arg in ("--config-path", "-cp") and i + 1 < len(argv):
            return Path(argv[i + 1])
        if arg.startswith("--config-path="):
            return Path(arg.split("=", 1)[1])
    return None
