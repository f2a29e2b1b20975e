"""A watch cache of one kind of object: list once, then watch; the controller never polls.

Kubernetes tells a client what changed if the client asks the right way (kubernetes-wire.md §2):
list the collection, then watch it from the list's ``resourceVersion`` and every change after it
arrives as one line of the stream. What can go wrong, and what an informer does about it:

* the stream ends — the server's ``timeoutSeconds`` came, or it restarted and dropped every watch
  (which reads the same on the wire) — and events might have been missed: **re-list**, then watch
  again from the new list. The re-list is compared with the cache, so handlers hear only of
  objects that really changed (by ``resourceVersion``) or went away;
* the resourceVersion is too old (``ERROR`` event with code 410 Gone, the history was compacted):
  re-list at once;
* the API server fails (5xx, 429, no connection, a read timeout on a silent connection): wait a
  jittered exponential backoff (``kubebackend.retry``), then re-list — a restarting API server is not
  hammered by every informer of every controller at once;
* the collection is not served at all (404: a cluster without KServe has no InferenceServices): the
  cache is empty and synced, and the list is tried again every five minutes.

Bookmarks are asked for (``allowWatchBookmarks``) so a quiet watch still hears the current
resourceVersion, and each watch carries a server-side ``timeoutSeconds`` (jittered, so informers do
not re-list in step) with a client read timeout a little longer, so a silently dead connection is
noticed instead of hanging forever (§6.3).

The official client is synchronous, so each informer runs its list/watch in a thread of its own and
hands what it read to the asyncio loop (``call_soon_threadsafe``): the cache and the handlers live
on the loop's thread, so the controller's service loop stays single-threaded and reads the cache
without locks. Objects are the API's JSON as plain dicts (the watch is read raw, not through
``kubernetes.watch.Watch``: the cores read JSON, the client's models would be built only to be
thrown away, and the re-list/backoff policy above is ours to choose, not ``Watch``'s resume-once).
``close`` ends the stream by shutting its socket, so no thread outlives the informer.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from kubebackend.retry import backoff_delay, describe, status_of

log = logging.getLogger("kpa.informer")

ListCall = Callable[..., Any]  # a list method of the official client, bound to its API object
Key = tuple[str, str]  # (namespace, name); namespace "" for cluster-scoped objects
WATCH_TIMEOUT_S = 300.0  # asked of the server per watch (kube-apiserver's own default: 30-60 min)
CONNECT_TIMEOUT_S = 10.0
LIST_TIMEOUT_S = 60.0  # a list of thousands of objects takes well under a second
READ_SLACK_S = 30.0  # the client gives up on a silent stream this long after its timeoutSeconds
SHORT_WATCH_S = 1.0  # a watch that ends sooner than this counts as a failure (backoff, no hot loop)
JOIN_TIMEOUT_S = 5.0
NOT_SERVED_RETRY_S = 300.0  # a collection the server does not have (404) is listed again this often

ADDED, MODIFIED, DELETED = "ADDED", "MODIFIED", "DELETED"


@dataclass(frozen=True, slots=True)
class Change:
    """One change to one cached object: ``object`` is the new state (for ``DELETED``: the last one)."""

    type: str  # ADDED | MODIFIED | DELETED
    object: dict[str, Any]
    old: dict[str, Any] | None


Handler = Callable[[Change], None]


class WatchExpired(Exception):
    """The watch's resourceVersion is older than the server's history (410 Gone): re-list now."""


class WatchFailed(Exception):
    """The stream carried an ERROR event other than 410; the message is the server's."""


def key_of(obj: dict[str, Any]) -> Key:
    meta = obj.get("metadata") or {}
    return str(meta.get("namespace") or ""), str(meta.get("name") or "")


