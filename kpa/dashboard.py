"""The Grafana dashboard's queries, read from its JSON so nothing else keeps a second copy of them.

The dashboard (manifests/grafana/kpa-emulator-dashboard.json) is the one source of its PromQL: the
PNG in the docs (``kpa dashboard``) and the end-to-end test that evaluates every query against a
real Prometheus both read it here. Grafana fills the template variables (``$namespace``,
``$revision``) and its built-in ``$__rate_interval`` before it sends a query; outside Grafana
:func:`expand` does the same, with each variable's "All" value (``.*``) unless told otherwise and
``$__rate_interval`` as Grafana computes it for a 1 s scrape interval (four scrapes, at least 15 s) —
the interval `kpa up`'s Prometheus (``kpa.prometheus_server``) scrapes at.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEFAULT_DASHBOARD = (
    Path(__file__).resolve().parents[1] / "manifests" / "grafana" / "kpa-emulator-dashboard.json"
)
ALL = ".*"
# Grafana's built-in interval variables as it sets them for a 1 s scrape interval (rate windows must
# span several scrapes; Grafana's minimum is 15 s).
BUILTINS = {"__rate_interval": "15s", "__interval": "15s"}
_VARIABLE = re.compile(r"\$\{(\w+)\}|\$(\w+)")
_LEGEND = re.compile(r"\{\{\s*(\w+)\s*\}\}")


class DashboardError(ValueError):
    """The dashboard file cannot be used; the message names the file and what is wrong."""


@dataclass(frozen=True, slots=True)
class Query:
    expr: str
    legend: str


@dataclass(frozen=True, slots=True)
class Panel:
    title: str
    unit: str
    queries: tuple[Query, ...]


@dataclass(frozen=True, slots=True)
class Dashboard:
    title: str
    panels: tuple[Panel, ...]
    variables: tuple[str, ...]  # query variables (not the datasource) in the order Grafana shows them


def parse_dashboard(doc: Mapping[str, Any], source: str = "dashboard") -> Dashboard:
    """The panels and their queries from a Grafana dashboard document (schema 39)."""
    try:
        panels = []
        for i, panel in enumerate(doc["panels"]):
            unit = panel.get("fieldConfig", {}).get("defaults", {}).get("unit", "none")
            queries = tuple(Query(t["expr"], t.get("legendFormat", "")) for t in panel["targets"])
            if not queries:
                raise DashboardError(f"{source}: panels[{i}] ({panel.get('title')!r}) has no targets")
            panels.append(Panel(panel["title"], unit, queries))
        variables = tuple(
            v["name"] for v in doc.get("templating", {}).get("list", []) if v.get("type") == "query"
        )
        return Dashboard(doc["title"], tuple(panels), variables)
    except (KeyError, TypeError) as exc:
        raise DashboardError(f"{source}: not a Grafana dashboard (missing or wrong {exc})") from None


def load_dashboard(path: Path = DEFAULT_DASHBOARD) -> Dashboard:
    try:
        doc = json.loads(path.read_text())
    except OSError as exc:
        raise DashboardError(f"{path}: cannot read ({exc.strerror or exc})") from None
    except ValueError as exc:
        raise DashboardError(f"{path}: not JSON ({exc})") from None
    return parse_dashboard(doc, str(path))


def expand(expr: str, values: Mapping[str, str] | None = None) -> str:
    """``expr`` with its template variables replaced as Grafana would (unset ones: ``.*``, "All";
    built-ins: ``BUILTINS``)."""
    chosen = {**BUILTINS, **(values or {})}
    return _VARIABLE.sub(lambda m: chosen.get(m.group(1) or m.group(2), ALL), expr)


def legend(template: str, labels: Mapping[str, str]) -> str:
    """A series' name from the panel's ``legendFormat`` (``{{label}}`` placeholders), as Grafana shows it."""
    if not template:
        return "{" + ", ".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}"
    return _LEGEND.sub(lambda m: labels.get(m.group(1), ""), template).strip()
