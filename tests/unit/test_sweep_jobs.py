"""Which values a sweep drops when some of its jobs' configs do not compose."""

from __future__ import annotations

from qexp.sweep_jobs import named_key, parse, without


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
