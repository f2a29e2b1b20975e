"""The discovery documents (``/api``, ``/apis``, ``/api/v1``, ``/apis/G/V``, ``/version``), built
from the resource table so they always list exactly what the fake serves.

The typed Python client needs none of this; ``DynamicClient``, kubectl, kopf and kr8s do
(reference §4). Pure.
"""

from __future__ import annotations

from typing import Any

from fakecluster.resources import ALL, FULL_VERBS, ResourceType, group_versions

VERSION = {
    "major": "1",
    "minor": "30",
    "gitVersion": "v1.30.0-fakecluster",
    "gitCommit": "0" * 40,
    "gitTreeState": "clean",
    "buildDate": "2026-01-01T00:00:00Z",
    "goVersion": "go1.22.0",
    "compiler": "gc",
    "platform": "linux/amd64",
}


def core_versions(server_address: str) -> dict[str, Any]:
    """``GET /api``."""
    return {
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}],
    }


def _group(name: str, versions: list[str]) -> dict[str, Any]:
    entries = [{"groupVersion": f"{name}/{version}", "version": version} for version in versions]
    return {"name": name, "versions": entries, "preferredVersion": entries[0]}


def group(name: str) -> dict[str, Any] | None:
    """``GET /apis/NAME``, or None for a group the fake does not serve."""
    versions = group_versions().get(name)
    return None if versions is None else {"kind": "APIGroup", "apiVersion": "v1", **_group(name, versions)}


def groups() -> dict[str, Any]:
    """``GET /apis``."""
    return {
        "kind": "APIGroupList",
        "apiVersion": "v1",
        "groups": [_group(name, versions) for name, versions in group_versions().items()],
    }


def _entries(resource: ResourceType) -> list[dict[str, Any]]:
    main: dict[str, Any] = {
        "name": resource.plural,
        "singularName": resource.singular,
        "namespaced": resource.namespaced,
        "kind": resource.kind,
        "verbs": list(FULL_VERBS),
    }
    if resource.short_names:
        main["shortNames"] = list(resource.short_names)
    if resource.categories:
        main["categories"] = list(resource.categories)
    entries = [main]
    for sub in resource.subresources:
        entry = {
            "name": f"{resource.plural}/{sub}",
            "singularName": "",
            "namespaced": resource.namespaced,
            "kind": resource.kind,
            "verbs": ["get", "patch", "update"],
        }
        if sub == "scale":
            entry.update(group="autoscaling", version="v1", kind="Scale")
        entries.append(entry)
    return entries


def resources(group_name: str, version: str) -> dict[str, Any] | None:
    """``GET /api/v1`` (``group_name`` "") or ``GET /apis/G/V``; None for one the fake does not serve."""
    served = [resource for resource in ALL if (resource.group, resource.version) == (group_name, version)]
    if not served:
        return None
    group_version = f"{group_name}/{version}" if group_name else version
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": group_version,
        "resources": [entry for resource in served for entry in _entries(resource)],
    }
