"""A sweep's jobs, as Hydra's basic sweeper will expand them: listed, composed, and the values that
do not compose dropped, so that one bad value fails only the jobs that have it.

The callbacks (`callbacks.py`) call these before any job starts: to count the jobs, to check
the first one, and to tell a problem every job shares from one only some jobs have.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from omegaconf import DictConfig, OmegaConf, open_dict

from .outcome import Outcome, write_outcome

__all__ = ["SweepCannotRun", "command_line", "swept_values", "job_overrides", "job_count", "compose_job", "runnable_jobs", "per_job",
           "share_alpha", "shared_alpha"]

COMPARISONS = "comparisons.json"  # in the sweep's folder: how many of its jobs compare with the baseline


class SweepCannotRun(Exception):
    """The sweep's first job cannot run, for a reason every job shares."""


def command_line(config: DictConfig) -> list[str]:
    """The sweep's overrides as typed on the command line (Hydra's `hydra.overrides.task`)."""
    return [str(o) for o in OmegaConf.select(config, "hydra.overrides.task", default=[]) or []]


def parsed_overrides(config: DictConfig) -> list:
    """The sweep's overrides as Hydra's basic sweeper reads them: the sweeper's params (a preset's
    `hydra.sweeper.params`) first, then the command line's, so a key given on the command line
    replaces the preset's values (`+experiment=smollm2_study quant=gptq` runs GPTQ only)."""
    params = OmegaConf.select(config, "hydra.sweeper.params", default=None) or {}
    return parse([f"{key}={value}" for key, value in params.items()] + command_line(config))


def swept_values(config: DictConfig) -> dict[str, list[str]]:
    """Each key the sweep varies (in a preset or on the command line), with the values its jobs will
    have: `{'quant': ['gptq'], 'calib.n': ['16']}` when the command line overrides a preset's sweep."""
    final: dict[str, list[str]] = {}
    swept = set()
    for override in parsed_overrides(config):
        key = override.get_key_element()
        if override.is_sweep_override():
            swept.add(key)
            final[key] = list(override.sweep_string_iterator())
        else:
            final[key] = [override.get_value_element_as_str()]
    return {key: values for key, values in final.items() if key in swept}


def parse(lines: list[str]) -> list:
    from hydra.core.override_parser.overrides_parser import OverridesParser

    return OverridesParser.create().parse_overrides(lines)


def job_overrides(config: DictConfig) -> list[list[str]]:
    """Each job's overrides, in the order Hydra's basic sweeper launches them."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper

    return [job for batch in BasicSweeper.split_arguments(parsed_overrides(config), None) for job in batch]


def share_alpha(jobs: list[DictConfig], folder: str | Path) -> int | None:
    """A sequential sweep's comparisons with the baseline (its jobs that quantize): written to the sweep's
    `folder` for its jobs (`shared_alpha`), wherever they run, and set in `jobs` whose
    eval.sequential.comparisons is null. Each such job stops at alpha / that number. None for a sweep
    without a sequential job."""
    from .identity import BASELINE

    if not any(job.eval.sequential.looks for job in jobs):
        return None
    comparisons = max(1, sum(1 for job in jobs if job.quant.name != BASELINE))
    Path(folder).mkdir(parents=True, exist_ok=True)
    (Path(folder) / COMPARISONS).write_text(json.dumps({"comparisons": comparisons}))
    for job in jobs:
        shared_alpha(job, folder)
    return comparisons


def shared_alpha(cfg: DictConfig, folder: str | Path | None) -> None:
    """Resolve eval.sequential.comparisons: null becomes the number `share_alpha` wrote for the sweep in
    `folder` (1 for a run outside a sweep, `folder` None). A fixed-size evaluation keeps it null."""
    if not cfg.eval.sequential.looks or cfg.eval.sequential.comparisons is not None:
        return
    path = Path(folder) / COMPARISONS if folder is not None else None
    comparisons = json.loads(path.read_text())["comparisons"] if path is not None and path.is_file() else 1
    with open_dict(cfg):
        cfg.eval.sequential.comparisons = comparisons


def job_count(config: DictConfig) -> int | None:
    """How many jobs the sweep runs."""
    try:
        return len(job_overrides(config))
    except Exception:  # a sweep Hydra can run but this cannot count: say so rather than guess
        return None


def compose_job(config: DictConfig, overrides: list[str]) -> DictConfig:
    """The job's config as its launcher will compose it (`hydra` node dropped)."""
    from hydra.core.global_hydra import GlobalHydra

    from .config_errors import composition_error

    try:
        job = GlobalHydra.instance().config_loader().load_sweep_config(config, overrides)
    except Exception as err:
        raise composition_error(err) from None
    job = OmegaConf.masked_copy(job, [key for key in job if key != "hydra"])
    with open_dict(job):
        job.paths.output_dir = str(config.hydra.sweep.dir)
    return job


