"""Memory between phases, on the tiny model in this process: nothing a run loaded outlives it."""

from __future__ import annotations

import gc
import weakref

import pytest
import transformers
from llmcompressor.pipelines.cache import IntermediatesCache
from mlflow import MlflowClient

from qexp import pipeline
from tests.conftest import compose_config

pytestmark = pytest.mark.e2e


@pytest.fixture
def created(monkeypatch):
    """Weak references to every model and AWQ activation cache created while the test runs."""
    seen: dict[str, list] = {"models": [], "offload_devices": []}
    model_init, cache_init = transformers.PreTrainedModel.__init__, IntermediatesCache.__init__

    def track_model(self, *args, **kwargs):
        model_init(self, *args, **kwargs)
        seen["models"].append(weakref.ref(self))

    def track_cache(self, *args, **kwargs):
        cache_init(self, *args, **kwargs)
        seen["offload_devices"].append(self.offload_device)

    monkeypatch.setattr(transformers.PreTrainedModel, "__init__", track_model)
    monkeypatch.setattr(IntermediatesCache, "__init__", track_cache)
    return seen


def test_quantized_and_evaluated_models_are_gone_when_run_returns(created, tmp_path):
    cfg = compose_config("model=tiny", "eval=fixtures", "eval.tasks=[arc_easy]", "eval.limit=4", "quant=awq",
                         "calib.n=4", "quant.offload_device=cpu", "tracking.log_checkpoint=false",
                         f"paths.checkpoint_dir={tmp_path / 'ckpt'}")
    result = pipeline.run(cfg)
    assert result.status == "FINISHED"
    gc.collect()
    # the baseline's evaluated model, the model quantized, the checkpoint's evaluated model (each with
    # its inner base model)
    assert len(created["models"]) >= 6
    assert [ref for ref in created["models"] if ref() is not None] == []
    # AWQ cached its layers' inputs where quant.offload_device said
    assert created["offload_devices"] and {str(d) for d in created["offload_devices"]} == {"cpu"}

    metrics = MlflowClient(cfg.tracking.uri).get_run(result.run_id).data.metrics
    assert {"perf/quant_peak_rss_mb", "perf/eval_peak_rss_mb", "perf/peak_rss_mb"} <= set(metrics)
    assert metrics["perf/peak_rss_mb"] == max(metrics["perf/quant_peak_rss_mb"], metrics["perf/eval_peak_rss_mb"])
