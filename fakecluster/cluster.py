"""The fake cluster's state and every operation on it, safe to call from the server's event loop
and from test threads alike (one lock; changes reach watchers in commit order).

The HTTP routes are a thin layer over these methods, and tests may call them directly to seed or
inspect state. After each committed write the cluster tells the open watches, then runs its
controllers (``fakecluster.controllers``), whose own writes go through here too.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
import uuid
from collections import defaultdict, deque
from collections.abc import Callable, Iterable
from typing import Any, Protocol

from fakecluster import errors, patches, selectors, validation, watch_events
from fakecluster.faults import Faults
from fakecluster.resources import DEPLOYMENTS, ResourceType
from fakecluster.scale import scale_of, scaled
from fakecluster.store import Change, Store, deletion_grace
from fakecluster.watch import Watcher
from fakecluster.watch_events import Matcher

_NAME_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"  # apiserver's generateName suffix alphabet
Object = dict[str, Any]


def _revision(resource_version: str) -> int:
    if not resource_version.isdigit():
        raise errors.bad_request(
            f"resourceVersion {resource_version!r} is not a resourceVersion this server gave "
            "out (a decimal number)"
        )
    return int(resource_version)


class Controller(Protocol):
    """Runs after every committed write (``fakecluster.controllers``); writes back through the cluster."""

    def __call__(self, change: Change, cluster: Cluster) -> None: ...


class Cluster:
    """Objects, watches and controllers behind the fake API server."""

    def __init__(
        self,
        controllers: Iterable[Controller] = (),
        history_limit: int = 10_000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = Store(history_limit)
        self.faults = Faults()
        self.controllers = list(controllers)
        self._clock = clock
        self._lock = threading.RLock()
        self._watchers: defaultdict[ResourceType, set[Watcher]] = defaultdict(set)
        self._pending: deque[Change] = deque()
        self._settling = False
        self._names = random.Random()

    def timestamp(self, after_s: float = 0.0) -> str:
        """Now (or ``after_s`` seconds from now) in RFC 3339, whole seconds, ``Z``: how metav1.Time
        fields go on the wire."""
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self._clock() + after_s))

    # -- reads -----------------------------------------------------------------------------------

    def read(self, resource: ResourceType, namespace: str | None, name: str) -> Object | None:
        """The object, or None when there is none (for controllers and tests; no 404)."""
        with self._lock:
            return (
                self.store.get(resource, namespace, name)
                if self.store.exists(resource, namespace, name)
                else None
            )

    def get(self, resource: ResourceType, namespace: str | None, name: str) -> Object:
        with self._lock:
            return self.store.get(resource, namespace, name)

    def matching(
        self, resource: ResourceType, namespace: str | None, matches: Callable[[Object], bool]
    ) -> list[Object]:
        """Copies of the objects ``matches`` selects (for controllers; the others are not copied)."""
        with self._lock:
            return self.store.objects(resource, namespace, matches)[0]

    def list_collection(
        self,
        resource: ResourceType,
        namespace: str | None,
        label_selector: str = "",
        field_selector: str = "",
    ) -> Object:
        """The ``<Kind>List`` a list request answers; built-in items without kind/apiVersion, as real."""
        matches = selectors.object_matcher(label_selector, field_selector, resource)
        with self._lock:
            items, revision = self.store.objects(resource, namespace, matches)
        if not resource.custom:
            for item in items:
                del item["kind"], item["apiVersion"]
        return {
            "kind": f"{resource.kind}List",
            "apiVersion": resource.api_version,
            "metadata": {"resourceVersion": str(revision)},
            "items": items,
        }

    # -- writes ----------------------------------------------------------------------------------

    def create(self, resource: ResourceType, namespace: str | None, body: Any) -> Object:
        """POST: ``generateName`` resolved, the object checked and stored (201)."""
        if isinstance(body, dict) and isinstance(body.get("metadata"), dict):
            meta = body["metadata"]
            if not meta.get("name") and meta.get("generateName"):
                suffix = "".join(self._names.choice(_NAME_ALPHABET) for _ in range(5))
                body = {**body, "metadata": {**meta, "name": meta["generateName"][:58] + suffix}}
        obj = validation.checked(resource, body)
        with self._lock:
            stored, change = self.store.create(resource, namespace, obj, self.timestamp(), self._uid())
            self._committed(change)
        return stored

    def replace(
        self,
        resource: ResourceType,
        namespace: str | None,
        name: str,
        body: Any,
        subresource: str | None = None,
    ) -> Object:
        """PUT of the object or its ``status``: a stale resourceVersion is a 409."""
        with self._lock:
            return self._update(resource, namespace, name, validation.checked(resource, body), subresource)

    def patch(
        self,
        resource: ResourceType,
        namespace: str | None,
        name: str,
        content_type: str,
        body: bytes,
        subresource: str | None = None,
    ) -> Object:
        """PATCH of the object or its ``status``, applied to the stored object under the lock."""
        with self._lock:
            current = self.store.get(resource, namespace, name)
            patched = patches.apply_patch(content_type, current, body, resource)
            return self._update(resource, namespace, name, validation.checked(resource, patched), subresource)

    def write_status(
        self, resource: ResourceType, namespace: str | None, name: str, status: Object
    ) -> Object:
        """Set an object's ``status`` through ``/status``, as a controller does: read and written under
        the lock, so its resourceVersion precondition always holds (custom resources need one)."""
        with self._lock:
            current = self.store.get(resource, namespace, name)
            current["status"] = status
            return self._update(resource, namespace, name, current, "status")

    def _update(
        self, resource: ResourceType, namespace: str | None, name: str, obj: Object, subresource: str | None
    ) -> Object:
        stored, change = self.store.update(resource, namespace, name, obj, subresource)
        self._committed(change)
        return stored

    def delete(
        self,
        resource: ResourceType,
        namespace: str | None,
        name: str,
        preconditions: Object | None = None,
        grace_period_seconds: int | None = None,
    ) -> Object:
        """DELETE: the object for the types that answer with it, a Success Status for the others.

        A Pod bound to a node is only marked for its kubelet to stop (``store.deletion_grace``);
        ``grace_period_seconds`` (DeleteOptions) overrides its ``terminationGracePeriodSeconds``.
        """
        with self._lock:
            grace = deletion_grace(resource, self.store.get(resource, namespace, name), grace_period_seconds)
            final, change = self.store.delete(
                resource,
                namespace,
                name,
                self.timestamp(),
                preconditions,
                grace_seconds=grace,
                grace_ends=self.timestamp(grace),
            )
            self._committed(change)
        if resource.returns_deleted_object or final["metadata"].get("deletionTimestamp"):
            return final
        details = {
            "name": name,
            "group": resource.group,
            "kind": resource.plural,
            "uid": final["metadata"]["uid"],
        }
        return {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Success",
            "details": {key: value for key, value in details.items() if value},
        }

    def delete_collection(
        self,
        resource: ResourceType,
        namespace: str | None,
        label_selector: str = "",
        field_selector: str = "",
    ) -> Object:
        """DELETE of a collection: every selected object, answered with their list."""
        with self._lock:
            selected = self.list_collection(resource, namespace, label_selector, field_selector)
            for item in selected["items"]:
                self.delete(resource, item["metadata"].get("namespace"), item["metadata"]["name"])
        return selected

    # -- the scale subresource -------------------------------------------------------------------

    def get_scale(self, namespace: str | None, name: str) -> Object:
        return scale_of(self.get(DEPLOYMENTS, namespace, name))

    def replace_scale(self, namespace: str | None, name: str, scale: Any) -> Object:
        with self._lock:
            deployment = scaled(self.store.get(DEPLOYMENTS, namespace, name), scale)
            self._update(DEPLOYMENTS, namespace, name, validation.checked(DEPLOYMENTS, deployment), None)
            return scale_of(self.store.get(DEPLOYMENTS, namespace, name))

    def patch_scale(self, namespace: str | None, name: str, content_type: str, body: bytes) -> Object:
        with self._lock:
            current = scale_of(self.store.get(DEPLOYMENTS, namespace, name))
            return self.replace_scale(
                namespace, name, patches.apply_patch(content_type, current, body, DEPLOYMENTS)
            )

    # -- watches ---------------------------------------------------------------------------------

    def watch(
        self,
        resource: ResourceType,
        namespace: str | None,
        matches: Matcher,
        resource_version: str,
        loop: asyncio.AbstractEventLoop,
    ) -> tuple[list[Object], Watcher]:
        """Open a watch: the events to replay first and the watcher that streams what follows.

        No resourceVersion (or "0"): a synthetic ADDED per matching object, then changes. Otherwise
        the changes after it, or 410 Expired when history no longer reaches back that far.
        """
        with self._lock:
            if resource_version in ("", "0"):
                objects, revision = self.store.objects(resource, namespace, matches)
                first = [watch_events.added(obj) for obj in objects]
            else:
                revision = _revision(resource_version)
                changes = self.store.changes_since(resource, revision)
                seen = (watch_events.seen_as(change, namespace, matches) for change in changes)
                first = [event for event in seen if event is not None]
                revision = self.store.revision
            watcher = Watcher(resource, namespace, matches, loop, revision)
            self._watchers[resource].add(watcher)
        return first, watcher

    def unwatch(self, watcher: Watcher) -> None:
        with self._lock:
            self._watchers[watcher.resource].discard(watcher)

    def open_watches(self) -> int:
        with self._lock:
            return sum(len(watchers) for watchers in self._watchers.values())

    def drop_watches(self) -> int:
        """End every open watch cleanly (as an API server restart does); returns how many."""
        with self._lock:
            watchers = [watcher for group in self._watchers.values() for watcher in group]
            self._watchers.clear()
        for watcher in watchers:
            watcher.close()
        return len(watchers)

    def compact(self) -> None:
        """Forget the change history: watches from any earlier resourceVersion get 410 Expired."""
        with self._lock:
            self.store.compact()

    # -- after each write ------------------------------------------------------------------------

    def _committed(self, change: Change | None) -> None:
        """Tell the watches, then run the controllers on it (and on what they write, in order)."""
        if change is None:
            return
        for watcher in self._watchers.get(change.resource, ()):
            watcher.offer(change)
        self._pending.append(change)
        if self._settling:
            return  # the outer call runs the controllers on it
        self._settling = True
        try:
            while self._pending:
                pending = self._pending.popleft()
                for controller in self.controllers:
                    controller(pending, self)
        finally:
            self._settling = False
            self._pending.clear()

    def _uid(self) -> str:
        return str(uuid.uuid4())
