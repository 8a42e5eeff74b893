"""`python -m qexp.cleanup`: list RUNNING runs and mark the dead ones KILLED.

A job killed by SIGKILL or a power cut cannot end its run; its heartbeat stops instead.
`python -m qexp` reaps such runs of the configuration it is about to run; this command
does it for the whole experiment.
"""

from __future__ import annotations

import argparse
import sys
import time

from . import tracking
from .errors import QexpError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m qexp.cleanup", description=__doc__)
    parser.add_argument("--tracking-uri", help="MLflow store (default: as `python -m qexp` writes)")
    parser.add_argument("--experiment", default="qexp")
    parser.add_argument("--stale-after", type=float, default=300, metavar="SECONDS",
                        help="a heartbeat older than this marks a run on another host dead (default 300)")
    parser.add_argument("--dry-run", action="store_true", help="list, change nothing")
    args = parser.parse_args(argv)
    uri = args.tracking_uri or tracking.default_tracking_uri()
    try:
        client = tracking.connect(uri)
        experiment = client.get_experiment_by_name(args.experiment)
        if experiment is None:
            raise QexpError(f"No experiment <experiment={args.experiment!r}> in <tracking_uri={uri!r}>. "
                            "Pass --experiment or --tracking-uri.")
    except QexpError as err:
        print(f"qexp.cleanup: {err}", file=sys.stderr)
        return 2
    running = tracking.find_runs(client, experiment.experiment_id, {}, status="RUNNING")
    stale = dict((run.info.run_id, reason) for run, reason in
                 tracking.stale_runs(client, experiment.experiment_id, args.stale_after))
    for run in running:
        beat = run.data.tags.get(tracking.TAGS.HEARTBEAT)
        age = f"{time.time() - float(beat):.0f} s ago" if beat else "never"
        verdict = f"STALE: {stale[run.info.run_id]}" if run.info.run_id in stale else "alive"
        print(f"{run.info.run_id}  {run.info.run_name:<12} heartbeat {age:<10} {verdict}")
    if not args.dry_run:
        for run, reason in tracking.reap_stale(client, experiment.experiment_id, args.stale_after):
            print(f"marked {run.info.run_id} ({run.info.run_name}) KILLED: {reason}")
    print(f"{len(running)} running, {len(stale)} stale" + (" (dry run)" if args.dry_run else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