def runnable_jobs(config: DictConfig) -> list[DictConfig]:
    """Every job's composed config, less the jobs with a swept value that does not compose.

    Hydra's sweeper refuses the whole sweep when one job's config does not compose. A value of a
    key the sweep varies (`calib.n=215,abc`, `quant=gptq,gtpq`) concerns only the jobs that have it:
    it is dropped from the overrides the sweeper is about to expand (this is the config object
    Hydra reads them from, after the callbacks' `on_multirun_start`), and each refused job leaves a
    FAILED outcome with the one-line error for the sweep's summary. A bad value the sweep does not
    vary, or every value of a key bad, stops the sweep (`SweepCannotRun`)."""
    from omegaconf import read_write

    from .errors import QexpError

    jobs, refused = [], []
    for overrides in job_overrides(config):
        try:
            jobs.append(compose_job(config, overrides))
        except QexpError as err:
            refused.append((overrides, err))
    if not refused:
        return jobs
    bad: dict[str, set[str]] = {}
    for overrides, err in refused:
        value = _offending_value(str(err), overrides, config)
        if value is None:
            raise SweepCannotRun(str(err))
        bad.setdefault(value[0], set()).add(value[1])
    kept = without(parse(command_line(config)), bad)
    if kept is None:  # every value of a key is bad: nothing to run
        raise SweepCannotRun(str(refused[0][1]))
    with read_write(config.hydra.overrides):
        config.hydra.overrides.task = kept
    for number, (overrides, err) in enumerate(refused):
        job = ",".join(sorted(overrides))  # as Hydra names the jobs it runs (`hydra.job.override_dirname`)
        write_outcome(Path(config.hydra.sweep.dir) / f"refused-{number}",
                      Outcome(job=job, status="FAILED", error=str(err), refused=True))
        print(f"qexp sweep: job {job} refused, the others run: {err}", file=sys.stderr, flush=True)
    try:
        return [compose_job(config, overrides) for overrides in job_overrides(config)]
    except QexpError as err:  # a value bad only together with another: refuse the sweep after all
        raise SweepCannotRun(str(err)) from None


def _offending_value(message: str, overrides: list[str], config: DictConfig) -> tuple[str, str] | None:
    """The swept command-line override (its key as typed, and the value) that a job's composition
    error names (`<calib.n='abc'>` in job `quant=gptq calib.n=abc`), or None when the key is not swept
    on the command line."""
    named = named_key(message)
    if named is None:
        return None
    swept = _swept(command_line(config))
    for line in overrides:
        key, _, value = line.partition("=")
        if key in swept and _within(named, swept[key]):
            return key, value
    return None


def _swept(lines: list[str]) -> dict[str, str]:
    """The keys the overrides `lines` sweep: as typed (`+calib.n`), to the bare key (`calib.n`)."""
    return {o.get_key_element(): o.key_or_group for o in parse(lines) if o.is_sweep_override()}


def _within(key: str, swept: str) -> bool:
    """Whether `key` is the swept key, or lies in the config group it sweeps (`quant.group_size` in `quant`)."""
    return key == swept or key.startswith(swept + ".")


def without(parsed: list, bad: dict[str, set[str]]) -> list[str] | None:
    """The overrides as typed, with the `bad` values of their swept keys left out (None when a key
    would keep no value)."""
    lines = []
    for override in parsed:
        key = override.get_key_element()
        if override.is_sweep_override() and key in bad:
            values = [v for v in override.sweep_string_iterator() if v not in bad[key]]
            if not values:
                return None
            lines.append(f"{key}={','.join(values)}")
        else:
            lines.append(override.input_line)
    return lines


def per_job(message: str, config: DictConfig, command: list[str]) -> bool:
    """Whether the key a ConfigError names (`<key=value>`) is one the sweep (`command`, its overrides
    as typed) varies, or lies in a config group it varies (`quant.group_size` when sweeping
    `quant=gptq,awq`)."""
    key = named_key(message)
    if key is None:
        return False
    swept = [*_swept(command).values(), *map(str, OmegaConf.select(config, "hydra.sweeper.params", default=None) or {})]
    return any(_within(key, s) for s in swept)


def named_key(message: str) -> str | None:
    """The key a ConfigError's message names (`calib.n` in `Wrong type: <calib.n='abc'>. …`)."""
    import re

    found = re.search(r"<([\w.]+)=", message)
    return found.group(1) if found else None
