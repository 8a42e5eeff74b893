"""`python -m qexp.cleanup`: list RUNNING runs and mark the dead ones KILLED.

A job killed by SIGKILL or a power cut cannot end its run; its heartbeat stops instead.
`python -m qexp` reaps such runs of the configuration it is about to run; this command
does it for the whole experiment. Its defaults are the composed config's `tracking` group.
"""

from __future__ import annotations

import sys
import time

from .cli import refusing, store_parser
from .contract import TAGS
from .tracking import Store


@refusing
def main(argv: list[str] | None = None) -> int:
    parser, defaults = store_parser("python -m qexp.cleanup", __doc__)
    parser.add_argument("--stale-after", type=float, default=defaults.stale_after_seconds, metavar="SECONDS",
                        help="a heartbeat older than this marks a run on another host dead "
                             f"(default: {defaults.stale_after_seconds})")
    parser.add_argument("--dry-run", action="store_true", help="list, change nothing")
    args = parser.parse_args(argv)
    store = Store.open(args.tracking_uri, args.experiment, create=False)
    running = store.find_runs(status="RUNNING")
    stale = {run.run_id: reason for run, reason in store.stale_runs(args.stale_after)}
    for run in running:
        beat = run.tags.get(TAGS.HEARTBEAT)
        age = f"{time.time() - float(beat):.0f} s ago" if beat else "never"
        verdict = f"STALE: {stale[run.run_id]}" if run.run_id in stale else "alive"
        print(f"{run.run_id}  {run.name:<12} heartbeat {age:<10} {verdict}")
    if not args.dry_run:
        for run, reason in store.reap_stale(args.stale_after):
            print(f"marked {run.run_id} ({run.name}) KILLED: {reason}")
    print(f"{len(running)} running, {len(stale)} stale" + (" (dry run)" if args.dry_run else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
