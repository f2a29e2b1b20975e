"""What a write must satisfy before it is stored, and the canonical form it is stored in.

Not kube-apiserver's full validation: only "obviously bad input" — the mistakes a controller under
test can make and must see refused (a missing name, negative replicas, a Deployment whose selector
does not match its template, an EndpointSlice without ``addressType``) — answered with the 422
``Invalid`` Status the real server sends, naming the field. MicroTime fields are parsed as the real
server parses them (six fractional digits required) and stored in its ``…123456Z`` form.
"""

from __future__ import annotations

import copy
import re
from datetime import UTC, datetime
from typing import Any

from fakecluster import errors, selectors
from fakecluster.resources import ResourceType

_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_DNS1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_MICROTIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}(Z|[+-]\d\d:\d\d)$")
_MICROTIME_FIELDS = {
    "Lease": (("spec", "acquireTime"), ("spec", "renewTime")),
    "Event": (("eventTime",), ("series", "lastObservedTime")),
}
Causes = list[tuple[str, str]]


def _name_causes(resource: ResourceType, name: Any) -> Causes:
    if not name:
        return [("metadata.name", "Required value: name or generateName is required")]
    if resource.kind == "Service" and (len(name) > 63 or not _DNS1035_LABEL.match(name)):
        return [
            (
                "metadata.name",
                f"Invalid value: {name!r}: a DNS-1035 label must consist of lower case "
                "alphanumeric characters or '-', start with a letter and be at most 63 characters",
            )
        ]
    if len(name) > 253 or not _SUBDOMAIN.match(name):
        return [
            (
                "metadata.name",
                f"Invalid value: {name!r}: a lowercase RFC 1123 subdomain must consist of lower "
                "case alphanumeric characters, '-' or '.'",
            )
        ]
    return []


def _deployment_causes(obj: dict[str, Any]) -> Causes:
    spec = obj.get("spec") or {}
    causes: Causes = []
    replicas = spec.get("replicas", 1)
    if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 0:
        causes.append(("spec.replicas", f"Invalid value: {replicas!r}: must be greater than or equal to 0"))
    if not spec.get("selector"):
        causes.append(("spec.selector", "Required value"))
    template_labels = ((spec.get("template") or {}).get("metadata") or {}).get("labels") or {}
    if not spec.get("template"):
        causes.append(("spec.template", "Required value"))
    elif spec.get("selector") and not selectors.label_matcher(selectors.render(spec["selector"]))(
        template_labels
    ):
        why = f"Invalid value: {template_labels!r}: `selector` does not match template `labels`"
        causes.append(("spec.template.metadata.labels", why))
    return causes


def _pod_causes(obj: dict[str, Any]) -> Causes:
    containers = (obj.get("spec") or {}).get("containers")
    if not containers:
        return [("spec.containers", "Required value")]
    return [
        (f"spec.containers[{index}].name", "Required value")
        for index, container in enumerate(containers)
        if not container.get("name")
    ]


def _endpointslice_causes(obj: dict[str, Any]) -> Causes:
    causes: Causes = []
    if obj.get("addressType") not in ("IPv4", "IPv6", "FQDN"):
        causes.append(
            (
                "addressType",
                f'Unsupported value: {obj.get("addressType")!r}: supported values: "FQDN", "IPv4", "IPv6"',
            )
        )
    for index, endpoint in enumerate(obj.get("endpoints") or []):
        if not endpoint.get("addresses"):
            causes.append(
                (f"endpoints[{index}].addresses", "Required value: must contain at least 1 address")
            )
    return causes


def _service_causes(obj: dict[str, Any]) -> Causes:
    return [
        (f"spec.ports[{index}].port", f"Invalid value: {port.get('port')!r}: must be between 1 and 65535")
        for index, port in enumerate((obj.get("spec") or {}).get("ports") or [])
        if not isinstance(port.get("port"), int) or not 1 <= port["port"] <= 65535
    ]


def _webhook_causes(obj: dict[str, Any]) -> Causes:
    causes: Causes = []
    for index, webhook in enumerate(obj.get("webhooks") or []):
        for field in ("name", "admissionReviewVersions", "sideEffects", "clientConfig"):
            if not webhook.get(field):
                causes.append((f"webhooks[{index}].{field}", "Required value"))
    return causes


_KIND_CAUSES = {
    "Deployment": _deployment_causes,
    "Pod": _pod_causes,
    "EndpointSlice": _endpointslice_causes,
    "Service": _service_causes,
    "MutatingWebhookConfiguration": _webhook_causes,
}


def _microtime(value: Any, field: str) -> str:
    if not isinstance(value, str) or not _MICROTIME.match(value):
        raise errors.bad_request(
            f"{field}: {value!r} is not a MicroTime: expected RFC 3339 with six fractional "
            "digits, e.g. 2026-01-02T03:04:05.000006Z"
        )
    moment = datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def checked(resource: ResourceType, obj: Any) -> dict[str, Any]:
    """``obj`` in canonical form if it may be stored as a ``resource``; otherwise the 400/422 why not."""
    if not isinstance(obj, dict) or not isinstance(obj.get("metadata", {}), dict):
        raise errors.bad_request(f"the body must be a {resource.kind} object with a metadata object")
    if obj.get("kind") not in (None, "", resource.kind):
        raise errors.bad_request(f"the body is a {obj['kind']}, not a {resource.kind} ({resource})")
    if obj.get("apiVersion") not in (None, "", resource.api_version):
        raise errors.bad_request(
            f"the body's apiVersion is {obj['apiVersion']}, expected {resource.api_version}"
        )
    name = (obj.get("metadata") or {}).get("name")
    causes = _name_causes(resource, name) + _KIND_CAUSES.get(resource.kind, lambda _: [])(obj)
    for key, value in ((obj.get("metadata") or {}).get("labels") or {}).items():
        if not isinstance(value, str) or len(value) > 63:
            causes.append(
                (
                    f"metadata.labels[{key}]",
                    f"Invalid value: {value!r}: a label value is a string of at most 63 characters",
                )
            )
    if causes:
        raise errors.invalid(resource, name or "", causes)
    canonical = copy.deepcopy(obj)
    for path in _MICROTIME_FIELDS.get(resource.kind, ()):
        parent: Any = canonical
        for step in path[:-1]:
            parent = parent.get(step) if isinstance(parent, dict) else None
        if isinstance(parent, dict) and parent.get(path[-1]) is not None:
            parent[path[-1]] = _microtime(parent[path[-1]], ".".join(path))
    return canonical
