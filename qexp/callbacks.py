"""Hydra callbacks: sweep-level bookkeeping that no single job can do.

A multirun is one MLflow parent run: created before any job is launched (so every job,
in any process or on any host, finds it by the sweep id and becomes its child), closed
after all jobs have returned, with the sweep's comparison report logged on it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from .contract import ARTIFACTS
from .identity import sweep_id
from .outcome import Outcome, read_outcomes
from .sweep_jobs import SweepCannotRun, command_line, job_count, per_job, runnable_jobs, share_alpha, swept_values

log = logging.getLogger("qexp")

__all__ = ["SweepSummary", "Sweep", "abort_active_sweep"]

_active: Sweep | None = None  # the sweep this process is running, for main() to close on Ctrl-C or SIGTERM
_progress: Progress | None = None  # where it stands, while its jobs run in this process


class SweepSummary(Callback):
    """Opens the sweep's parent run before jobs start, and ends the sweep with a summary and the report.

    The exit status is non-zero when any job failed, so scripts and CI notice.
    """

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        global _active
        try:
            _active = Sweep.start(config)
        except SweepCannotRun as err:  # every job would fail the same way: stop here, in seconds
            print(f"qexp: {err} (the sweep's first job was checked; no job was started)", file=sys.stderr)
            sys.exit(2)  # SystemExit: Hydra's callback runner lets it through (it swallows Exceptions)
        except NothingToDo as done:  # every job has a finished run: no job, no new parent run
            print(str(done), flush=True)
            sys.exit(0)
        global _progress
        _progress = Progress(job_count(config))

    # Jobs start and end in the sweep's process only with the basic launcher. A launcher that runs them
    # elsewhere (joblib workers, SLURM) calls these there, where no sweep is in progress (a module
    # global, not an attribute: this object travels to the workers pickled): nothing is said.
    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        if _progress is not None:
            print(_progress.starting(_job_name(config)), flush=True)

    def on_job_end(self, config: DictConfig, **kwargs: Any) -> None:
        if _progress is not None:
            outcomes = read_outcomes(Path(config.hydra.runtime.output_dir), recursive=False)
            _progress.ended(outcomes[0].status if outcomes else "FAILED")

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        global _active, _progress
        _progress = None
        outcomes = read_outcomes(Path(config.hydra.sweep.dir), recursive=True)
        lines = _summary(outcomes, "sweep")
        if _active is not None:
            lines += _active.finish(outcomes)
            _active = None
        failed = any(not o.ok for o in outcomes)
        print("\n".join(lines), file=sys.stderr if failed else sys.stdout)
        if failed:
            sys.exit(1)

    def on_run_end(self, config: DictConfig, **kwargs: Any) -> None:
        outcomes = read_outcomes(Path(config.hydra.runtime.output_dir), recursive=False)
        failed = [o for o in outcomes if not o.ok]
        if failed:  # 2: a setting to fix (the job never started), as for a config Hydra refuses; 1: the run failed
            sys.exit(2 if all(o.refused for o in failed) else 1)


class Progress:
    """Where a sweep stands: which job of how many, how many ended how, and the time left, estimated
    from the jobs that ran (skipped jobs take seconds, and are left out of the estimate)."""

    def __init__(self, total: int | None):
        self.total, self.started_at = total, None
        self.counts = {"ok": 0, "failed": 0, "skipped": 0}
        self.ran: list[float] = []  # seconds of each job that quantized or evaluated

    def starting(self, name: str) -> str:
        self.started_at = time.monotonic()
        done = sum(self.counts.values())
        of = f" of {self.total}" if self.total else ""
        ended = f"{done} done ({', '.join(f'{n} {k}' for k, n in self.counts.items())})" if done else "none done yet"
        return f"qexp sweep: job {done + 1}{of}, {name}; {ended}; {self._left(done)}"

    def ended(self, status: str) -> None:
        key = {"FINISHED": "ok", "SKIPPED": "skipped"}.get(status, "failed")
        self.counts[key] += 1
        if key != "skipped" and self.started_at is not None:
            self.ran.append(time.monotonic() - self.started_at)

    def _left(self, done: int) -> str:
        if not self.total:
            return "time left unknown (the sweep's size is not known)"
        if not self.ran:
            return "no estimate of the time left yet (no job has run)"
        seconds = sum(self.ran) / len(self.ran) * (self.total - done)
        minutes, rest = divmod(round(seconds), 60)
        when = f"{minutes} min {rest:02d} s" if minutes else f"{rest} s"
        return f"about {when} left (from {len(self.ran)} job{'s' if len(self.ran) > 1 else ''} that ran)"


def _job_name(config: DictConfig) -> str:
    from .identity import run_name

    return run_name(str(config.quant.name), config.calib.n)


def abort_active_sweep(reason: str) -> None:
    """End the running sweep's parent run KILLED (the entry point calls this on Ctrl-C or SIGTERM)."""
    global _active
    if _active is not None:
        _active.end("KILLED", reason)
        _active = None


