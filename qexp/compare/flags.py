"""The report's power and equivalence settings as command-line flags, shared by `python -m qexp.compare`
and `python -m qexp.compare.plan`."""

from __future__ import annotations

import argparse
import sys

from .power import DIFFERENCE, MARGIN, POWER, RECOVERY, Settings, check_settings

__all__ = ["add_settings_args", "settings_from"]


def add_settings_args(parser: argparse.ArgumentParser, equivalence: bool = True) -> None:
    """The power and equivalence settings, in points and percent as a reader says them."""
    parser.add_argument("--power", type=float, default=100 * POWER, metavar="PERCENT",
                        help=f"the power of the detectable differences and document counts (default {100 * POWER:g})")
    parser.add_argument("--difference", type=float, default=100 * DIFFERENCE, metavar="POINTS",
                        help=f"the difference to size for: documents needed to detect it (default {100 * DIFFERENCE:g})")
    if equivalence:
        parser.add_argument("--margin", type=float, default=100 * MARGIN, metavar="POINTS",
                            help=f"equivalence margin on the average (default ±{100 * MARGIN:g})")
        parser.add_argument("--recovery", type=float, default=100 * RECOVERY, metavar="PERCENT",
                            help=f"the recovery a run must be shown to keep (default {100 * RECOVERY:g})")


def settings_from(args: argparse.Namespace, prog: str):
    """The `compare.power.Settings` the flags give, or exit status 2 after saying what is wrong and the fix."""
    settings = Settings(power=args.power / 100, difference=args.difference / 100,
                        margin=getattr(args, "margin", 100 * MARGIN) / 100,
                        recovery=getattr(args, "recovery", 100 * RECOVERY) / 100)
    problems = check_settings(settings)
    for problem in problems:
        print(f"{prog}: {problem}", file=sys.stderr)
    return 2 if problems else settings
