"""The objects, the one resourceVersion counter they share, and the bounded history watches replay.

Pure: the time of a write comes in as ``now`` (RFC 3339, as metav1.Time is written) and uids as
arguments, so the storage rules —
what a create fills in, when ``generation`` moves, that a no-op write keeps its resourceVersion and
tells no watcher, that a delete held by finalizers only marks the object — are tested without a
server. Every write returns the ``Change`` that watchers see; the shell dispatches it.
"""

from __future__ import annotations

import copy
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fakecluster import errors
from fakecluster.resources import ResourceType

Key = tuple[str, str]  # (namespace, name); namespace "" for cluster-scoped types


@dataclass(frozen=True)
class Change:
    """One committed write as watchers see it; ``previous`` is the state before (None when created)."""

    type: str  # ADDED, MODIFIED or DELETED
    resource: ResourceType
    object: dict[str, Any]
    previous: dict[str, Any] | None
    revision: int


def _without(obj: dict[str, Any], *fields: str) -> dict[str, Any]:
    return {key: value for key, value in obj.items() if key not in fields}


def _generation_moves(resource: ResourceType, old: dict[str, Any], new: dict[str, Any]) -> bool:
    """Deployments: a spec or annotation change; custom resources (and webhook configurations): any
    change outside metadata and the status subresource's ``status``."""
    if resource.generation == "spec":
        old_annotations = old["metadata"].get("annotations") or {}
        new_annotations = new["metadata"].get("annotations") or {}
        return old.get("spec") != new.get("spec") or old_annotations != new_annotations
    ignored = ("metadata", "status") if resource.has_status else ("metadata",)
    return _without(old, *ignored) != _without(new, *ignored)


def deletion_grace(resource: ResourceType, obj: dict[str, Any], requested: int | None) -> int:
    """Seconds a delete of ``obj`` leaves its kubelet to stop it, as kube-apiserver's pod strategy
    decides: only a Pod bound to a node (``spec.nodeName``) and not finished gets one — the
    request's ``gracePeriodSeconds`` if given, else ``spec.terminationGracePeriodSeconds`` (30) —
    every other object and pod goes at once (0)."""
    if resource.kind != "Pod" or resource.group:
        return 0
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    if not spec.get("nodeName") or status.get("phase") in ("Succeeded", "Failed"):
        return 0
    if requested is not None:
        return max(0, requested)
    grace = spec.get("terminationGracePeriodSeconds")
    return grace if isinstance(grace, int) and not isinstance(grace, bool) and grace >= 0 else 30


def _removable(obj: dict[str, Any]) -> bool:
    """A marked object nothing holds any more: no finalizers and no grace period left to wait for."""
    meta = obj["metadata"]
    return bool(
        meta.get("deletionTimestamp")
        and not meta.get("finalizers")
        and not meta.get("deletionGracePeriodSeconds")
    )


