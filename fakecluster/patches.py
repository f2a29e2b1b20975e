"""PATCH bodies applied to a stored object: JSON Patch (RFC 6902), JSON merge patch (RFC 7386) and,
through ``fakecluster.strategic``, strategic merge patch — chosen by Content-Type as kube-apiserver does.

Pure functions on plain JSON values; the stored object is never mutated in place. A body that is
not a patch at all is a 400; a well-formed patch that does not apply (a ``test`` that fails, a path
the document lacks) is a 422, which is what kopf's RV-guarded JSON Patches expect when stale.
"""

from __future__ import annotations

import copy
import json
from typing import Any

from fakecluster import errors
from fakecluster.resources import ResourceType
from fakecluster.strategic import strategic_merge

JSON_PATCH = "application/json-patch+json"
MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"
_OPERATIONS = ("add", "remove", "replace", "move", "copy", "test")


def media_types(resource: ResourceType) -> list[str]:
    """The patch types ``resource`` accepts: strategic merge needs Go struct tags, so not for CRs."""
    return [JSON_PATCH, MERGE_PATCH] if resource.custom else [JSON_PATCH, MERGE_PATCH, STRATEGIC_MERGE_PATCH]


def apply_patch(
    content_type: str, document: dict[str, Any], body: bytes, resource: ResourceType
) -> dict[str, Any]:
    """``document`` with the PATCH ``body`` of ``content_type`` applied (a new object)."""
    media_type = content_type.split(";")[0].strip().lower()
    if media_type not in media_types(resource):
        raise errors.unsupported_media_type(media_types(resource))
    try:
        patch = json.loads(body)
    except ValueError as error:
        raise errors.bad_request(f"error decoding patch: {error}") from None
    if media_type == JSON_PATCH:
        result = json_patch(document, patch)
    elif media_type == MERGE_PATCH:
        result = merge_patch(document, patch)
    else:
        result = strategic_merge(document, patch, resource.kind)
    if not isinstance(result, dict):
        raise errors.unprocessable(
            f"the patch made the {resource.kind} a {type(result).__name__}, not an object"
        )
    return result


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: objects merge key by key, ``null`` deletes a key, anything else (lists too) replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def _tokens(pointer: Any) -> list[str]:
    if not isinstance(pointer, str) or (pointer and not pointer.startswith("/")):
        raise errors.bad_request(f"invalid JSON Patch path {pointer!r}: a JSON pointer starts with '/'")
    return [token.replace("~1", "/").replace("~0", "~") for token in pointer.split("/")[1:]]


def _index(container: list[Any], token: str, pointer: str, *, inserting: bool) -> int:
    if inserting and token == "-":
        return len(container)
    if not token.isdigit() or (token != "0" and token.startswith("0")):
        raise errors.unprocessable(f"JSON Patch path {pointer!r}: {token!r} is not an array index")
    index = int(token)
    if index > len(container) or (index == len(container) and not inserting):
        raise errors.unprocessable(f"JSON Patch path {pointer!r}: index {index} out of bounds")
    return index


def _parent(document: Any, pointer: str) -> tuple[Any, str]:
    """The container holding what ``pointer`` names, and the last token."""
    tokens = _tokens(pointer)
    node = document
    for token in tokens[:-1]:
        if isinstance(node, dict) and token in node:
            node = node[token]
        elif isinstance(node, list):
            node = node[_index(node, token, pointer, inserting=False)]
        else:
            raise errors.unprocessable(f"JSON Patch path {pointer!r}: {token!r} does not exist")
    return node, tokens[-1]


def _get(document: Any, pointer: str) -> Any:
    if _tokens(pointer) == []:
        return document
    parent, token = _parent(document, pointer)
    if isinstance(parent, dict) and token in parent:
        return parent[token]
    if isinstance(parent, list):
        return parent[_index(parent, token, pointer, inserting=False)]
    raise errors.unprocessable(f"JSON Patch path {pointer!r} does not exist")


def _add(document: Any, pointer: str, value: Any) -> Any:
    if _tokens(pointer) == []:
        return value
    parent, token = _parent(document, pointer)
    if isinstance(parent, dict):
        parent[token] = value
    elif isinstance(parent, list):
        parent.insert(_index(parent, token, pointer, inserting=True), value)
    else:
        raise errors.unprocessable(f"JSON Patch path {pointer!r}: its parent is not an object or array")
    return document


def _remove(document: Any, pointer: str) -> Any:
    if _tokens(pointer) == []:
        raise errors.unprocessable("JSON Patch cannot remove the whole document")
    parent, token = _parent(document, pointer)
    if isinstance(parent, dict) and token in parent:
        del parent[token]
    elif isinstance(parent, list):
        del parent[_index(parent, token, pointer, inserting=False)]
    else:
        raise errors.unprocessable(f"JSON Patch path {pointer!r} does not exist")
    return document


def _replace(document: Any, pointer: str, value: Any) -> Any:
    if _tokens(pointer) == []:
        return value
    parent, token = _parent(document, pointer)
    if isinstance(parent, dict) and token in parent:
        parent[token] = value
    elif isinstance(parent, list):
        parent[_index(parent, token, pointer, inserting=False)] = value
    else:
        raise errors.unprocessable(f"JSON Patch path {pointer!r} does not exist")
    return document


def json_patch(document: Any, operations: Any) -> Any:
    """RFC 6902 applied in order; the whole patch fails if any operation does (nothing half-applied)."""
    if not isinstance(operations, list):
        raise errors.bad_request("a JSON Patch is a JSON array of operations")
    result = copy.deepcopy(document)
    for operation in operations:
        if (
            not isinstance(operation, dict)
            or operation.get("op") not in _OPERATIONS
            or "path" not in operation
        ):
            raise errors.bad_request(
                f"invalid JSON Patch operation {operation!r}: needs op (one of "
                f"{', '.join(_OPERATIONS)}) and path"
            )
        op, path = operation["op"], operation["path"]
        if op in ("add", "replace", "test") and "value" not in operation:
            raise errors.bad_request(f"JSON Patch {op} at {path!r} has no value")
        if op in ("move", "copy") and "from" not in operation:
            raise errors.bad_request(f"JSON Patch {op} to {path!r} has no from")
        if op == "add":
            result = _add(result, path, copy.deepcopy(operation["value"]))
        elif op == "remove":
            result = _remove(result, path)
        elif op == "replace":
            result = _replace(result, path, copy.deepcopy(operation["value"]))
        elif op == "move":
            value = _get(result, operation["from"])
            result = _add(_remove(result, operation["from"]), path, value)
        elif op == "copy":
            result = _add(result, path, copy.deepcopy(_get(result, operation["from"])))
        elif _get(result, path) != operation["value"]:
            raise errors.unprocessable(
                f"the server rejected our request due to an error in our request: testing value {path} failed"
            )
    return result
