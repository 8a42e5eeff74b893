"""Parallel job processes on one machine hold disjoint GPUs (simulated: CUDA_VISIBLE_DEVICES lists them)."""

from __future__ import annotations

import multiprocessing
import os

import pytest

from qexp import gpus
from qexp.errors import ConfigError


def _claim_and_report(lock_dir, count, release, out):
    os.environ["CUDA_VISIBLE_DEVICES"] = "0,1,2,3"
    os.environ.pop("SLURM_JOB_ID", None)
    try:
        out.put(gpus.claim(count, lock_dir, wait_seconds=5))
    except ConfigError as err:
        out.put(str(err))
    release.wait(60)


def test_two_job_processes_hold_disjoint_gpus_until_they_exit(tmp_path):
    ctx = multiprocessing.get_context("spawn")
    out, release = ctx.Queue(), ctx.Event()  # kept referenced: the children rebuild them by name
    procs = [ctx.Process(target=_claim_and_report, args=(tmp_path, 2, release, out)) for _ in range(2)]
    for proc in procs:
        proc.start()
    claimed = [out.get(timeout=60), out.get(timeout=60)]
    assert sorted(claimed[0] + claimed[1]) == ["0", "1", "2", "3"]  # two GPUs each, none shared
    late = ctx.Process(target=_claim_and_report, args=(tmp_path, 1, release, out))
    late.start()
    assert "<gpus_per_job=1>" in out.get(timeout=60)  # all four held: a third job process is refused
    release.set()
    for proc in [*procs, late]:
        proc.join(30)
    # their locks died with them: a new process gets GPUs again
    third = ctx.Process(target=_claim_and_report, args=(tmp_path, 4, release, out))
    third.start()
    assert sorted(out.get(timeout=60)) == ["0", "1", "2", "3"]
    third.join(30)


def test_asking_for_more_gpus_than_exist_is_a_config_error(tmp_path, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    monkeypatch.setattr(gpus, "_held", [])
    with pytest.raises(ConfigError, match="<gpus_per_job=3>"):
        gpus.claim(3, tmp_path)


def test_no_gpus_no_claim(tmp_path, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert gpus.claim(1, tmp_path) == []
