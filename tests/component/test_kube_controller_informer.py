"""kubebackend.informer against the fake API server over real HTTP with the official client: it lists,
then watches; survives dropped watches, 410 Gone and 500s by re-listing (telling handlers only of
real changes); never polls; and leaves no thread behind when closed."""

from __future__ import annotations

import asyncio
import functools
import threading
from collections.abc import Awaitable, Callable

import pytest
from fakecluster_fixtures import NAMESPACE, Kube, config_map
from waiting import wait_until

from kubebackend.informer import Change, Informer

pytestmark = pytest.mark.timeout(60)


class Seen:
    """The changes an informer handed its handler, and the thread each arrived on."""

    def __init__(self, informer: Informer) -> None:
        self.changes: list[tuple[str, str]] = []
        self.threads: set[str] = set()
        informer.add_handler(self)

    def __call__(self, change: Change) -> None:
        self.changes.append((change.type, change.object["metadata"]["name"]))
        self.threads.add(threading.current_thread().name)


def run(
    test: Callable[[Kube, Informer, Seen], Awaitable[None]], seed: Callable[[Kube], object] | None = None
) -> None:
    """``test`` with a started, synced informer of the namespace's ConfigMaps (``seed`` runs first)."""
    with Kube() as kube:
        if seed is not None:
            seed(kube)

        async def body() -> None:
            informer = Informer(
                "ConfigMap",
                functools.partial(kube.core.list_namespaced_config_map, NAMESPACE),
                backoff_base=0.05,
            )
            seen = Seen(informer)
            informer.start()
            try:
                await informer.wait_synced(10)
                await test(kube, informer, seen)
            finally:
                await informer.close()
            assert not [t for t in threading.enumerate() if t.name.startswith("informer ")]

        asyncio.run(body())


def test_lists_then_watches_and_hands_changes_to_the_loop_thread():
    async def body(kube: Kube, informer: Informer, seen: Seen) -> None:
        kube.core.create_namespaced_config_map(NAMESPACE, config_map("a"))
        kube.core.patch_namespaced_config_map("a", NAMESPACE, {"data": {"k": "2"}})
        kube.core.delete_namespaced_config_map("a", NAMESPACE)
        await wait_until(lambda: len(seen.changes) == 4, what=lambda: f"changes {seen.changes}")
        assert seen.changes == [("ADDED", "pre"), ("ADDED", "a"), ("MODIFIED", "a"), ("DELETED", "a")]
        assert seen.threads == {threading.current_thread().name}
        assert informer.get(NAMESPACE, "a") is None
        assert informer.get(NAMESPACE, "pre")["kind"] == "ConfigMap"  # filled in from the list's kind

    run(body, seed=lambda kube: kube.core.create_namespaced_config_map(NAMESPACE, config_map("pre")))


def test_a_dropped_watch_relists_and_reports_only_what_changed_meanwhile():
    async def body(kube: Kube, informer: Informer, seen: Seen) -> None:
        kube.core.create_namespaced_config_map(NAMESPACE, config_map("kept"))
        kube.core.create_namespaced_config_map(NAMESPACE, config_map("gone"))
        await wait_until(lambda: len(seen.changes) == 2)
        lists = informer.lists
        assert kube.server.drop_watches() == 1
        kube.core.delete_namespaced_config_map("gone", NAMESPACE)
        kube.core.create_namespaced_config_map(NAMESPACE, config_map("new"))
        await wait_until(lambda: informer.lists > lists and informer.watches >= 2)
        await wait_until(lambda: {"new"} <= {name for _, name in seen.changes[2:]})
        assert sorted(seen.changes[2:]) == [("ADDED", "new"), ("DELETED", "gone")]
        assert {o["metadata"]["name"] for o in informer.items(NAMESPACE)} == {"kept", "new"}

    run(body)


def test_an_expired_resource_version_gives_410_and_a_relist():
    with Kube() as kube:
        kube.core.create_namespaced_config_map(NAMESPACE, config_map("first"))  # a resourceVersion past "0"
        plain = functools.partial(kube.core.list_namespaced_config_map, NAMESPACE)
        expired = []

        def list_call(**kwargs):
            if kwargs.get("watch") and not expired:
                # Between the informer's list and its watch the history is compacted and a change
                # made: the watch from the list's resourceVersion is answered with a 410 ERROR event.
                kube.core.create_namespaced_config_map(NAMESPACE, config_map("meanwhile"))
                kube.server.compact()
                expired.append(kwargs["resource_version"])
            return plain(**kwargs)

        async def body() -> None:
            informer = Informer("ConfigMap", list_call)
            seen = Seen(informer)
            informer.start()
            try:
                await wait_until(lambda: ("ADDED", "meanwhile") in seen.changes, timeout=10)
                assert expired and informer.lists == 2 and informer.failures == 0
            finally:
                await informer.close()

        asyncio.run(body())


def test_server_errors_back_off_and_recover_without_crashing():
    async def body(kube: Kube, informer: Informer, seen: Seen) -> None:
        await wait_until(lambda: informer.watches == 1)
        kube.server.fail_next(3, "list", "configmaps", 500)
        assert kube.server.drop_watches() == 1
        kube.core.create_namespaced_config_map(NAMESPACE, config_map("later"))
        await wait_until(lambda: ("ADDED", "later") in seen.changes, timeout=10)
        assert informer.failures >= 3

    run(body)


def test_an_idle_informer_sends_no_requests():
    async def body(kube: Kube, informer: Informer, seen: Seen) -> None:
        await wait_until(lambda: informer.watches == 1)
        before = kube.server.requests()
        await asyncio.sleep(1.5)  # the idleness under test
        assert kube.server.requests() == before

    run(body)


def test_close_ends_the_open_watch_at_once():
    async def body(kube: Kube, informer: Informer, seen: Seen) -> None:
        loop = asyncio.get_running_loop()
        started = loop.time()
        await informer.close()
        assert loop.time() - started < 1.0

    run(body)
