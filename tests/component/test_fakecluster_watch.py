"""Watches on the fake API server through the official client, over real HTTP on loopback.

A controller's informer lists, then watches from the list's resourceVersion, re-lists on 410 and
resumes after a dropped stream from the last resourceVersion it saw: each of those paths must
behave here as on kube-apiserver, or a controller tested on the fake loses or repeats events there.
"""

import contextlib
import http.client
import json
import time
from collections.abc import Iterator

import pytest
from fakecluster_fixtures import NAMESPACE, Collected, Kube, config_map, watch_names
from kubernetes.client import ApiException
from tables import named
from waiting import wait_until_blocking


@pytest.fixture
def kube():
    with Kube(bookmark_every_s=0.1) as running:
        yield running


def test_watch_from_a_lists_resource_version_sees_only_later_changes_in_order(kube):
    kube.core.create_namespaced_config_map(NAMESPACE, config_map("a"))
    kube.core.create_namespaced_config_map(NAMESPACE, config_map("b"))
    listed = kube.core.list_namespaced_config_map(NAMESPACE)
    kube.core.create_namespaced_config_map(NAMESPACE, config_map("c"))
    kube.core.patch_namespaced_config_map("a", NAMESPACE, {"data": {"k": "changed"}})
    kube.core.delete_namespaced_config_map("b", NAMESPACE)
    watched = Collected(
        kube.core.list_namespaced_config_map,
        lambda events: len(events) == 3,
        NAMESPACE,
        resource_version=listed.metadata.resource_version,
    )
    events = watched.wait()
    assert list(watch_names(events)) == [("ADDED", "c"), ("MODIFIED", "a"), ("DELETED", "b")]
    versions = [int(event["object"].metadata.resource_version) for event in events]
    assert versions == sorted(versions) and versions[0] > int(listed.metadata.resource_version)
    assert events[1]["object"].data == {"k": "changed"}  # typed V1ConfigMap objects
    assert events[2]["object"].data == {"k": "v"}  # DELETED carries the last state


def test_watch_without_resource_version_first_replays_every_object_as_added(kube):
    kube.core.create_namespaced_config_map(NAMESPACE, config_map("a"))
    kube.core.create_namespaced_config_map("elsewhere", config_map("x"))
    watched = Collected(kube.core.list_namespaced_config_map, lambda events: len(events) == 2, NAMESPACE)
    # The replay arrives before the change, as on a real server.
    wait_until_blocking(
        lambda: len(watched.events) == 1, what=lambda: f"the replay of a: {watched.summary()}"
    )
    kube.core.create_namespaced_config_map(NAMESPACE, config_map("b"))
    assert list(watch_names(watched.wait())) == [("ADDED", "a"), ("ADDED", "b")]


def test_watch_from_a_compacted_resource_version_raises_410_and_a_relist_recovers(kube):
    kube.core.create_namespaced_config_map(NAMESPACE, config_map("a"))
    old = kube.core.list_namespaced_config_map(NAMESPACE).metadata.resource_version
    kube.core.create_namespaced_config_map(NAMESPACE, config_map("b"))
    kube.server.compact()
    expired = Collected(
        kube.core.list_namespaced_config_map, lambda events: True, NAMESPACE, resource_version=old
    )
    expired.wait()
    assert isinstance(expired.error, ApiException) and expired.error.status == 410
    assert "Expired: too old resource version" in expired.error.reason
    relisted = kube.core.list_namespaced_config_map(NAMESPACE)
    assert [item.metadata.name for item in relisted.items] == ["a", "b"]
    resumed = Collected(
        kube.core.list_namespaced_config_map,
        lambda events: len(events) == 1,
        NAMESPACE,
        resource_version=relisted.metadata.resource_version,
    )
    kube.core.create_namespaced_config_map(NAMESPACE, config_map("c"))
    assert list(watch_names(resumed.wait())) == [("ADDED", "c")]


@contextlib.contextmanager
def raw_get(kube, query) -> Iterator[http.client.HTTPResponse]:
    """The answer to a GET of the namespace's ConfigMaps with ``query``; its connection is closed on
    the way out."""
    connection = http.client.HTTPConnection("127.0.0.1", kube.server.port, timeout=5)
    try:
        connection.request("GET", f"/api/v1/namespaces/{NAMESPACE}/configmaps?{query}")
        yield connection.getresponse()
    finally:
        connection.close()


def test_expired_watch_is_a_200_stream_with_one_error_event_carrying_code_reason_and_message(kube):
    kube.core.create_namespaced_config_map(NAMESPACE, config_map("a"))
    kube.core.create_namespaced_config_map(NAMESPACE, config_map("b"))
    kube.server.compact()
    with raw_get(kube, "watch=true&resourceVersion=1") as response:
        assert response.status == 200
        event = json.loads(response.read())  # one line, then the server ends the stream
    assert event["type"] == "ERROR"
    assert event["object"] == {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": "too old resource version: 1 (2)",
        "reason": "Expired",
        "code": 410,
    }


@pytest.mark.parametrize(
    ("flag", "watching"),
    named(
        [("true", True), ("True", True), ("1", True), ("false", False), ("0", False)],
        lambda flag, watching: f"watch={flag} {'watches' if watching else 'lists'}",
    ),
)
def test_watch_flag_is_true_unless_false_or_0(kube, flag, watching):
    kube.core.create_namespaced_config_map(NAMESPACE, config_map("a"))
    with raw_get(kube, f"watch={flag}&timeoutSeconds=1&pretty=true") as response:  # unknown params ignored
        first = json.loads(response.readline())
    assert (first.get("type") == "ADDED") is watching
    assert (first.get("kind") == "ConfigMapList") is not watching


