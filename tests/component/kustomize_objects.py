"""manifests/ rendered by a real kustomize (`kubectl kustomize`), and its objects read back as typed models.

Shared by the manifest tests: :func:`render` runs kubectl once per directory, :func:`typed` checks an
object against the official `kubernetes` client's model of its kind, :func:`selects` evaluates a
Kubernetes label selector the way the API server does.
"""

from __future__ import annotations

import functools
import shutil
import subprocess
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml
from kubernetes.client import ApiClient

ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = ROOT / "manifests"
KUBECTL = shutil.which("kubectl")
NO_KUBECTL = (
    "kubectl not found on PATH: the manifest tests render manifests/ with `kubectl kustomize`; "
    "`make tools` installs it (Debian package kubernetes-client) when run as root with apt-get"
)

Obj = dict[str, Any]


@functools.cache
def render(directory: str) -> tuple[Obj, ...]:
    """Every object `kubectl kustomize manifests/<directory>` prints, in its order."""
    assert KUBECTL is not None, NO_KUBECTL
    done = subprocess.run(
        [KUBECTL, "kustomize", str(MANIFESTS / directory)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, f"kubectl kustomize manifests/{directory} failed:\n{done.stderr}"
    return tuple(doc for doc in yaml.safe_load_all(done.stdout) if doc)


def one(objects: tuple[Obj, ...], kind: str, name: str) -> Obj:
    found = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}"
    return found[0]


def of_kind(objects: tuple[Obj, ...], kind: str) -> list[Obj]:
    return [o for o in objects if o["kind"] == kind]


def model_name(obj: Obj) -> str:
    """The client's model class for an object: apps/v1 Deployment -> V1Deployment."""
    version = obj["apiVersion"].rsplit("/", 1)[-1]
    return version[0].upper() + version[1:] + obj["kind"]


def typed(data: Any, model: str) -> Any:
    """``data`` read into the client's typed model ``model`` and written back as JSON.

    ``ApiClient._ApiClient__deserialize(data, "V1Deployment")`` is what every ``read_*``/``list_*``
    call runs on a response body already parsed as JSON; it keeps that (name-mangled) name and
    signature in every client release (the pydantic 37.x included), while the public ``deserialize``
    changed from a response object (≤36) to text plus a content type (37). It raises on a wrong type or
    a missing required field. It silently drops fields its model does not know, so the JSON written
    back (``sanitize_for_serialization``) is what the caller compares with ``data``: a misspelt or
    misplaced field shows up as a difference.
    """
    client = ApiClient()
    return client.sanitize_for_serialization(client._ApiClient__deserialize(data, model))


def selects(selector: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    """Whether a LabelSelector (matchLabels and matchExpressions) selects these labels."""
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for expr in selector.get("matchExpressions") or ():
        key, op, values = expr["key"], expr["operator"], expr.get("values") or []
        ok = {
            "In": key in labels and labels[key] in values,
            "NotIn": key not in labels or labels[key] not in values,
            "Exists": key in labels,
            "DoesNotExist": key not in labels,
        }[op]
        if not ok:
            return False
    return True


def pod_specs(obj: Obj) -> Iterator[tuple[Mapping[str, Any], Mapping[str, Any]]]:
    """(pod labels, pod spec) of a workload: a Deployment's template, an InferenceService's predictor."""
    if obj["kind"] == "Deployment":
        template = obj["spec"]["template"]
        yield template["metadata"].get("labels") or {}, template["spec"]
    elif obj["kind"] == "InferenceService":
        yield {}, obj["spec"]["predictor"]


def containers(pod_spec: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    return [*(pod_spec.get("initContainers") or []), *pod_spec["containers"]]
