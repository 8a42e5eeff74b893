"""Every phase runs on the job's device, or the device is refused; defaults that depend on it.

There is no GPU here: GPUs are simulated by CUDA_VISIBLE_DEVICES (what `gpus.pin` reads and
writes) and by making torch count GPUs (what `spec.prepare` checks).
"""

from __future__ import annotations

import os

import pytest
import torch

from qexp import gpus, spec
from qexp.errors import ConfigError
from qexp.spec import eval_dtype, prepare
from tests.conftest import compose_config


@pytest.fixture
def unpinned(monkeypatch):
    """A process that `gpus.pin` has not pinned yet, with four GPUs visible."""
    monkeypatch.setattr(gpus, "_pinned", [])
    monkeypatch.setattr(gpus, "_held", [])
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,5,6,7")
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)


@pytest.fixture
def cuda_available(monkeypatch):
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)


def test_pinning_cuda_n_leaves_only_that_gpu_visible(unpinned, tmp_path):
    gpus.pin("cuda:1", 1, tmp_path)
    assert gpus.visible_gpus() == ["5"] and gpus.pinned() == "cuda:1"
    gpus.pin("cuda:1", 1, tmp_path)  # the next job of a sweep in the same process: nothing changes
    assert gpus.visible_gpus() == ["5"]
    with pytest.raises(ConfigError, match="<device='cuda:0'>"):  # CUDA cannot move once started
        gpus.pin("cuda:0", 1, tmp_path)


def test_pinning_cpu_hides_every_gpu(unpinned, tmp_path):
    gpus.pin("cpu", 1, tmp_path)
    assert gpus.visible_gpus() == []


def test_pinning_auto_claims_gpus_per_job(unpinned, tmp_path):
    gpus.pin("auto", 2, tmp_path)
    assert gpus.visible_gpus() == ["4", "5"]


def test_a_gpu_that_is_not_there_is_refused(unpinned, tmp_path):
    with pytest.raises(ConfigError, match=r"Only 4 GPUs.*<device='cuda:4'>.*cuda:0 \.\. cuda:3"):
        gpus.pin("cuda:4", 1, tmp_path)


def _prepare(*overrides):
    return prepare(compose_config("model=tiny", "eval=fixtures", "eval.tasks=[arc_easy]", *overrides))


def test_a_pinned_cuda_n_is_the_only_gpu_the_job_uses(unpinned, cuda_available, tmp_path):
    gpus.pin("cuda:2", 1, tmp_path)
    assert gpus.visible_gpus() == ["6"]  # the third of 4,5,6,7, and nothing else
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "6"  # what CUDA, llmcompressor and lm-eval will see
    assert _prepare("device=cuda:2").device == "cuda"  # cuda:0 of a process that sees only GPU 6


def test_devices_an_unpinned_process_cannot_honour_are_refused(unpinned, cuda_available):
    # llmcompressor would calibrate on the first visible GPU: quantize there, evaluate elsewhere
    with pytest.raises(ConfigError, match="<device='cuda:1'>.*python -m qexp device=cuda:1"):
        _prepare("device=cuda:1")
    with pytest.raises(ConfigError, match="<device='cpu'>.*CUDA_VISIBLE_DEVICES"):
        _prepare("device=cpu")
    assert _prepare("device=cuda:0").device == "cuda:0"


def test_batch_size_and_awq_offload_default_per_device(cuda_available):
    on_gpu = _prepare("quant=awq")
    assert on_gpu.device == "cuda"
    assert on_gpu.cfg.eval.batch_size == "auto" and on_gpu.cfg.quant.offload_device == "cpu"


def test_batch_size_and_awq_offload_default_on_cpu():
    on_cpu = _prepare("quant=awq", "device=cpu")
    assert on_cpu.cfg.eval.batch_size == 8 and on_cpu.cfg.quant.offload_device == "none"
    given = _prepare("quant=awq", "device=cpu", "eval.batch_size=auto", "quant.offload_device=cpu")
    assert given.cfg.eval.batch_size == "auto" and given.cfg.quant.offload_device == "cpu"


