"""Every Kubernetes API call the controller and the activator may make: the RBAC contract.

``manifests/base/rbac.yaml`` grants exactly these calls and nothing else, and
``tests/component/test_manifests.py`` checks that it does (nothing missing, nothing extra). A call
is ``(apiGroup, resource, verb)``: ``""`` is the core group, a subresource is ``resource/sub``
(``deployments/scale``). Tests on the fake cluster can assert that every request the controller or
an activator made is in its set; a call the code starts making must be added here first, and the
manifests with it.

Where a call is granted matters as much as which: :data:`CONTROLLER_LOCAL` lists what the controller
touches only in its own namespace (``kpa-system``), granted by a Role there rather than cluster-wide,
and :data:`CONTROLLER_NAMES` lists the calls Kubernetes lets us restrict to named objects
(``resourceNames``). Kubernetes cannot restrict ``create`` by name (the name is not known when the
request is authorized), nor ``list``/``watch`` unless every such request carries the field selector
``metadata.name=<name>``: the controller's ConfigMap watch is therefore granted on every ConfigMap in
``kpa-system``, and only its ``get`` is named.
"""

from __future__ import annotations

from collections.abc import Mapping

Call = tuple[str, str, str]  # (apiGroup, resource, verb)

SYSTEM_NAMESPACE = "kpa-system"
CONTROLLER = "kpa-controller"  # its ServiceAccount, Deployment, Service and Lease
ACTIVATOR = "kpa-activator"  # its ServiceAccount, Deployment and Service
CONFIG_MAP = "config-autoscaler"
WEBHOOK_CONFIGURATION = "kpa-sidecar-injector"
WEBHOOK_SECRET = "kpa-webhook-certs"

_READ = ("get", "list", "watch")
_OWN = ("get", "list", "watch", "create", "patch", "update", "delete")


def _calls(group: str, resource: str, verbs: tuple[str, ...]) -> set[Call]:
    return {(group, resource, verb) for verb in verbs}


CONTROLLER_CALLS: frozenset[Call] = frozenset(
    _calls("apps", "deployments", _READ)
    | _calls("apps", "deployments/scale", ("get", "patch", "update"))
    | _calls("", "pods", (*_READ, "patch"))
    | _calls("", "services", _OWN)
    | _calls("discovery.k8s.io", "endpointslices", _OWN)
    | _calls("", "configmaps", _READ)
    | _calls("coordination.k8s.io", "leases", ("get", "create", "update"))
    | _calls("", "events", ("create", "patch"))
    | _calls("events.k8s.io", "events", ("create", "patch"))
    | _calls("serving.kserve.io", "inferenceservices", _READ)
    | _calls("admissionregistration.k8s.io", "mutatingwebhookconfigurations", ("get", "patch"))
    | _calls("", "secrets", ("get", "create", "update"))
)

ACTIVATOR_CALLS: frozenset[Call] = frozenset(
    _calls("discovery.k8s.io", "endpointslices", _READ)
    | _calls("", "pods", _READ)
    | _calls("", "services", _READ)
)

# (apiGroup, resource) the controller uses only in SYSTEM_NAMESPACE: a Role there, not the ClusterRole.
CONTROLLER_LOCAL: frozenset[tuple[str, str]] = frozenset(
    {("coordination.k8s.io", "leases"), ("", "secrets"), ("", "configmaps")}
)

# Calls restricted to these object names (resourceNames); every other call applies to any name.
CONTROLLER_NAMES: Mapping[Call, tuple[str, ...]] = {
    ("", "configmaps", "get"): (CONFIG_MAP,),
    ("coordination.k8s.io", "leases", "get"): (CONTROLLER,),
    ("coordination.k8s.io", "leases", "update"): (CONTROLLER,),
    ("", "secrets", "get"): (WEBHOOK_SECRET,),
    ("", "secrets", "update"): (WEBHOOK_SECRET,),
    ("admissionregistration.k8s.io", "mutatingwebhookconfigurations", "get"): (WEBHOOK_CONFIGURATION,),
    ("admissionregistration.k8s.io", "mutatingwebhookconfigurations", "patch"): (WEBHOOK_CONFIGURATION,),
}
