"""MLflow behind one adapter: every MLflow call qexp makes is in this package.

`Store` is one experiment (find, create, reap and read runs, handed out as qexp's own
`RunRecord`s), `Run` one run being written. What the runs are named and tagged, and their
metrics and artifacts, is the contract in `qexp.contract`, importable without MLflow.

- `address`: tracking URIs checked and shown without passwords, and what produced a run;
- `patience`: calls that wait out a store's outage;
- `store`: the experiment and its runs; `writer`: one run being written.
"""

import os

# MLflow's usage telemetry, on by default, reaches for the internet from a background thread; with
# none (qexp's offline case) that thread unsets its session variable in os.environ while requests
# iterates os.environ in another thread, an occasional KeyError on any MLflow call. Set before MLflow
# is imported (this package imports it lazily); MLFLOW_DISABLE_TELEMETRY=false turns it back on.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

from ..contract import ARTIFACTS, METRICS, TAGS, metric_name, results_metrics
from .address import UI_ADDRESS, URI_SCHEMES, check_uri, redact, source_tags
from .store import RunRecord, Store
from .writer import Run, flatten

__all__ = ["TAGS", "ARTIFACTS", "METRICS", "metric_name", "results_metrics", "check_uri", "redact", "source_tags",
           "flatten", "UI_ADDRESS", "URI_SCHEMES", "Store", "RunRecord", "Run"]