CPUINFO = "processor\t: 0\nmodel name\t: Some CPU\nflags\t\t: fpu sse2 avx2 avx512f {extra}\n"


@pytest.mark.parametrize("extra,dtype", [("amx_bf16 amx_int8", "bfloat16"), ("avx512_bf16", "bfloat16"), ("", "float32")])
def test_eval_dtype_auto_is_bfloat16_where_the_cpu_has_bf16_matrix_units(tmp_path, extra, dtype):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(CPUINFO.format(extra=extra))
    assert eval_dtype("cpu", cpuinfo) == dtype
    assert eval_dtype("cuda:0", cpuinfo) == "bfloat16"


def test_eval_dtype_auto_is_resolved_into_the_eval_identity(monkeypatch):
    monkeypatch.setattr(spec, "eval_dtype", lambda device: "float32")  # a CPU without bf16 units
    auto = _prepare("device=cpu")
    assert auto.cfg.eval.dtype == "float32" and auto.identity["eval"]["dtype"] == "float32"
    assert auto.eval_hash == _prepare("device=cpu", "eval.dtype=float32").eval_hash
    bf16 = _prepare("device=cpu", "eval.dtype=bfloat16")
    assert bf16.cfg.eval.dtype == "bfloat16" and bf16.eval_hash != auto.eval_hash


def test_the_evaluation_runs_in_eval_dtype_and_keeps_answers_per_dtype(monkeypatch, tmp_path):
    from qexp import pipeline

    seen = []
    monkeypatch.setattr(pipeline, "evaluate", lambda *args, **kwargs: seen.append(kwargs) or pipeline.EvalResult({}, {}))
    paths = []
    for dtype in ("float32", "bfloat16"):
        job = _prepare("device=cpu", f"eval.dtype={dtype}", "model.dtype=float32")
        paths.append(pipeline._responses(job, tmp_path))
        pipeline._evaluate(job, tmp_path, pipeline.PhaseMemory.for_device("cpu"), tmp_path / f"kept-{dtype}.json")
    assert [kwargs["dtype"] for kwargs in seen] == ["float32", "bfloat16"]
    assert paths[0] != paths[1]  # a bf16 evaluation never reads answers a float32 one computed


def test_neither_setting_changes_the_config_hash():
    plain = _prepare("quant=awq", "device=cpu")
    other = _prepare("quant=awq", "device=cpu", "eval.batch_size=2", "quant.offload_device=cpu")
    assert plain.config_hash == other.config_hash and plain.checkpoint == other.checkpoint


def test_preparing_a_job_does_not_start_cuda(monkeypatch, unpinned, cuda_available):
    """A sweep prepares its first job in the process that then runs the jobs (basic launcher): were
    CUDA started there, pinning a job to its device afterwards would do nothing."""
    def started():
        raise AssertionError("prepare() asked torch.cuda.is_available(), which starts CUDA")

    monkeypatch.setattr(torch.cuda, "is_available", started)
    monkeypatch.setattr(torch.cuda, "_lazy_init", started)
    assert _prepare("quant=awq").device == "cuda"  # the GPU branch, with four GPUs visible
    assert _prepare("quant=gptq", "device=cuda:0").device == "cuda:0"


def test_a_sweep_checks_its_first_job_as_the_pinned_process_will_see_it(unpinned, cuda_available):
    """The sweep's own process prepares the first job before the launcher pins the job's process."""
    job = compose_config("model=tiny", "eval=fixtures", "eval.tasks=[arc_easy]", "device=cuda:1")
    assert prepare(job, pinned="cuda:1").device == "cuda"
    cpu_job = compose_config("model=tiny", "eval=fixtures", "eval.tasks=[arc_easy]", "device=cpu")
    assert prepare(cpu_job, pinned="cpu").device == "cpu"


def test_an_unpinned_process_is_told_which_gpus_exist(unpinned, cuda_available):
    with pytest.raises(ConfigError, match=r"Only 4 GPUs.*<device='cuda:7'>.*cuda:0 \.\. cuda:3"):
        _prepare("device=cuda:7")
