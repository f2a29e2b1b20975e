"""`kpa up`'s Prometheus file_sd target file: what it lists, and that it is written atomically,
only on change, and emptied when the stack stops."""

from __future__ import annotations

import json
import os

import pytest
from tables import named

from localbackend.scrape_file import ScrapeTargetFile
from localbackend.scrape_targets import (
    MetricsEndpoint,
    PodPorts,
    file_sd_text,
    stack_endpoints,
    user_metrics_path,
)

ADMIN = "127.0.0.1:8081"


def _groups(endpoints: list[MetricsEndpoint]) -> list[dict]:
    return json.loads(file_sd_text(endpoints))


def test_the_stack_itself_is_always_a_target():
    assert _groups(stack_endpoints(ADMIN, [], {})) == [{"targets": [ADMIN], "labels": {"job": "kpa-up"}}]


def test_each_pod_queue_proxy_is_a_target_with_kubernetes_style_labels():
    pods = [
        PodPorts("default", "web", "web-2", 41002, 51002),
        PodPorts("default", "web", "web-1", 41001, 51001),
    ]
    groups = _groups(stack_endpoints(ADMIN, pods, {("default", "web"): None}))
    assert groups[1:] == [
        {
            "targets": ["127.0.0.1:41001"],
            "labels": {"job": "queue-proxy", "namespace": "default", "pod": "web-1", "revision": "web"},
        },
        {
            "targets": ["127.0.0.1:41002"],
            "labels": {"job": "queue-proxy", "namespace": "default", "pod": "web-2", "revision": "web"},
        },
    ]


def test_a_pod_whose_ports_are_not_known_yet_is_left_out():
    groups = _groups(
        stack_endpoints(ADMIN, [PodPorts("default", "web", "web-1", 0, 0)], {("default", "web"): "/metrics"})
    )
    assert [g["labels"]["job"] for g in groups] == ["kpa-up"]


def test_target_labels_never_collide_with_knative_metric_labels():
    groups = _groups(stack_endpoints(ADMIN, [PodPorts("ns", "r", "r-1", 1, 2)], {("ns", "r"): "/metrics"}))
    for group in groups:
        assert not {"namespace_name", "revision_name", "pod_name", "configuration_name"} & set(
            group["labels"]
        )


SCRAPE = "serving.kserve.io/enable-prometheus-scraping"
PATH = "prometheus.kserve.io/path"


@pytest.mark.parametrize(
    ("case", "annotations", "path"),
    named(
        [
            ("not asked", {}, None),
            ("asked", {SCRAPE: "true"}, "/metrics"),
            ("asked, any case", {SCRAPE: "True"}, "/metrics"),
            ("false", {SCRAPE: "false"}, None),
            ("own path", {SCRAPE: "true", PATH: "/stats/prom"}, "/stats/prom"),
            ("path without slash", {SCRAPE: "true", PATH: "m"}, "/m"),
        ]
    ),
)
def test_user_container_is_scraped_only_when_the_revision_opts_in_with_kserves_annotation(
    case, annotations, path
):
    assert user_metrics_path(annotations) == path


def test_an_opted_in_user_container_gets_its_own_job_and_path():
    groups = _groups(stack_endpoints(ADMIN, [PodPorts("ns", "m", "m-1", 4001, 5001)], {("ns", "m"): "/prom"}))
    user = [g for g in groups if g["labels"]["job"] == "user-container"]
    assert user == [
        {
            "targets": ["127.0.0.1:5001"],
            "labels": {
                "job": "user-container",
                "namespace": "ns",
                "pod": "m-1",
                "revision": "m",
                "__metrics_path__": "/prom",
            },
        }
    ]


def test_the_text_does_not_depend_on_the_order_pods_are_listed():
    a, b = PodPorts("ns", "r", "r-1", 1, 0), PodPorts("ns", "r", "r-2", 2, 0)
    assert file_sd_text(stack_endpoints(ADMIN, [a, b], {})) == file_sd_text(
        stack_endpoints(ADMIN, [b, a], {})
    )


def test_the_file_is_replaced_atomically_and_only_when_it_changes(tmp_path):
    path = tmp_path / "sd" / "targets.json"
    target_file = ScrapeTargetFile(path)
    target_file.write([MetricsEndpoint("kpa-up", ADMIN)])
    first_inode = os.stat(path).st_ino
    target_file.write([MetricsEndpoint("kpa-up", ADMIN)])
    assert target_file.writes == 1 and os.stat(path).st_ino == first_inode  # unchanged: not rewritten
    target_file.write([MetricsEndpoint("kpa-up", ADMIN), MetricsEndpoint("queue-proxy", "127.0.0.1:9")])
    assert target_file.writes == 2 and os.stat(path).st_ino != first_inode  # a new file renamed over it
    assert len(json.loads(path.read_text())) == 2
    assert [p.name for p in path.parent.iterdir()] == ["targets.json"]  # no temporary file left
    assert oct(os.stat(path).st_mode & 0o777) == "0o644"  # Prometheus may run as another user


def test_clearing_leaves_an_empty_list_so_prometheus_drops_every_target(tmp_path):
    target_file = ScrapeTargetFile(tmp_path / "targets.json")
    target_file.write([MetricsEndpoint("kpa-up", ADMIN)])
    target_file.clear()
    assert json.loads((tmp_path / "targets.json").read_text()) == []


def test_an_unwritable_place_is_reported_and_never_raises(tmp_path, caplog):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    target_file = ScrapeTargetFile(blocker / "targets.json")  # a directory that cannot exist
    target_file.write([MetricsEndpoint("kpa-up", ADMIN)])
    assert target_file.writes == 0
    assert "cannot write the Prometheus target file" in caplog.text