def _summary(outcomes: list[Outcome], what: str) -> list[str]:
    failed = [o for o in outcomes if not o.ok]
    lines = [f"qexp {what}: {len(outcomes)} jobs, {len(outcomes) - len(failed)} ok, {len(failed)} failed"]
    for o in outcomes:
        detail = o.run_name or ""
        if o.error:
            detail = f"{detail} {o.error}".strip()
        lines.append(f"  {o.status:<9} {o.job}  {detail}")
    return lines


class Sweep:
    """A multirun's parent run."""

    def __init__(self, store, run, sweep: str, heartbeat_seconds: float):
        self.store, self.run, self.sweep = store, run, sweep
        # A heartbeat like a job's, so `python -m qexp.cleanup` on another host sees a live sweep.
        self._heartbeat = contextlib.ExitStack()
        self._heartbeat.enter_context(run.heartbeat(heartbeat_seconds))

    def end(self, status: str, reason: str | None = None) -> None:
        self._heartbeat.close()
        self.run.end(status, reason)

    @classmethod
    def start(cls, config: DictConfig) -> Sweep | None:
        """Create the store (once, before parallel jobs race on a fresh SQLite schema) and the parent run.

        Every job's config is composed first (as Hydra's sweeper does before launching any): a value
        of a swept key that does not compose (`calib.n=215,abc`) refuses the jobs that have it and
        the others run (`sweep_jobs.runnable_jobs`). Then the first job is prepared (no weights
        load). A config that does not compose, or a first job that fails for a reason every job
        shares (the model, the store, the data: a key the sweep does not vary), stops the sweep
        with `SweepCannotRun` before any run exists; when the offending key is one the sweep varies
        (`calib.n=-1,8`), the jobs run and each reports for itself, without a parent run. When every
        job has a finished run already, `NothingToDo` says so instead."""
        from .errors import QexpError
        from .spec import prepare
        from .contract import TAGS
        from .tracking import Store, redact, source_tags

        command = command_line(config)  # as typed: refused values are dropped from the config below
        jobs = runnable_jobs(config)
        share_alpha(jobs, config.hydra.sweep.dir)  # a sequential study's runs stop at alpha / its comparisons
        try:
            first = prepare(jobs[0], pinned=jobs[0].device)  # the job's own process will be pinned to its device
        except QexpError as err:
            if per_job(str(err), config, command):
                return None  # another job's values may be fine: each job reports for itself
            raise SweepCannotRun(str(err)) from None
        try:
            store = Store.open(config.tracking.uri, config.tracking.experiment)
        except QexpError as err:
            raise SweepCannotRun(str(err)) from None
        if not config.force and command_line(config) == command:  # with a job refused, the sweep reports it
            _say_if_all_finished(first, jobs[1:], store)
        store.wait_out_outages(config.tracking.outage_seconds)  # the parent and its report outlast a restart
        sweep = sweep_id(config.hydra.sweep.dir)
        tags = {**source_tags(store.uri), TAGS.ROLE: "sweep", TAGS.SWEEP_ID: sweep, TAGS.MODEL: str(config.model.name),
                TAGS.HOST: socket.gethostname(), TAGS.PID: str(os.getpid()),
                TAGS.DESCRIPTION: f"Sweep {sweep}: `python -m qexp -m {redact(' '.join(command))}`, "
                                  f"{len(jobs)} job{'s' if len(jobs) != 1 else ''} "
                                  f"({', '.join(_job_name(job) for job in jobs)}). "
                                  "Its jobs' runs are the children; the comparison report is under report/."}
        run = store.start_run(_name(config), tags)
        return cls(store, run, sweep, config.tracking.heartbeat_seconds)

    def finish(self, outcomes: list[Outcome]) -> list[str]:
        """Log the sweep's report and members on the parent, end it, and say where to look."""
        status = "FINISHED" if all(o.ok for o in outcomes) else "FAILED"
        lines = []
        try:
            lines += self._log_report([o.run_id for o in outcomes if o.status == "SKIPPED" and o.run_id])
        except Exception as err:  # the report must not keep the parent RUNNING
            self.run.log_text(f"{type(err).__name__}: {err}\n", f"{ARTIFACTS.REPORT}/{ARTIFACTS.ERROR}")
            lines.append(f"qexp: no report for this sweep ({type(err).__name__}: {err})")
        finally:
            self.end(status)
        return lines + [f"Browse the runs: {self.store.ui_url()}  (parent run {self.run.run_id})"]

    def _log_report(self, skipped: list[str]) -> list[str]:
        """The report of the sweep's runs, with the runs earlier sweeps finished for the jobs it skipped."""
        from .compare import build_report, load_study, render, to_json
        from .compare.plots import save_plots
        from .compare.report import summary_text
        from .contract import METRICS, TAGS

        study = load_study(self.store.uri, self.store.experiment, sweep_id=self.sweep, include_runs=skipped,
                           outage_seconds=self.store.outage_seconds)
        report = build_report(study)
        self.run.log_text(render(report, "markdown"), f"{ARTIFACTS.REPORT}/report.md")
        self.run.log_json(to_json(report), f"{ARTIFACTS.REPORT}/report.json")
        self.run.log_json({label: run_id for label, run_id in study.runs["run_id"].items()}, f"{ARTIFACTS.REPORT}/members.json")
        with tempfile.TemporaryDirectory() as tmp:
            save_plots(report, tmp)
            self.run.log_path(Path(tmp), f"{ARTIFACTS.REPORT}/plots")
        metrics = {METRICS.sweep("average", label): value for label, value in report.summary["average"].items()}
        if "recovery" in report.ranking:
            metrics.update({METRICS.sweep("recovery", label): value for label, value in report.ranking["recovery"].items()
                            if label != study.baseline})
        self.run.log_metrics({k: float(v) for k, v in metrics.items() if v == v})  # NaN: not logged
        if study.baseline:
            self.run.set_tag(TAGS.BASELINE_RUN, str(study.runs.loc[study.baseline, "run_id"]))
        return summary_text(report).splitlines() + [f"- {line}" for line in report.recommendations]