def resource_version(obj: dict[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("resourceVersion") or "")


def iter_lines(response: Any) -> Iterator[bytes]:
    """The lines of a chunked watch response, as they arrive (one JSON event per line)."""
    buffer = b""
    for chunk in response.stream(amt=None, decode_content=False):
        buffer += chunk
        while (end := buffer.find(b"\n")) >= 0:
            line, buffer = buffer[:end], buffer[end + 1 :]
            if line.strip():
                yield line


class Informer:
    """The cache of one collection (all namespaces unless the list call is namespaced), kept current.

    ``list_call`` is the official client's list method (``apps.list_deployment_for_all_namespaces``,
    ``functools.partial(core.list_namespaced_config_map, "kpa-system")``,
    ``functools.partial(custom.list_cluster_custom_object, group, version, plural)``); selectors
    narrow what is cached. Handlers run on the event loop, in the order changes were made.
    """

    def __init__(
        self,
        kind: str,
        list_call: ListCall,
        *,
        label_selector: str | None = None,
        field_selector: str | None = None,
        watch_timeout_s: float = WATCH_TIMEOUT_S,
        rng: random.Random | None = None,
        backoff_base: float = 0.5,
        backoff_cap: float = 30.0,
    ) -> None:
        self.kind = kind
        self._list_call = list_call
        self._selectors = {
            name: value
            for name, value in (("label_selector", label_selector), ("field_selector", field_selector))
            if value
        }
        self._watch_timeout_s = watch_timeout_s
        self._rng = rng or random.Random()
        self._backoff = (backoff_base, backoff_cap)
        self._objects: dict[Key, dict[str, Any]] = {}
        self._by_namespace: dict[str, dict[str, dict[str, Any]]] = {}
        self._handlers: list[Handler] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._synced: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._response: Any = None  # the open watch response, shut down by close()
        self._closed = False
        # Counts, for metrics and for tests that pin "lists only when needed, never polls".
        self.lists = 0
        self.watches = 0
        self.failures = 0
        self.events = 0

    # ---- the cache, read on the event loop ----------------------------------------------------------

    def add_handler(self, handler: Handler) -> None:
        self._handlers.append(handler)

    def get(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self._objects.get((namespace, name))

    def items(self, namespace: str | None = None) -> list[dict[str, Any]]:
        if namespace is None:
            return list(self._objects.values())
        return list(self._by_namespace.get(namespace, {}).values())

    @property
    def synced(self) -> bool:
        return self._synced is not None and self._synced.is_set()

    async def wait_synced(self, timeout: float | None = None) -> None:
        """Return once the first list is in the cache (raises TimeoutError after ``timeout``)."""
        assert self._synced is not None, "start() the informer first"
        async with asyncio.timeout(timeout):
            await self._synced.wait()

    # ---- lifecycle ----------------------------------------------------------------------------------

    def start(self) -> None:
        """Start listing and watching; call on the event loop that should receive the changes."""
        self._loop = asyncio.get_running_loop()
        self._synced = asyncio.Event()
        self._thread = threading.Thread(target=self._run, name=f"informer {self.kind}", daemon=True)
        self._thread.start()

    async def close(self) -> None:
        """Stop watching; returns once the informer's thread is gone (the open stream is shut)."""
        self._closed = True
        self._stopping.set()
        self._shut_stream()
        if self._thread is not None and self._thread.is_alive():
            await asyncio.to_thread(self._thread.join, JOIN_TIMEOUT_S)
            if self._thread.is_alive():
                log.warning("informer %s: its thread did not stop within %g s", self.kind, JOIN_TIMEOUT_S)

    def _shut_stream(self) -> None:
        response = self._response
        if response is None:
            return
        try:
            sock = getattr(getattr(response, "connection", None), "sock", None)
            if sock is not None:
                sock.shutdown(socket.SHUT_RDWR)
            else:
                response.shutdown()
        except (OSError, AttributeError):
            pass  # already closed: the thread sees the end of the stream either way

    # ---- the thread: list, watch, back off ----------------------------------------------------------

    def _run(self) -> None:
        attempt = 0
        while not self._stopping.is_set():
            started = time.monotonic()
            try:
                version = self._list()
                self._watch(version)
                if time.monotonic() - started < SHORT_WATCH_S:
                    raise WatchFailed("the watch ended at once")
                attempt = 0  # a watch that ran its course: re-list at once
            except WatchExpired:
                log.info("informer %s: resourceVersion expired (410 Gone); re-listing", self.kind)
            except Exception as error:
                if self._stopping.is_set():
                    break
                if status_of(error) == 404:
                    # The collection is not served (KServe's CRD not installed): it is empty, and the
                    # informer counts as synced; a CRD installed later is found at the next try.
                    self._hand(self._replace, [])
                    log.info("informer %s: not served by this API server (404); empty for now", self.kind)
                    self._stopping.wait(NOT_SERVED_RETRY_S)
                    continue
                if status_of(error) is None and not isinstance(error, WatchFailed | ValueError):
                    log.exception("informer %s: unexpected failure", self.kind)
                attempt += 1
                self.failures += 1
                delay = backoff_delay(attempt, self._rng, *self._backoff)
                log.warning(
                    "informer %s: %s; re-listing in %.1f s (try %d)",
                    self.kind, describe(error), delay, attempt,
                )  # fmt: skip
                self._stopping.wait(delay)

    def _list(self) -> str:
        response = self._list_call(
            _preload_content=False, _request_timeout=(CONNECT_TIMEOUT_S, LIST_TIMEOUT_S), **self._selectors
        )
        try:
            doc = json.loads(response.data)
        finally:
            response.release_conn()  # not preloaded: the connection goes back to the pool by hand
        items = doc.get("items") or []
        list_kind = str(doc.get("kind") or "")
        kind = list_kind[: -len("List")] if list_kind.endswith("List") else self.kind
        for item in items:  # built-in list items carry no kind/apiVersion (kubernetes-wire.md §2)
            item.setdefault("kind", kind)
            item.setdefault("apiVersion", doc.get("apiVersion"))
        version = str((doc.get("metadata") or {}).get("resourceVersion") or "")
        self.lists += 1
        self._hand(self._replace, items)
        return version

    def _watch(self, version: str) -> None:
        timeout = int(self._watch_timeout_s * self._rng.uniform(1.0, 1.2))
        response = self._list_call(
            watch=True,
            resource_version=version,
            allow_watch_bookmarks=True,
            timeout_seconds=timeout,
            _preload_content=False,
            _request_timeout=(CONNECT_TIMEOUT_S, timeout + READ_SLACK_S),
            **self._selectors,
        )
        self._response = response
        self.watches += 1
        try:
            if self._stopping.is_set():
                return
            for line in iter_lines(response):
                event = json.loads(line)
                kind, obj = event.get("type"), event.get("object") or {}
                if kind in (ADDED, MODIFIED, DELETED):
                    self.events += 1
                    self._hand(self._apply, kind, obj)
                elif kind == "ERROR":
                    if obj.get("code") == 410:
                        raise WatchExpired(obj.get("message", "410"))
                    raise WatchFailed(f"watch ERROR {obj.get('code')}: {obj.get('message')}")
                # BOOKMARK: nothing to do (each stream starts from a fresh list)
                if self._stopping.is_set():
                    return
        finally:
            self._response = None
            response.close()  # a stream left mid-way must not go back to the pool half read
            response.release_conn()

    def _hand(self, method: Callable[..., None], *args: Any) -> None:
        """Run ``method(*args)`` on the event loop; a closed loop means the controller is gone."""
        assert self._loop is not None
        try:
            self._loop.call_soon_threadsafe(method, *args)
        except RuntimeError:
            self._stopping.set()

    # ---- the loop side: apply changes to the cache and tell the handlers -------------------------------

    def _replace(self, items: list[dict[str, Any]]) -> None:
        """A fresh list: what differs from the cache becomes ADDED/MODIFIED/DELETED changes."""
        if self._closed:
            return
        fresh = {key_of(item): item for item in items}
        changes: list[Change] = []
        for key, gone in list(self._objects.items()):
            if key not in fresh:
                self._forget(key)
                changes.append(Change(DELETED, gone, gone))
        for key, obj in fresh.items():
            old = self._objects.get(key)
            if old is None or resource_version(old) != resource_version(obj):
                self._store(key, obj)
                changes.append(Change(ADDED if old is None else MODIFIED, obj, old))
        assert self._synced is not None
        self._synced.set()
        for change in changes:
            self._tell(change)

    def _apply(self, kind: str, obj: dict[str, Any]) -> None:
        if self._closed:
            return
        key = key_of(obj)
        old = self._objects.get(key)
        if kind == DELETED:
            if old is None:
                return
            self._forget(key)
            self._tell(Change(DELETED, obj, old))
            return
        self._store(key, obj)
        self._tell(Change(ADDED if old is None else MODIFIED, obj, old))

    def _store(self, key: Key, obj: dict[str, Any]) -> None:
        self._objects[key] = obj
        self._by_namespace.setdefault(key[0], {})[key[1]] = obj

    def _forget(self, key: Key) -> None:
        self._objects.pop(key, None)
        namespace = self._by_namespace.get(key[0])
        if namespace is not None:
            namespace.pop(key[1], None)
            if not namespace:
                del self._by_namespace[key[0]]

    def _tell(self, change: Change) -> None:
        for handler in self._handlers:
            try:
                handler(change)
            except Exception:
                key = key_of(change.object)
                log.exception("informer %s: a handler failed on %s %s/%s", self.kind, change.type, *key)
