"""The baseline a quantized run is compared with: evaluated exactly once, however many jobs on however
many hosts need it at the same moment. The store is the only thing they share, so it decides."""

from __future__ import annotations

import logging
import time

from .contract import TAGS
from .records import run_tags
from .spec import RunSpec, baseline_config, prepare
from .tracking import Run, RunRecord, Store

__all__ = ["spec_for", "claim", "claim_wins", "reap"]

log = logging.getLogger("qexp")

# A claim waits this long before looking for rivals, so that claims made at the same moment by
# jobs on other hosts are in the store (the hosts' clocks must agree to better than this).
CLAIM_SETTLE_SECONDS = 2.0
WAIT_POLL_SECONDS = 2.0


def spec_for(spec: RunSpec) -> RunSpec:
    """The prepared baseline `spec` is compared with: the same model and evaluation, unquantized."""
    base_cfg = baseline_config(spec.cfg)
    base_cfg.paths.output_dir = str(spec.output_dir / "baseline")
    return prepare(base_cfg)


def claim(spec: RunSpec, store: Store, sweep_id: str, base: RunSpec, wait: bool = True) -> Run | None:
    """The run this job claimed for evaluating `base`, the baseline `spec` is compared with, now; None
    once a finished baseline exists (found, or finished by another job meanwhile), or (`wait=False`)
    while another job evaluates it.

    Each job that finds no baseline claims it by starting the baseline run; after a settling pause
    one claim wins (`claim_wins`), the others delete theirs and wait for it.
    A winner that dies stops its heartbeat, is reaped, and the wait starts over.
    """
    waiting = False
    while True:
        reap(base, store)
        if store.done_runs(base.config_hash):
            return None
        if store.running_runs(base.config_hash):
            if not wait:
                return None
            if not waiting:
                log.info("%s: waiting for the baseline another job is evaluating", spec.run_name)
                waiting = True
            time.sleep(WAIT_POLL_SECONDS)
            continue
        mine = store.start_run(base.run_name, run_tags(base, store, sweep_id))
        visible_ms = time.time() * 1000  # every reader sees the claim from here on
        try:
            time.sleep(CLAIM_SETTLE_SECONDS)
            runs = store.find_runs({TAGS.CONFIG_HASH: base.config_hash}, status=None)
        except KeyboardInterrupt as err:
            mine.end("KILLED", str(err) or "interrupted (Ctrl-C)")
            raise
        if any(r.done for r in runs):
            mine.discard()  # a claim this one arrived too late to see has finished the baseline already
            return None
        claims = [r for r in runs if r.status == "RUNNING"]
        if not claim_wins(mine.run_id, visible_ms, claims, CLAIM_SETTLE_SECONDS * 1000):
            mine.discard()
            continue
        log.info("No finished baseline for %s with these evaluation settings: evaluating it first",
                 spec.cfg.model.name)
        return mine


def claim_wins(claim_id: str, visible_ms: float, claims: list[RunRecord], settle_ms: float) -> bool:
    """Whether the claim `claim_id` (visible to every reader since `visible_ms`) wins among the RUNNING
    `claims` read `settle_ms` after that.

    The earliest claim (start time, then run id) wins. But a start time is stamped before the claim
    reaches the store, so a claim that was slow to arrive may have been missed by a later claim that
    already looked and won. A claim therefore also yields to any claim whose settling pause may have
    ended before this one arrived. Two claims can then never both win; both may lose, and try again.
    """
    mine = next((r for r in claims if r.run_id == claim_id), None)
    if mine is None:
        return False  # no longer RUNNING: reaped
    for other in claims:
        if other.run_id == claim_id:
            continue
        if (other.start_time, other.run_id) < (mine.start_time, claim_id):
            return False  # claimed first
        if other.start_time + settle_ms < visible_ms:
            return False  # looked before this claim arrived, and may have won
    return True


def reap(spec: RunSpec, store: Store) -> None:
    """Runs of `spec`'s configuration left RUNNING by a killed job are marked KILLED first."""
    for dead, reason in store.reap_stale(spec.cfg.tracking.stale_after_seconds, {TAGS.CONFIG_HASH: spec.config_hash}):
        log.warning("%s: marked stale run %s KILLED (%s)", spec.run_name, dead.run_id, reason)