def _say_if_all_finished(first, others: list[DictConfig], store) -> None:
    """`NothingToDo` when every job of the sweep (the prepared `first`, then the `others`) has a
    finished run with its config hash: the sweep would only skip them and log the same report again
    on a new parent run. Preparing a job reads files and loads no weights."""
    from collections import Counter

    from .errors import QexpError
    from .contract import TAGS
    from .spec import prepare

    finished = []
    for job in [None, *others]:
        try:
            spec = first if job is None else prepare(job, pinned=job.device)
        except QexpError:
            return  # this job reports for itself when it runs
        found = store.done_runs(spec.config_hash)
        if not found:
            return
        finished.append((spec.run_name, found[0]))
    parents = {run.tags.get(TAGS.PARENT) for _, run in finished} - {None}
    lines = [f"qexp sweep: nothing to do: all {len(finished)} jobs have a finished run with their config hash "
             "(force=true runs them again)"]
    jobs = Counter(run.run_id for _, run in finished)  # data-free methods: one run for every calib.n
    names = {run.run_id: name for name, run in finished}
    lines += [f"  {names[run_id]:<14} run {run_id}" + (f" ({count} jobs)" if count > 1 else "")
              for run_id, count in jobs.items()]
    latest = max(parents, key=lambda run_id: store.get_run(run_id).start_time) if parents else None
    where = f"  (the sweep's report is on parent run {latest})" if latest else ""
    lines.append(f"Browse the runs: {store.ui_url()}{where}")
    raise NothingToDo("\n".join(lines))


class NothingToDo(Exception):
    """Every job of the sweep has a finished run."""


def _name(config: DictConfig) -> str:
    """`tiny-qwen3 · gptq,awq × 8,16`: the model and the values its jobs take of each key swept (in a
    preset or on the command line; a command-line value replaces the preset's)."""
    swept = [",".join(values) for values in swept_values(config).values()]
    return f"{config.model.name} · {' × '.join(swept) or 'sweep'}"
