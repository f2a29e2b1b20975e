"""`kpa dashboard`: draw the Grafana dashboard from a running Prometheus into a PNG, and say which of
its queries returned no data (``--check`` makes that an error).

    kpa dashboard --prometheus http://127.0.0.1:9090 --since 10m --out dashboard.png
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from kpa.argtypes import duration
from kpa.dashboard import DEFAULT_DASHBOARD, DashboardError, load_dashboard
from kpa.dashboard_png import draw, evaluate
from kpa.prometheus_api import PrometheusQueryError


def _variable(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"--var {text!r}: expected NAME=VALUE, e.g. revision=hello")
    return name, value


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--prometheus", required=True, metavar="URL", help="e.g. http://127.0.0.1:9090")
    parser.add_argument("--dashboard", type=Path, default=DEFAULT_DASHBOARD, help="Grafana dashboard JSON")
    parser.add_argument("--since", type=duration, default=600.0, help="how far back to draw (default 10m)")
    parser.add_argument("--out", type=Path, default=Path("dashboard.png"), help="the PNG to write")
    parser.add_argument(
        "--var", type=_variable, action="append", default=[], metavar="NAME=VALUE",
        help="a dashboard variable (default: every one is 'All')",
    )  # fmt: skip
    parser.add_argument("--check", action="store_true", help="exit 1 if any query returned no data")


def run(args: argparse.Namespace) -> int:
    try:
        dashboard = load_dashboard(args.dashboard)
        end = time.time()
        answers = evaluate(args.prometheus, dashboard, end - args.since, end, dict(args.var))
    except (DashboardError, PrometheusQueryError) as exc:
        print(f"kpa dashboard: {exc}")
        return 2
    draw(dashboard, answers, end - args.since, args.out)
    empty = [a for a in answers if not a.has_data]
    print(f"kpa dashboard: {len(answers)} queries, {len(answers) - len(empty)} with data; wrote {args.out}")
    for answer in empty:
        print(f"  no data: [{answer.panel.title}] {answer.expr}")
    return 1 if args.check and empty else 0
