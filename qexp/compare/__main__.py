"""`python -m qexp.compare`: print the study's report from MLflow (text, Markdown or JSON)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from ..cli import add_study_args, refusing, store_parser
from .data import load_study
from .flags import add_settings_args, settings_from
from .report import build_report, render, to_json


def _metric_args(values: list[str]) -> tuple[str, dict[str, str]]:
    default, overrides = "acc", {}
    for value in values:
        if "=" in value:
            task, metric = value.split("=", 1)
            overrides[task] = metric
        else:
            default = value
    return default, overrides


@refusing
def main(argv: list[str] | None = None) -> int:
    parser, _ = store_parser("python -m qexp.compare", __doc__)
    add_study_args(parser, "report on")
    parser.add_argument("--metric", action="append", default=[], metavar="METRIC or TASK=METRIC",
                        help="acc (default) or acc_norm for every task, or per task: --metric hellaswag=acc_norm")
    parser.add_argument("--format", choices=["text", "markdown", "json"], default="text")
    parser.add_argument("--output", "-o", help="write the report to this file instead of stdout")
    parser.add_argument("--plots", metavar="DIR", help="also save the plots as PNG files in DIR")
    add_settings_args(parser)
    args = parser.parse_args(argv)
    settings = settings_from(args, __package__)  # qexp.compare, as its other messages begin
    if isinstance(settings, int):
        return settings

    metric, overrides = _metric_args(args.metric)
    study = load_study(args.tracking_uri, args.experiment, model=args.model, sweep_id=args.sweep_id)
    report = build_report(study, metric, overrides, settings)
    text = json.dumps(to_json(report)) if args.format == "json" else render(report, args.format)
    if args.output:
        Path(args.output).write_text(text)
        print(f"wrote {args.output}", file=sys.stderr)
    else:
        print(text)
    if args.plots:
        from .plots import save_plots

        for path in save_plots(report, args.plots):
            print(f"wrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
