"""The Grafana dashboard file: every panel has queries, they parse, and the variables expand as
Grafana expands them."""

from __future__ import annotations

import json

import pytest
from tables import named

from kpa.dashboard import DEFAULT_DASHBOARD, DashboardError, expand, legend, load_dashboard, parse_dashboard


def test_the_shipped_dashboard_has_every_panel_the_live_table_has():
    dashboard = load_dashboard()
    exprs = " ".join(q.expr for p in dashboard.panels for q in p.queries)
    for metric in (
        "autoscaler_desired_pods",
        "autoscaler_actual_pods",
        "autoscaler_panic_mode",
        "kpa_autoscaler_activator_in_path",
        "autoscaler_stable_request_concurrency",
        "autoscaler_panic_request_concurrency",
        "autoscaler_excess_burst_capacity",
        "revision_request_count",
        "revision_request_latencies_bucket",
        "kpa_activator_cold_start_wait_seconds",
    ):
        assert metric in exprs, metric
    assert dashboard.variables == ("namespace", "revision")


def test_every_query_is_filtered_by_the_dashboard_variables():
    for panel in load_dashboard().panels:
        for query in panel.queries:
            assert "$namespace" in query.expr and "$revision" in query.expr, (panel.title, query.expr)


@pytest.mark.parametrize(
    ("case", "expr", "values", "expanded"),
    named(
        [
            ("all by default", 'up{ns=~"$namespace"}', {}, 'up{ns=~".*"}'),
            ("a chosen value", 'up{r=~"$revision"}', {"revision": "web"}, 'up{r=~"web"}'),
            ("braced form", 'up{r=~"${revision}"}', {"revision": "web"}, 'up{r=~"web"}'),
            ("no variables", "sum(up)", {}, "sum(up)"),
            ("rate interval", "rate(x[$__rate_interval])", {}, "rate(x[15s])"),
            ("rate interval chosen", "rate(x[$__rate_interval])", {"__rate_interval": "2m"}, "rate(x[2m])"),
        ]
    ),
)
def test_variables_expand_as_grafana_does(case, expr, values, expanded):
    assert expand(expr, values) == expanded


def test_legend_fills_label_placeholders_and_names_unlabelled_series_by_their_labels():
    assert legend("p95 {{revision_name}}", {"revision_name": "web"}) == "p95 web"
    assert legend("", {"b": "2", "a": "1"}) == '{a="1", b="2"}'


def test_a_panel_without_targets_is_named_in_the_error():
    doc = json.loads(DEFAULT_DASHBOARD.read_text())
    doc["panels"][2]["targets"] = []
    with pytest.raises(DashboardError, match=r"panels\[2\].*has no targets"):
        parse_dashboard(doc, "d.json")


def test_a_file_that_is_not_a_dashboard_says_so(tmp_path):
    (tmp_path / "x.json").write_text('{"title": "x"}')
    with pytest.raises(DashboardError, match=r"x.json: not a Grafana dashboard"):
        load_dashboard(tmp_path / "x.json")
    (tmp_path / "y.json").write_text("{")
    with pytest.raises(DashboardError, match=r"y.json: not JSON"):
        load_dashboard(tmp_path / "y.json")
