"""Which revision a request is for, from its headers or its Host.

Knative's activator reads ``Knative-Serving-Revision``/``-Namespace`` first and otherwise a Host of
the form ``name.ns.svc.<cluster-domain>``. Outside a cluster people type shorter names, so the
revision alone (``name``, unique across namespaces) and ``name.ns`` are accepted as well. A miss
answers with the names that would have worked, so the caller can fix the request at once.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from autoscaler.stat import RevisionKey

# On Kubernetes a revision's public Service is ``<revision>-kpa`` (kubebackend.endpoints.service_name),
# so a Host naming that Service (``web-kpa.shop.svc.cluster.local``) routes to revision ``web``.
SERVICE_SUFFIX = "-kpa"


@dataclass(frozen=True, slots=True)
class RouteMiss:
    """No revision matched; ``reason`` is the body of the 404."""

    reason: str


def parse_host(host: str) -> tuple[str, str | None] | None:
    """(revision, namespace or None) from a Host value, or None when it cannot name a revision."""
    host = host.strip().lower().rstrip(".")
    if host.startswith("["):  # an IPv6 literal names no revision
        return None
    host = host.split(":", 1)[0]
    labels = host.split(".")
    if not host or any(not label for label in labels):
        return None
    if len(labels) == 1:
        return labels[0], None
    if len(labels) == 2 or labels[2] == "svc":
        return labels[0], labels[1]
    return None


class RevisionRouter:
    """A lookup table of the revisions this activator fronts; rebuilt whole on every change."""

    def __init__(self, keys: Iterable[RevisionKey] = ()) -> None:
        self._keys = frozenset(keys)
        self._by_name: dict[str, list[RevisionKey]] = {}
        for key in sorted(self._keys, key=str):
            self._by_name.setdefault(key.name, []).append(key)

    def route(
        self, host: str | None, revision_header: str | None = None, namespace_header: str | None = None
    ) -> RevisionKey | RouteMiss:
        wanted: tuple[str, str | None]
        if revision_header:
            namespace = namespace_header.strip().lower() if namespace_header else None
            wanted = (revision_header.strip().lower(), namespace)
            source = f"header Knative-Serving-Revision={revision_header!r}"
        else:
            parsed = parse_host(host or "")
            source = f"Host {host!r}"
            if parsed is None:
                return RouteMiss(
                    f"{source} does not name a revision (use <revision>, <revision>.<namespace>, "
                    f"<revision>.<namespace>.svc.<domain> or the Knative-Serving-Revision header); "
                    f"known revisions: {self._known()}"
                )
            wanted = self._unsuffixed(parsed)
        name, namespace = wanted
        if namespace is not None:
            key = RevisionKey(namespace, name)
            if key in self._keys:
                return key
            return RouteMiss(f"unknown revision {key} ({source}); known revisions: {self._known()}")
        candidates = self._by_name.get(name, [])
        if len(candidates) == 1:
            return candidates[0]
        if not candidates:
            return RouteMiss(f"unknown revision {name!r} ({source}); known revisions: {self._known()}")
        spaces = ", ".join(key.namespace for key in candidates)
        return RouteMiss(
            f"revision {name!r} exists in namespaces {spaces} ({source}): name the namespace, "
            f"e.g. Host {name}.{candidates[0].namespace}"
        )

    def _unsuffixed(self, wanted: tuple[str, str | None]) -> tuple[str, str | None]:
        """``(name, ns)`` with the public Service's suffix dropped when only the revision is known."""
        name, namespace = wanted
        base = name.removesuffix(SERVICE_SUFFIX)
        if base == name or name in self._by_name:
            return wanted
        return (base, namespace) if base in self._by_name else wanted

    def _known(self) -> str:
        return ", ".join(str(key) for key in sorted(self._keys, key=str)) or "(none configured)"
