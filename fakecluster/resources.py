"""The resource types the fake serves, and what each one's storage strategy does differently.

One table drives routing, discovery, validation and storage, so a resource added here is served
everywhere at once. The per-type flags mirror kube-apiserver's strategies (docs/fake-cluster.md):
which types count ``generation``, which have a ``status`` subresource whose writes are kept apart
from the main endpoint's, which answer a delete with the object, and which are custom resources
(no strategic merge, no unconditional PUT, ``kind`` on list items).
"""

from __future__ import annotations

from dataclasses import dataclass

FULL_VERBS = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")


@dataclass(frozen=True)
class ResourceType:
    """One REST resource: where it lives on the wire and how its writes are stored."""

    group: str  # "" for the core group
    version: str
    plural: str
    singular: str
    kind: str
    namespaced: bool = True
    subresources: tuple[str, ...] = ()  # "status", "scale"
    # "spec": a change of spec or annotations bumps generation (Deployments); "all": any change
    # outside metadata (and status, where it is a subresource) does (custom resources, webhook
    # configurations); None: the type has no generation.
    generation: str | None = None
    custom: bool = False
    returns_deleted_object: bool = False
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    field_labels: tuple[str, ...] = ()  # field selector labels beyond metadata.name/namespace

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def qualified(self) -> str:
        """The name Status messages use: ``deployments.apps``, or ``pods`` in the core group."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    @property
    def qualified_kind(self) -> str:
        """The kind as 422 messages name it: ``Deployment.apps``, or ``Pod`` in the core group."""
        return f"{self.kind}.{self.group}" if self.group else self.kind

    @property
    def has_status(self) -> bool:
        return "status" in self.subresources

    @property
    def supported_field_labels(self) -> frozenset[str]:
        return frozenset(("metadata.name", "metadata.namespace", *self.field_labels))

    def __str__(self) -> str:
        return f"{self.api_version} {self.plural}"


EVENT_FIELDS = (
    "involvedObject.kind",
    "involvedObject.namespace",
    "involvedObject.name",
    "involvedObject.uid",
    "involvedObject.apiVersion",
    "involvedObject.resourceVersion",
    "involvedObject.fieldPath",
    "reason",
    "reportingComponent",
    "source",
    "type",
)

DEPLOYMENTS = ResourceType(
    "apps",
    "v1",
    "deployments",
    "deployment",
    "Deployment",
    subresources=("status", "scale"),
    generation="spec",
    short_names=("deploy",),
    categories=("all",),
)
PODS = ResourceType(
    "",
    "v1",
    "pods",
    "pod",
    "Pod",
    subresources=("status",),
    returns_deleted_object=True,
    short_names=("po",),
    categories=("all",),
    field_labels=(
        "spec.nodeName",
        "spec.restartPolicy",
        "spec.schedulerName",
        "spec.serviceAccountName",
        "status.phase",
        "status.podIP",
        "status.nominatedNodeName",
    ),
)
SERVICES = ResourceType(
    "",
    "v1",
    "services",
    "service",
    "Service",
    subresources=("status",),
    returns_deleted_object=True,
    short_names=("svc",),
    categories=("all",),
)
CONFIGMAPS = ResourceType("", "v1", "configmaps", "configmap", "ConfigMap", short_names=("cm",))
SECRETS = ResourceType("", "v1", "secrets", "secret", "Secret", field_labels=("type",))
EVENTS = ResourceType("", "v1", "events", "event", "Event", short_names=("ev",), field_labels=EVENT_FIELDS)
EVENTS_V1 = ResourceType(
    "events.k8s.io",
    "v1",
    "events",
    "event",
    "Event",
    short_names=("ev",),
    field_labels=(
        "regarding.kind",
        "regarding.namespace",
        "regarding.name",
        "regarding.uid",
        "reason",
        "reportingController",
        "type",
    ),
)
ENDPOINTSLICES = ResourceType("discovery.k8s.io", "v1", "endpointslices", "endpointslice", "EndpointSlice")
LEASES = ResourceType("coordination.k8s.io", "v1", "leases", "lease", "Lease")
MUTATING_WEBHOOKS = ResourceType(
    "admissionregistration.k8s.io",
    "v1",
    "mutatingwebhookconfigurations",
    "mutatingwebhookconfiguration",
    "MutatingWebhookConfiguration",
    namespaced=False,
    generation="all",
)
INFERENCESERVICES = ResourceType(
    "serving.kserve.io",
    "v1beta1",
    "inferenceservices",
    "inferenceservice",
    "InferenceService",
    subresources=("status",),
    generation="all",
    custom=True,
    returns_deleted_object=True,
    short_names=("isvc",),
)

ALL: tuple[ResourceType, ...] = (
    PODS,
    SERVICES,
    CONFIGMAPS,
    SECRETS,
    EVENTS,
    DEPLOYMENTS,
    EVENTS_V1,
    ENDPOINTSLICES,
    LEASES,
    MUTATING_WEBHOOKS,
    INFERENCESERVICES,
)
_BY_PATH = {(r.group, r.version, r.plural): r for r in ALL}


def lookup(group: str, version: str, plural: str) -> ResourceType | None:
    """The resource served at ``/apis/GROUP/VERSION/PLURAL`` (``group`` "" for ``/api/v1``), if any."""
    return _BY_PATH.get((group, version, plural))


def group_versions() -> dict[str, list[str]]:
    """Every named group and its versions, in the order the table lists them (discovery's order)."""
    groups: dict[str, list[str]] = {}
    for resource in ALL:
        if resource.group and resource.version not in groups.setdefault(resource.group, []):
            groups[resource.group].append(resource.version)
    return groups
