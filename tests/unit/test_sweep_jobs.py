"""Which values a sweep drops when some of its jobs' configs do not compose."""

from __future__ import annotations

from omegaconf import OmegaConf

from qexp.sweep_jobs import named_key, parse, per_job, without


def test_bad_values_are_dropped_from_their_swept_key_only():
    parsed = parse(["quant=gptq,awq", "+calib.n=215,abc,512", "model=tiny", "calib.seed=range(1,4)"])
    kept = without(parsed, {"+calib.n": {"abc"}, "calib.seed": {"2"}})
    assert kept == ["quant=gptq,awq", "+calib.n=215,512", "model=tiny", "calib.seed=1,3"]


def test_a_key_left_without_values_means_nothing_can_run():
    assert without(parse(["calib.n=x,y"]), {"calib.n": {"x", "y"}}) is None


def test_the_key_is_read_from_the_one_line_error():
    assert named_key("Wrong type: <calib.n='abc'>. Set calib.n to an integer.") == "calib.n"
    assert named_key("Could not find 'quant/foo': <quant='foo'>. Use one of […]") == "quant"
    assert named_key("no key here") is None


def test_a_key_is_per_job_when_the_sweep_varies_it_or_its_config_group():
    config = OmegaConf.create({"hydra": {"sweeper": {"params": {"calib.seed": "1,2"}}}})
    command = ["quant=gptq,awq", "+calib.n=8,16", "eval.tasks=[arc_easy,hellaswag]"]
    assert per_job("Bad: <quant.group_size=96>. Fix.", config, command)  # in the swept group
    assert per_job("Bad: <calib.n=-1>. Fix.", config, command)  # swept with a +
    assert per_job("Bad: <calib.seed=-1>. Fix.", config, command)  # swept by a preset's sweeper params
    assert not per_job("Bad: <eval.tasks=['x']>. Fix.", config, command)  # a list value is one value
    assert not per_job("Bad: <model.path='/x'>. Fix.", config, command)


def _sweep_config(params: dict, command: list[str]):
    return OmegaConf.create({"hydra": {"sweeper": {"params": params}, "overrides": {"task": command}},
                             "model": {"name": "smollm2-135m"}})


def test_a_command_line_value_replaces_the_presets_sweep_as_hydra_does():
    """`-m +experiment=smollm2_study quant=gptq calib.n=16`: Hydra launches one job, so the sweep counts one
    and names the values its jobs have, not the preset's."""
    from qexp.callbacks import _name
    from qexp.sweep_jobs import job_overrides, swept_values

    config = _sweep_config({"quant": "gptq,awq", "calib.n": "16,32"},
                           ["+experiment=smollm2_study", "quant=gptq", "calib.n=16"])
    assert job_overrides(config) == [["quant=gptq", "calib.n=16", "+experiment=smollm2_study"]]
    assert swept_values(config) == {"quant": ["gptq"], "calib.n": ["16"]}
    assert _name(config) == "smollm2-135m · gptq × 16"
    partly = _sweep_config({"quant": "gptq,awq", "calib.n": "16,32"}, ["calib.n=8,64"])
    assert len(job_overrides(partly)) == 4 and _name(partly) == "smollm2-135m · gptq,awq × 8,64"
    plain = _sweep_config({}, ["quant=gptq,awq", "calib.n=215,512", "model=tiny"])
    assert _name(plain) == "smollm2-135m · gptq,awq × 215,512" and len(job_overrides(plain)) == 4


def _job(quant: str, looks: int = 4, comparisons=None):
    return OmegaConf.create({"quant": {"name": quant},
                             "eval": {"sequential": {"looks": looks, "comparisons": comparisons}}})


def test_a_sequential_sweep_shares_alpha_among_its_quantized_jobs(tmp_path):
    from qexp.sweep_jobs import share_alpha, shared_alpha

    jobs = [_job("gptq"), _job("awq"), _job("none"), _job("rtn", comparisons=2), _job("gptq", looks=0)]
    assert share_alpha(jobs, tmp_path / "sweep") == 4  # the baseline compares with nothing
    assert [job.eval.sequential.comparisons for job in jobs] == [4, 4, 4, 2, None]  # as set; fixed size: unused
    later = _job("awq")  # a job of the sweep in its own process (a SLURM job) reads the sweep's number
    shared_alpha(later, tmp_path / "sweep")
    assert later.eval.sequential.comparisons == 4
    alone = _job("awq")  # a run outside a sweep is its study's one comparison
    shared_alpha(alone, None)
    assert alone.eval.sequential.comparisons == 1
    assert share_alpha([_job("gptq", looks=0)], tmp_path / "fixed") is None  # no sequential job: nothing shared
    assert not (tmp_path / "fixed").exists()
