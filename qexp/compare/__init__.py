"""Compare the runs of a qexp study: tables, honest statistics, report, plots.

`data` reads the study from MLflow; `scores` (what each run scored), `paired` (paired tests,
Holm per table), `ranking` (ranking and recommendations) and `costs` (perplexity, size,
time) build the tables; `report` assembles them (and its JSON), `render` writes them as text or
Markdown, `plots` draws them; `power` and `plan` say what a study could detect and how to size one.

    from qexp.compare import load_study, build_report, render
    study = load_study()                  # the store and experiment of the composed config
    print(render(build_report(study)))
"""

from .data import Study, load_study, run_label
from .report import Report, build_report, render, to_json
from .stats import ALPHA, holm, mcnemar_exact, wilson_interval
from .paired import (calibration_comparison, compare, deltas_vs_baseline, method_comparison, mmlu_categories,
                     mmlu_subjects)
from .ranking import ranking, recommendations
from .scores import display_name, scores, summary_table

__all__ = [
    "ALPHA", "Report", "Study", "build_report", "calibration_comparison", "compare", "display_name",
    "deltas_vs_baseline", "holm", "load_study", "mcnemar_exact", "method_comparison", "mmlu_categories",
    "mmlu_subjects", "ranking", "recommendations", "render", "run_label", "scores", "summary_table",
    "to_json", "wilson_interval",
]