def test_bookmarks_come_only_when_allowed_and_carry_the_newest_resource_version(kube):
    kube.core.create_namespaced_config_map(NAMESPACE, config_map("a"))
    newest = kube.core.create_namespaced_config_map("elsewhere", config_map("x")).metadata.resource_version
    start = kube.core.list_namespaced_config_map(NAMESPACE).metadata.resource_version
    with_bookmarks = Collected(
        kube.core.list_namespaced_config_map,
        lambda events: False,
        NAMESPACE,
        resource_version=start,
        allow_watch_bookmarks=True,
        timeout_seconds=1,
    )
    without = Collected(
        kube.core.list_namespaced_config_map,
        lambda events: False,
        NAMESPACE,
        resource_version=start,
        timeout_seconds=1,
    )
    bookmarks = [event for event in with_bookmarks.wait() if event["type"] == "BOOKMARK"]
    assert len(bookmarks) >= 3  # every 0.1 s here (about a minute on kube-apiserver)
    assert bookmarks[-1]["object"] == {
        "kind": "ConfigMap",
        "apiVersion": "v1",
        "metadata": {"resourceVersion": newest},
    }
    assert with_bookmarks.watch.resource_version == newest  # the client resumes from a bookmark's RV
    assert without.wait() == []


def test_dropped_watch_resumes_from_the_last_resource_version_missing_and_repeating_nothing(kube):
    watched = Collected(
        kube.core.list_namespaced_config_map,
        lambda events: len(events) == 4,
        NAMESPACE,
        resource_version=kube.core.list_namespaced_config_map(NAMESPACE).metadata.resource_version,
    )
    for name in ("a", "b"):
        kube.core.create_namespaced_config_map(NAMESPACE, config_map(name))
    wait_until_blocking(lambda: len(watched.events) == 2, what=lambda: f"a and b: {watched.summary()}")
    assert kube.server.drop_watches() == 1
    for name in ("c", "d"):  # written while the client reconnects: it must still see both
        kube.core.create_namespaced_config_map(NAMESPACE, config_map(name))
    assert list(watch_names(watched.wait())) == [
        ("ADDED", "a"),
        ("ADDED", "b"),
        ("ADDED", "c"),
        ("ADDED", "d"),
    ]
    assert kube.server.requests("watch", "configmaps") == 2


def test_objects_entering_and_leaving_a_label_selection_arrive_as_added_and_deleted(kube):
    watched = Collected(
        kube.core.list_namespaced_config_map,
        lambda events: len(events) == 3,
        NAMESPACE,
        label_selector="tier=web",
    )
    kube.core.create_namespaced_config_map(NAMESPACE, config_map("a", tier="db"))
    kube.core.patch_namespaced_config_map("a", NAMESPACE, {"metadata": {"labels": {"tier": "web"}}})
    kube.core.patch_namespaced_config_map("a", NAMESPACE, {"data": {"k": "2"}})
    kube.core.patch_namespaced_config_map("a", NAMESPACE, {"metadata": {"labels": {"tier": "db"}}})
    events = watched.wait()
    assert list(watch_names(events)) == [("ADDED", "a"), ("MODIFIED", "a"), ("DELETED", "a")]
    assert events[2]["object"].metadata.labels == {"tier": "web"}  # as it was when it left


def test_field_selector_by_name_watches_one_object(kube):
    watched = Collected(
        kube.core.list_namespaced_config_map,
        lambda events: len(events) == 1,
        NAMESPACE,
        field_selector="metadata.name=b",
    )
    kube.core.create_namespaced_config_map(NAMESPACE, config_map("a"))
    kube.core.create_namespaced_config_map(NAMESPACE, config_map("b"))
    assert list(watch_names(watched.wait())) == [("ADDED", "b")]


def test_watch_with_a_field_the_type_does_not_index_fails_before_streaming_with_400(kube):
    with pytest.raises(ApiException) as refused:
        kube.core.list_namespaced_config_map(
            NAMESPACE, watch=True, field_selector="data.k=v", _preload_content=False
        )
    assert refused.value.status == 400
    assert "field label not supported: data.k" in refused.value.body


def test_timeout_seconds_ends_the_stream_and_the_client_does_not_reconnect(kube):
    started = time.monotonic()
    assert (
        Collected(
            kube.core.list_namespaced_config_map, lambda events: False, NAMESPACE, timeout_seconds=1
        ).wait()
        == []
    )
    assert 0.9 <= time.monotonic() - started < 3
    assert kube.server.requests("watch") == 1
    assert kube.server.cluster.open_watches() == 0


def test_watch_stream_is_chunked_json_lines_flushed_event_by_event(kube):
    with raw_get(kube, "watch=1&timeoutSeconds=5") as response:  # headers come before any event exists
        assert response.getheader("Transfer-Encoding") == "chunked"
        assert response.getheader("Content-Type") == "application/json"
        kube.core.create_namespaced_config_map(NAMESPACE, config_map("a"))
        first = response.readline()  # arrives while the stream stays open
    assert first.endswith(b"}\n") and b" " not in first
    assert json.loads(first)["object"]["kind"] == "ConfigMap"  # events carry kind and apiVersion


def test_all_namespace_watch_sees_every_namespace(kube):
    watched = Collected(kube.core.list_config_map_for_all_namespaces, lambda events: len(events) == 2)
    kube.core.create_namespaced_config_map("one", config_map("a"))
    kube.core.create_namespaced_config_map("two", config_map("b"))
    assert [event["object"].metadata.namespace for event in watched.wait()] == ["one", "two"]
