"""The Grafana dashboard drawn without Grafana: each panel's own PromQL, answered by a real
Prometheus over ``query_range``, plotted with matplotlib into one PNG (docs/dashboard.md).

``evaluate`` asks every query once and keeps what came back, so the same call both draws the PNG
and tells which queries returned no data (the end-to-end test requires none).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from kpa.dashboard import Dashboard, Panel, Query, expand, legend
from kpa.prometheus_api import Series, query_range

MAX_POINTS = 600  # per series: Prometheus refuses more than 11,000 and a PNG shows far fewer


@dataclass(frozen=True, slots=True)
class Answer:
    panel: Panel
    query: Query
    expr: str  # as sent: the variables expanded
    series: list[Series]

    @property
    def has_data(self) -> bool:
        """At least one finite value: an empty result, or only NaN (a quantile of nothing), is no data."""
        return any(s.finite() for s in self.series)


def evaluate(
    url: str, dashboard: Dashboard, start: float, end: float, variables: Mapping[str, str] | None = None
) -> list[Answer]:
    step = max(1.0, (end - start) / MAX_POINTS)
    answers = []
    for panel in dashboard.panels:
        for query in panel.queries:
            expr = expand(query.expr, variables)
            answers.append(Answer(panel, query, expr, query_range(url, expr, start, end, step)))
    return answers


def draw(dashboard: Dashboard, answers: list[Answer], start: float, out: Path) -> Path:
    """One subplot per panel, two columns as in Grafana, x in seconds since ``start``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = dashboard.panels
    rows = (len(panels) + 1) // 2
    fig, axes = plt.subplots(rows, 2, figsize=(14, 3.0 * rows), squeeze=False)
    by_panel: dict[str, list[Answer]] = {}
    for answer in answers:
        by_panel.setdefault(answer.panel.title, []).append(answer)
    for ax, panel in zip(axes.flat, panels, strict=False):
        for answer in by_panel.get(panel.title, []):
            for series in answer.series:
                xs = [t - start for t in series.times]
                ax.plot(xs, series.values, label=legend(answer.query.legend, series.labels), linewidth=1.2)
        ax.set_title(panel.title, fontsize=10)
        ax.set_ylabel(panel.unit if panel.unit != "none" else "")
        ax.grid(True, alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7, loc="upper right")
        else:
            ax.text(0.5, 0.5, "no data", transform=ax.transAxes, ha="center", va="center", color="gray")
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    for ax in axes[-1]:
        ax.set_xlabel("seconds")
    fig.suptitle(f"{dashboard.title} — every panel's PromQL answered by Prometheus", fontsize=12)
    fig.tight_layout(rect=(0, 0, 1, 0.98))  # the top 2 % is the title's
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return out
