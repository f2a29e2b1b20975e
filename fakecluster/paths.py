"""Request paths to (resource, namespace, name, subresource): the REST layout of reference §1.

Pure, so the layout rules — core group under ``/api/v1``, named groups under ``/apis/G/V``,
all-namespace collections without ``namespaces/NS``, cluster-scoped types without a namespace —
are tested as a table rather than through HTTP.
"""

from __future__ import annotations

from dataclasses import dataclass

from fakecluster import errors
from fakecluster.resources import ResourceType, lookup


@dataclass(frozen=True)
class Target:
    """What a resource path names; ``namespace`` None means all namespaces (or a cluster-scoped type)."""

    resource: ResourceType
    namespace: str | None
    name: str | None
    subresource: str | None

    @property
    def is_collection(self) -> bool:
        return self.name is None


def parse(path: str) -> Target:
    """The target of ``path``; a path naming no served resource is a 404 Status, as kube-apiserver answers."""
    parts = [part for part in path.split("/") if part]
    if len(parts) >= 2 and parts[0] == "api":
        group, version, rest = "", parts[1], parts[2:]
    elif len(parts) >= 3 and parts[0] == "apis":
        group, version, rest = parts[1], parts[2], parts[3:]
    else:
        raise errors.path_not_found(path)
    namespace = None
    if len(rest) >= 3 and rest[0] == "namespaces":
        namespace, rest = rest[1], rest[2:]
    if not rest or len(rest) > 3:
        raise errors.path_not_found(path)
    resource = lookup(group, version, rest[0])
    if resource is None or (namespace is not None and not resource.namespaced):
        raise errors.path_not_found(path)
    name = rest[1] if len(rest) >= 2 else None
    subresource = rest[2] if len(rest) == 3 else None
    if name is not None and resource.namespaced and namespace is None:
        raise errors.path_not_found(path)  # a namespaced object is only addressed inside its namespace
    if subresource is not None and subresource not in resource.subresources:
        raise errors.path_not_found(path)
    return Target(resource, namespace, name, subresource)
