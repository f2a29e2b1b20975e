"""What one watcher is sent for a committed change, and how watch events go on the wire.

Pure. A watcher sees a change of its resource in its namespace through its selectors: an object
that starts matching arrives as ADDED, one that stops matching as DELETED (its previous content
with the new resourceVersion), as kube-apiserver's watch cache does (reference §2, §7 trap 4).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Mapping
from typing import Any

from fakecluster.resources import ResourceType
from fakecluster.store import Change

Matcher = Callable[[Mapping[str, Any]], bool]


def _in_namespace(obj: Mapping[str, Any], namespace: str | None) -> bool:
    return namespace is None or obj.get("metadata", {}).get("namespace") == namespace


def seen_as(change: Change, namespace: str | None, matches: Matcher) -> dict[str, Any] | None:
    """The event a watcher of ``namespace`` with selector ``matches`` gets for ``change``, or None."""
    if not _in_namespace(change.object, namespace):
        return None
    now_matches = matches(change.object)
    before_matched = change.previous is not None and matches(change.previous)
    if change.type == "DELETED":
        return {"type": "DELETED", "object": change.object} if before_matched else None
    if now_matches:
        return {"type": "MODIFIED" if before_matched else "ADDED", "object": change.object}
    if before_matched:  # it left the selection: DELETED, with what it was and the new resourceVersion
        left = copy.deepcopy(change.previous)
        assert left is not None
        left["metadata"]["resourceVersion"] = change.object["metadata"]["resourceVersion"]
        return {"type": "DELETED", "object": left}
    return None


def added(obj: dict[str, Any]) -> dict[str, Any]:
    """A synthetic ADDED for an object that existed when a watch began without a resourceVersion."""
    return {"type": "ADDED", "object": obj}


def bookmark(resource: ResourceType, revision: int) -> dict[str, Any]:
    """A BOOKMARK: the watched kind with only ``metadata.resourceVersion``."""
    return {
        "type": "BOOKMARK",
        "object": {
            "kind": resource.kind,
            "apiVersion": resource.api_version,
            "metadata": {"resourceVersion": str(revision)},
        },
    }


def error(status: dict[str, Any]) -> dict[str, Any]:
    """An ERROR event; ``status`` must carry code, reason and message (the client reads all three)."""
    return {"type": "ERROR", "object": status}


def line(event: dict[str, Any]) -> bytes:
    """One event as the wire carries it: compact JSON on one line, ending in a newline."""
    return json.dumps(event, separators=(",", ":")).encode() + b"\n"
