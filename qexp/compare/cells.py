"""How the report writes a figure in a table cell: percentages, points, p-values, intervals, ratios."""

from __future__ import annotations

import pandas as pd
from tabulate import tabulate

from .power import MAX_DOCS

__all__ = ["pct", "pts", "p_value", "interval", "table", "detectable", "docs_needed", "ratio", "number"]


def pct(value: float) -> str:
    return "" if value is None or pd.isna(value) else f"{round(100 * value, 1) + 0.0:.1f}"  # + 0.0: no "-0.0"


def pts(value: float) -> str:
    return "" if value is None or pd.isna(value) else f"{round(100 * value, 1) + 0.0:+.1f}"


def p_value(value: float) -> str:
    if value is None or pd.isna(value):
        return "not tested"
    return "<0.001" if value < 0.001 else f"{value:.3f}"


def interval(low: float, high: float, fmt=pts) -> str:
    return "" if pd.isna(low) or pd.isna(high) else f"[{fmt(low)}, {fmt(high)}]"


def table(frame: pd.DataFrame, fmt: str) -> str:
    return tabulate(frame, headers="keys", tablefmt="github" if fmt == "markdown" else "simple",
                    showindex=False, disable_numparse=True)


def detectable(mde: float) -> str:
    return "" if mde is None or pd.isna(mde) else f"{100 * mde:.1f}"


def docs_needed(needed, tested: bool) -> str:
    if not tested:
        return ""
    return f">{MAX_DOCS:,}" if needed is None or pd.isna(needed) else f"{int(needed):,}"


def ratio(value: float, low: float, high: float, differs: bool | None = None) -> str:
    if pd.isna(value):
        return ""
    text = f"{value:.2f}×" + ("" if pd.isna(low) or pd.isna(high) else f" [{low:.2f}, {high:.2f}]")
    return text + (" ≈" if differs is False else "")


def number(value: float, fmt: str = "{:,.1f}") -> str:
    return "" if pd.isna(value) else fmt.format(value)
