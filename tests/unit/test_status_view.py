"""`kpa status` and `kpa up`'s live table: pending pods, the capacity cap and the last pod failure
are shown at every console width."""

import pytest
from rich.console import Console

from kpa.status import status_table, summarize_rows

ROW = {
    "namespace": "default",
    "name": "hello",
    "desired_pods": 100000,
    "want": 100000,
    "ready_pods": 3,
    "pods": 3,
    "pending_pods": 99997,
    "mode": "proxy",
    "state": "active",
    "panicking": False,
    "stable_concurrency": 0.0,
    "panic_concurrency": 0.0,
    "excess_burst_capacity": 211,
    "target": 70.0,
    "reason": "min-scale",
    "scrape_error": None,
    "pod_failure": "hello-7 user container exited with code 3 before becoming ready",
}
CAPACITY = {"max_pods": 3, "pods": 3, "starting": 0}
DOC = {"entry": "http://127.0.0.1:8080", "uptime_s": 12.0, "capacity": CAPACITY, "revisions": [ROW]}


def rendered(width: int) -> str:
    console = Console(width=width, record=True, color_system=None)
    console.print(status_table(DOC, width))
    return console.export_text()


@pytest.mark.parametrize("width", [80, 200])
def test_pending_pods_the_cap_and_the_last_failure_are_shown(width):
    text = rendered(width)
    assert "99997" in text
    assert "pending" in text if width >= 120 else "pend" in text  # narrow consoles cut headers
    assert "pods 3/3 (cap)" in text
    assert "hello-7 user container exited" in text


def test_a_revision_with_nothing_pending_shows_a_dash_and_older_documents_still_render():
    row = {**ROW, "pending_pods": 0, "pod_failure": None}
    text_doc = {"revisions": [row]}
    console = Console(width=200, record=True, color_system=None)
    console.print(status_table(text_doc, 200))
    assert "99997" not in console.export_text()
    legacy = {k: v for k, v in row.items() if k != "pending_pods"}  # a kpa up from before the cap
    console.print(status_table({"revisions": [legacy]}, 200))


def test_the_log_line_names_pending_pods_only_when_there_are_some():
    assert summarize_rows([ROW]).endswith(", 99997 pending")
    assert "pending" not in summarize_rows([{**ROW, "pending_pods": 0}])
