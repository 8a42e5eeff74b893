"""What a report holds (`Report`): built by `report`, written out by `render`, drawn by `plots`."""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from .data import Study
from .power import Settings

__all__ = ["Report"]


@dataclass
class Report:
    study: Study
    metrics: dict[str, str]  # task -> metric used (with its filter: exact_match,strict-match)
    scores: pd.DataFrame  # long: label, task, metric, score, n, ci_low, ci_high (each run's full set)
    summary: pd.DataFrame
    vs_baseline: pd.DataFrame
    categories: pd.DataFrame
    subjects: pd.DataFrame
    methods: pd.DataFrame
    calibration: pd.DataFrame
    average_tests: pd.DataFrame  # every pair's average difference (paired over documents), one Holm family
    ranking: pd.DataFrame
    recovery: pd.DataFrame  # label, task (or "average"), recovery, ci_low, ci_high
    best_vs_others: pd.DataFrame  # the best quantized run against the others, per task
    recommendations: list[str]
    perplexity: pd.DataFrame
    cost: pd.DataFrame
    sizes: pd.DataFrame  # checkpoint size against accuracy (and perplexity), with the Pareto fronts
    repeats: pd.DataFrame  # configurations run over several calibration seeds: mean and spread
    speed: pd.DataFrame = field(default_factory=pd.DataFrame)  # vLLM's figures and ratios to the baseline
    speed_fronts: pd.DataFrame = field(default_factory=pd.DataFrame)  # accuracy against speed and memory
    sequential: pd.DataFrame = field(default_factory=pd.DataFrame)  # sequentially evaluated runs' verdicts
    sequential_tasks: pd.DataFrame = field(default_factory=pd.DataFrame)  # eval.sequential.per_task: per task
    warnings: list[str] = field(default_factory=list)
    settings: Settings = field(default_factory=Settings)  # what the power and equivalence statements are about

    @property
    def comparisons(self) -> pd.DataFrame:
        """Every paired comparison of every table, one row each (the JSON's `comparisons`)."""
        frames = [f for f in (self.vs_baseline, self.categories, self.subjects, self.methods, self.calibration,
                              self.best_vs_others) if len(f)]
        return pd.concat(frames, ignore_index=True) if frames else self.methods.iloc[0:0]