class Store:
    """Every object of every type, with a global revision and the last ``history_limit`` changes."""

    def __init__(self, history_limit: int = 10_000) -> None:
        self.revision = 0
        self.oldest_watchable = 0  # a watch may start from this revision or any later one
        self._objects: dict[ResourceType, dict[Key, dict[str, Any]]] = {}
        self._history: deque[Change] = deque(maxlen=history_limit)

    def _table(self, resource: ResourceType) -> dict[Key, dict[str, Any]]:
        return self._objects.setdefault(resource, {})

    def _key(self, resource: ResourceType, namespace: str | None, name: str) -> Key:
        return ((namespace or "") if resource.namespaced else "", name)

    def _commit(
        self, kind: str, resource: ResourceType, obj: dict[str, Any], previous: dict[str, Any] | None
    ) -> Change:
        if len(self._history) == self._history.maxlen:
            self.oldest_watchable = self._history[0].revision
        change = Change(kind, resource, copy.deepcopy(obj), copy.deepcopy(previous), self.revision)
        self._history.append(change)
        return change

    def _next_revision(self) -> str:
        self.revision += 1
        return str(self.revision)

    def get(self, resource: ResourceType, namespace: str | None, name: str) -> dict[str, Any]:
        stored = self._table(resource).get(self._key(resource, namespace, name))
        if stored is None:
            raise errors.not_found(resource, name)
        return copy.deepcopy(stored)

    def exists(self, resource: ResourceType, namespace: str | None, name: str) -> bool:
        return self._key(resource, namespace, name) in self._table(resource)

    def objects(
        self,
        resource: ResourceType,
        namespace: str | None,
        matches: Callable[[dict[str, Any]], bool] | None = None,
    ) -> tuple[list[dict[str, Any]], int]:
        """Objects of ``resource`` (in ``namespace``, or all) that ``matches`` selects, by namespace and
        name, and the revision they reflect; only those selected are copied."""
        table = self._table(resource)
        keys = sorted(key for key in table if namespace is None or key[0] == namespace)
        return [
            copy.deepcopy(table[key]) for key in keys if matches is None or matches(table[key])
        ], self.revision

    def create(
        self, resource: ResourceType, namespace: str | None, obj: dict[str, Any], now: str, uid: str
    ) -> tuple[dict[str, Any], Change]:
        """Store a new object; the server fills uid, creationTimestamp, resourceVersion, generation."""
        new = copy.deepcopy(obj)
        meta = new.setdefault("metadata", {})
        if meta.get("resourceVersion"):
            raise errors.bad_request("resourceVersion should not be set on objects to be created")
        if resource.namespaced:
            if meta.get("namespace") and meta["namespace"] != namespace:
                raise errors.bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request"
                )
            meta["namespace"] = namespace
        else:
            meta.pop("namespace", None)
        key = self._key(resource, namespace, meta["name"])
        if key in self._table(resource):
            raise errors.already_exists(resource, meta["name"])
        for field in ("deletionTimestamp", "deletionGracePeriodSeconds", "generation"):
            meta.pop(field, None)
        meta.update(uid=uid, creationTimestamp=now, resourceVersion=self._next_revision())
        if resource.generation:
            meta["generation"] = 1
        if resource.has_status:
            new.pop("status", None)
            if resource.kind == "Pod":
                new["status"] = {"phase": "Pending"}
        new["kind"], new["apiVersion"] = resource.kind, resource.api_version
        self._table(resource)[key] = new
        return copy.deepcopy(new), self._commit("ADDED", resource, new, None)

    def update(
        self,
        resource: ResourceType,
        namespace: str | None,
        name: str,
        obj: dict[str, Any],
        subresource: str | None = None,
    ) -> tuple[dict[str, Any], Change | None]:
        """Replace an object (PUT, or a PATCH's result); ``subresource="status"`` writes only status.

        A non-empty ``metadata.resourceVersion`` in ``obj`` is a precondition (409 when stale); a
        write that changes nothing keeps the resourceVersion and returns no Change.
        """
        key = self._key(resource, namespace, name)
        current = self._table(resource).get(key)
        if current is None:
            raise errors.not_found(resource, name)
        meta = obj.get("metadata") or {}
        if meta.get("name") not in (None, "", name):
            raise errors.bad_request(
                f"the name of the object ({meta['name']}) does not match the name on the URL ({name})"
            )
        wanted = meta.get("resourceVersion")
        if wanted and wanted != current["metadata"]["resourceVersion"]:
            raise errors.conflict(resource, name)
        if not wanted and resource.custom:
            raise errors.invalid(
                resource,
                name,
                [("metadata.resourceVersion", "Invalid value: 0x0: must be specified for an update")],
            )
        if subresource == "status":
            new = copy.deepcopy(current)
            new["status"] = copy.deepcopy(obj.get("status"))
            if new["status"] is None:
                del new["status"]
        else:
            new = copy.deepcopy(obj)
            new_meta = new.setdefault("metadata", {})
            for field in (
                "uid",
                "creationTimestamp",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
                "generation",
                "namespace",
                "resourceVersion",
            ):
                if field in current["metadata"]:
                    new_meta[field] = current["metadata"][field]
                else:
                    new_meta.pop(field, None)
            new_meta["name"] = name
            if resource.has_status:  # the main endpoint leaves status to the status subresource
                new.pop("status", None)
                if "status" in current:
                    new["status"] = copy.deepcopy(current["status"])
            new["kind"], new["apiVersion"] = resource.kind, resource.api_version
            if resource.generation and _generation_moves(resource, current, new):
                new_meta["generation"] = current["metadata"].get("generation", 0) + 1
        if new == current:
            return copy.deepcopy(current), None
        if _removable(new):
            return self._remove(resource, key, new)
        new["metadata"]["resourceVersion"] = self._next_revision()
        self._table(resource)[key] = new
        return copy.deepcopy(new), self._commit("MODIFIED", resource, new, current)

    def delete(
        self,
        resource: ResourceType,
        namespace: str | None,
        name: str,
        now: str,
        preconditions: dict[str, Any] | None = None,
        *,
        grace_seconds: int = 0,
        grace_ends: str | None = None,
    ) -> tuple[dict[str, Any], Change | None]:
        """Remove an object, or only mark it (``deletionTimestamp``) while ``finalizers`` hold it or,
        with ``grace_seconds`` (:func:`deletion_grace`), while its kubelet stops it: then the mark is
        ``grace_ends`` (now + the grace) and the kubelet's own delete with no grace removes it. A
        second delete may shorten a grace period, never lengthen it."""
        key = self._key(resource, namespace, name)
        current = self._table(resource).get(key)
        if current is None:
            raise errors.not_found(resource, name)
        for field in ("uid", "resourceVersion"):
            if (preconditions or {}).get(field) not in (None, current["metadata"].get(field)):
                raise errors.conflict(resource, name)
        meta = current["metadata"]
        if not grace_seconds and not meta.get("finalizers"):
            return self._remove(resource, key, current)
        if meta.get("deletionTimestamp") and (meta.get("deletionGracePeriodSeconds") or 0) <= grace_seconds:
            return copy.deepcopy(current), None
        marked = copy.deepcopy(current)
        marked["metadata"].update(
            deletionTimestamp=(grace_ends or now) if grace_seconds else now,
            deletionGracePeriodSeconds=grace_seconds,
            resourceVersion=self._next_revision(),
        )
        self._table(resource)[key] = marked
        return copy.deepcopy(marked), self._commit("MODIFIED", resource, marked, current)

    def _remove(
        self, resource: ResourceType, key: Key, last: dict[str, Any]
    ) -> tuple[dict[str, Any], Change]:
        previous = self._table(resource).pop(key)
        final = copy.deepcopy(last)
        final["metadata"]["resourceVersion"] = self._next_revision()
        return copy.deepcopy(final), self._commit("DELETED", resource, final, previous)

    def changes_since(self, resource: ResourceType, revision: int) -> list[Change]:
        """The changes of ``resource`` after ``revision``, oldest first; 410 when history no longer
        reaches back that far."""
        if revision < self.oldest_watchable:
            raise errors.expired(revision, self.oldest_watchable)
        return [
            change for change in self._history if change.revision > revision and change.resource == resource
        ]

    def compact(self) -> None:
        """Forget all history: a watch from any revision before now gets 410 Expired."""
        self._history.clear()
        self.oldest_watchable = self.revision
