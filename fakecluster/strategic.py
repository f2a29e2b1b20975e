"""Strategic merge patch: the Python client's default PATCH for built-in types (any dict body).

Like a merge patch, except that some lists merge item by item on a key instead of being replaced
— a patch naming one container changes that container and keeps the others — and the patch can
carry directives (``$patch: replace|delete``, ``$setElementOrder/…``, ``$deleteFromPrimitiveList/…``,
``$retainKeys``). kube-apiserver reads the merge keys from Go struct tags; here they are a table of
the lists the project's objects use (docs/fake-cluster.md): a list not in it is replaced, as a
list without a merge key is in Kubernetes.
"""

from __future__ import annotations

import copy
from typing import Any

from fakecluster import errors

Path = tuple[str, ...]
UNION = "<union>"  # a list of strings merged as a set (metadata.finalizers)
_DELETE = object()  # a map patched with ``$patch: delete``


def _pod_spec_keys(at: Path) -> dict[Path, str]:
    keys: dict[Path, str] = {
        ("volumes",): "name",
        ("imagePullSecrets",): "name",
        ("hostAliases",): "ip",
        ("readinessGates",): "conditionType",
        ("resourceClaims",): "name",
        ("topologySpreadConstraints",): "topologyKey",
    }
    for containers in ("containers", "initContainers", "ephemeralContainers"):
        keys[(containers,)] = "name"
        keys[(containers, "ports")] = "containerPort"
        keys[(containers, "env")] = "name"
        keys[(containers, "volumeMounts")] = "mountPath"
        keys[(containers, "volumeDevices")] = "devicePath"
    return {at + path: key for path, key in keys.items()}


_EVERY_KIND: dict[Path, str] = {
    ("metadata", "ownerReferences"): "uid",
    ("metadata", "finalizers"): UNION,
    ("status", "conditions"): "type",
}
_BY_KIND: dict[str, dict[Path, str]] = {
    "Pod": {**_pod_spec_keys(("spec",)), ("status", "podIPs"): "ip"},
    "Deployment": _pod_spec_keys(("spec", "template", "spec")),
    "Service": {("spec", "ports"): "port"},
    "MutatingWebhookConfiguration": {("webhooks",): "name"},
}


def merge_key(kind: str, path: Path) -> str | None:
    """How the list at ``path`` (field names, list positions left out) of a ``kind`` merges: by
    the key returned, as a set (UNION), or None: the patch's list replaces it."""
    return _BY_KIND.get(kind, {}).get(path) or _EVERY_KIND.get(path)


def _plain(value: Any) -> Any:
    """A deep copy without directives: what a patch's new subtree stores."""
    if isinstance(value, dict):
        return {
            key: _plain(item) for key, item in value.items() if not key.startswith("$") and item is not None
        }
    if isinstance(value, list):
        return [_plain(item) for item in value]
    return value


def _where(path: Path) -> str:
    return ".".join(path) or "the object"


def _merge_list(original: list[Any], patch: list[Any], path: Path, kind: str) -> list[Any]:
    key = merge_key(kind, path)
    if key is None:
        return [_plain(item) for item in patch]
    if key == UNION:
        return copy.deepcopy(original) + [item for item in patch if item not in original]
    if any(isinstance(item, dict) and item.get("$patch") == "replace" for item in patch):
        return [
            _plain(item) for item in patch if not (isinstance(item, dict) and item.get("$patch") == "replace")
        ]
    result = copy.deepcopy(original)
    for item in patch:
        if not isinstance(item, dict) or key not in item:
            raise errors.bad_request(
                f"strategic merge patch: an item of {_where(path)} lacks its merge key {key!r}"
            )
        found = next(
            (
                index
                for index, old in enumerate(result)
                if isinstance(old, dict) and old.get(key) == item[key]
            ),
            None,
        )
        if item.get("$patch") == "delete":
            if found is not None:
                del result[found]
        elif found is not None:
            result[found] = _merge_map(result[found], item, path, kind)
        else:
            result.append(_merge_map({}, item, path, kind))
    return result


def _ordered(items: list[Any], order: list[Any], key: str | None) -> list[Any]:
    """``items`` in the order ``$setElementOrder`` gives; items it does not name keep their place after."""

    def identity(item: Any) -> Any:
        return item.get(key) if key and isinstance(item, dict) else item

    wanted = [identity(entry) for entry in order]
    rank = {value: index for index, value in enumerate(wanted) if isinstance(value, (str, int))}
    return sorted(items, key=lambda item: rank.get(identity(item), len(rank)))


def _merge_map(original: dict[str, Any], patch: dict[str, Any], path: Path, kind: str) -> Any:
    patch = dict(patch)
    directive = patch.pop("$patch", None)
    if directive == "delete":
        return _DELETE
    if directive == "replace":
        return _plain(patch)
    if directive is not None:
        raise errors.bad_request(f"strategic merge patch: unknown $patch {directive!r} at {_where(path)}")
    retain = patch.pop("$retainKeys", None)
    orders = {
        name.split("/", 1)[1]: patch.pop(name) for name in list(patch) if name.startswith("$setElementOrder/")
    }
    removals = {
        name.split("/", 1)[1]: patch.pop(name)
        for name in list(patch)
        if name.startswith("$deleteFromPrimitiveList/")
    }
    result = dict(original)
    for name, value in patch.items():
        current = result.get(name)
        if value is None:
            result.pop(name, None)
        elif isinstance(value, dict):
            merged = _merge_map(current if isinstance(current, dict) else {}, value, (*path, name), kind)
            if merged is _DELETE:
                result.pop(name, None)
            else:
                result[name] = merged
        elif isinstance(value, list):
            result[name] = _merge_list(
                current if isinstance(current, list) else [], value, (*path, name), kind
            )
        else:
            result[name] = value
    for name, values in removals.items():
        result[name] = [item for item in result.get(name) or [] if item not in values]
    for name, order in orders.items():
        result[name] = _ordered(result.get(name) or [], order, merge_key(kind, (*path, name)))
    if retain is not None:
        result = {name: value for name, value in result.items() if name in retain}
    return result


def strategic_merge(document: dict[str, Any], patch: Any, kind: str) -> dict[str, Any]:
    """``document`` (an object of ``kind``) with the strategic merge ``patch`` applied."""
    if not isinstance(patch, dict):
        raise errors.bad_request("a strategic merge patch is a JSON object")
    merged = _merge_map(document, patch, (), kind)
    if not isinstance(merged, dict):  # ``$patch: delete`` at the top
        raise errors.unprocessable("a strategic merge patch cannot delete the whole object")
    return merged
