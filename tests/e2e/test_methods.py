"""The methods beyond GPTQ and AWQ, end to end on the tiny model: RTN and FP8 (data-free), AutoRound
and W8A8 (calibrated), in one sweep, with their checkpoints, their record and the report."""

from __future__ import annotations

import json

import pytest

from tests.e2e.conftest import Sweep, assert_second_pass_redoes_nothing, qexp_cli, run_sweep

pytestmark = pytest.mark.e2e

METHODS = ["-m", "quant=rtn,autoround_cpu,w8a8,fp8", "calib.n=8,16", "model=tiny", "eval=fixtures",
           "eval.tasks=[arc_easy,hellaswag,sharegpt_heldout]", "eval.limit=20", "eval.heldout_docs=8",
           "model.max_seq_length=64", "device=cpu"]
NAMES = {"baseline", "rtn", "fp8", "autoround-8", "autoround-16", "w8a8-8", "w8a8-16"}


@pytest.fixture(scope="module")
def methods(tmp_path_factory, cache_dir) -> Sweep:
    return run_sweep(METHODS, tmp_path_factory.mktemp("methods"), cache_dir)


def test_data_free_methods_run_once_and_every_configuration_quantizes(methods):
    runs = methods.runs()
    assert set(runs) == NAMES and {r.info.status for r in runs.values()} == {"FINISHED"}
    assert "qexp sweep: 8 jobs, 8 ok, 0 failed" in methods.proc.stdout
    # The held-out ShareGPT file is evaluated, and still the second rtn and fp8 jobs (calib.n=16) are the
    # first ones: calib.n does not enter a data-free run's identity.
    assert methods.proc.stdout.count("SKIPPED") == 2
    log = methods.proc.stdout + methods.proc.stderr
    assert "rtn: skipped (data-free: calib.n=16 does not apply)" in log
    assert "fp8: skipped (data-free: calib.n=16 does not apply)" in log
    for name, run in runs.items():
        if name == "baseline":
            continue
        assert "qexp.checkpoint_reused" not in run.data.tags, name  # quantized by this sweep
        assert run.data.metrics["perf/quant_seconds"] > 0
        assert run.data.metrics["sharegpt_heldout/bits_per_byte"] > 0
        free = name in ("rtn", "fp8")
        assert run.data.tags["qexp.calib_n"] == ("0" if free else name.rsplit("-", 1)[1])
        artifacts = {a.path for a in methods.client().list_artifacts(run.info.run_id)}
        assert ("calibration" in artifacts) is not free, name
        assert any(k.startswith("calib.") for k in run.data.params) is not free, name


def test_checkpoints_are_compressed_tensors_with_the_schemes_asked_for(methods):
    runs = methods.runs()
    formats = {}
    for name in ("rtn", "autoround-16", "w8a8-16", "fp8"):
        config = json.loads((methods.checkpoint(runs[name]) / "config.json").read_text())["quantization_config"]
        group = config["config_groups"]["group_0"]
        formats[name] = (config["format"], group["weights"]["num_bits"], group["weights"]["type"],
                         (group.get("input_activations") or {}).get("type"))
    assert formats == {"rtn": ("pack-quantized", 4, "int", None),
                       "autoround-16": ("pack-quantized", 4, "int", None),
                       "w8a8-16": ("int-quantized", 8, "int", "int"),
                       "fp8": ("float-quantized", 8, "float", "float")}
    sizes = {name: run.data.metrics["perf/checkpoint_mb"] for name, run in runs.items()}
    assert sizes["rtn"] < sizes["w8a8-16"] < sizes["baseline"] and sizes["fp8"] == pytest.approx(sizes["w8a8-16"], 0.05)


def test_8bit_checkpoints_evaluate_on_cpu_with_activations_quantized(methods):
    """transformers decompresses the weights on CPU and compressed-tensors still quantizes each
    Linear's input per token, so the scores are those of the 8-bit scheme, not of the weights alone."""
    import torch
    from transformers import AutoModelForCausalLM

    runs = methods.runs()
    for name in ("w8a8-8", "fp8"):
        assert runs[name].data.metrics["arc_easy/acc"] >= 0 and "hellaswag/acc" in runs[name].data.metrics
        model = AutoModelForCausalLM.from_pretrained(methods.checkpoint(runs[name]), dtype=torch.float32)
        with torch.no_grad():
            model(torch.tensor([[1, 2, 3, 4]]))  # the first forward decompresses
            layer = model.model.layers[0].mlp.down_proj
            x = torch.randn(4, layer.in_features) * 3
            plain = torch.nn.functional.linear(x, layer.weight)
            assert layer.quantization_scheme.input_activations.dynamic is True
            assert not torch.allclose(layer(x), plain)  # the input was quantized on the way in


def test_report_compares_every_method_at_each_calibration_size(methods, cache_dir):
    proc = qexp_cli("--format", "json", cwd=methods.root, cache_dir=cache_dir, module="qexp.compare")
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = json.loads(proc.stdout)
    pairs = {(c["a"], c["b"]) for c in data["comparisons"] if c["table"] == "methods"}
    assert pairs == {("AutoRound-8", "RTN"), ("AutoRound-8", "W8A8-8"), ("AutoRound-8", "FP8"),
                     ("FP8", "RTN"), ("FP8", "W8A8-8"), ("RTN", "W8A8-8"),
                     ("AutoRound-16", "RTN"), ("AutoRound-16", "W8A8-16"), ("AutoRound-16", "FP8"),
                     ("FP8", "W8A8-16"), ("RTN", "W8A8-16")}
    calibration = {(c["a"], c["b"]) for c in data["comparisons"] if c["table"] == "calibration"}
    assert calibration == {("AutoRound-8", "AutoRound-16"), ("W8A8-8", "W8A8-16")}
    labels = {r["label"] for r in data["runs"]}
    assert set(data["sizes"]) == labels  # 4-bit and 8-bit checkpoints on one accuracy-size front
    assert any(v["accuracy_front"] for k, v in data["sizes"].items() if k != "Baseline")


def test_second_pass_redoes_nothing(methods, cache_dir):
    assert_second_pass_redoes_nothing(methods, METHODS, cache_dir, jobs=8)


def test_a_sweep_with_jobs_left_runs_only_those_and_its_report_names_the_reused_baseline(methods, cache_dir):
    before = methods.runs()
    assert METHODS[2] == "calib.n=8,16"
    args = ["-m", "quant=rtn,gptq", "calib.n=8", *METHODS[3:]]  # rtn is finished, gptq-8 is not
    proc = qexp_cli(*args, cwd=methods.root, cache_dir=cache_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    output = proc.stdout + proc.stderr
    assert "rtn: skipped (data-free: calib.n=" in output and "baseline evaluating" not in output
    assert "No finished baseline" not in output
    after = methods.runs()
    assert set(after) - set(before) == {"gptq-8"}
    client = methods.client()
    parents = client.search_runs([after["gptq-8"].info.experiment_id], "tags.`qexp.role` = 'sweep'",
                                 order_by=["attributes.start_time DESC"])
    members = json.loads(methods.artifact(parents[0], "report/members.json").read_text())
    assert members == {"Baseline": before["baseline"].info.run_id, "RTN": before["rtn"].info.run_id,
                       "GPTQ-8": after["gptq-8"].info.run_id}
