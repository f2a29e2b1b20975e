"""Every failure the fake answers, as kube-apiserver's ``Status`` object.

Clients read these bodies, not just the HTTP code: kubernetes-python's leader election creates its
lock only when a 404 body parses to ``{"code": 404}``, and ``Watch`` raises KeyError on an ERROR
event without ``code``/``reason``/``message``. So one exception type carries the whole Status, and
each builder writes the message the way the real server does (reference §3, "Error Status objects").
"""

from __future__ import annotations

from typing import Any

from fakecluster.resources import ResourceType


class ApiError(Exception):
    """A request the API server refuses; ``status`` is the body and ``code`` the HTTP status."""

    def __init__(self, code: int, reason: str, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.details = {key: value for key, value in (details or {}).items() if value not in (None, "")}

    @property
    def status(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        if self.details:
            body["details"] = self.details
        return body


def _details(resource: ResourceType, name: str) -> dict[str, Any]:
    return {"name": name, "group": resource.group, "kind": resource.plural}


def not_found(resource: ResourceType, name: str) -> ApiError:
    return ApiError(404, "NotFound", f'{resource.qualified} "{name}" not found', _details(resource, name))


def conflict(resource: ResourceType, name: str) -> ApiError:
    message = (
        f'Operation cannot be fulfilled on {resource.qualified} "{name}": the object has been modified; '
        "please apply your changes to the latest version and try again"
    )
    return ApiError(409, "Conflict", message, _details(resource, name))


def already_exists(resource: ResourceType, name: str) -> ApiError:
    return ApiError(
        409, "AlreadyExists", f'{resource.qualified} "{name}" already exists', _details(resource, name)
    )


def invalid(resource: ResourceType, name: str, causes: list[tuple[str, str]]) -> ApiError:
    """422 for ``causes`` given as (field, "Invalid value: …" or "Required value: …") pairs."""
    summary = ", ".join(f"{field}: {why}" for field, why in causes)
    summary = summary if len(causes) == 1 else f"[{summary}]"  # as apimachinery's NewInvalid words several
    details = {
        "name": name,
        "group": resource.group,
        "kind": resource.kind,
        "causes": [{"reason": "FieldValueInvalid", "message": why, "field": field} for field, why in causes],
    }
    return ApiError(422, "Invalid", f'{resource.qualified_kind} "{name}" is invalid: {summary}', details)


def unprocessable(message: str) -> ApiError:
    """422 without a field: a JSON Patch ``test`` that failed or a path the document lacks."""
    return ApiError(422, "Invalid", message)


def bad_request(message: str) -> ApiError:
    return ApiError(400, "BadRequest", message)


def internal(message: str) -> ApiError:
    return ApiError(
        500, "InternalError", f"Internal error occurred: {message}", {"causes": [{"message": message}]}
    )


def expired(requested: int, oldest: int) -> ApiError:
    """410 for a watch (or list) from a resourceVersion older than the kept history."""
    return ApiError(410, "Expired", f"too old resource version: {requested} ({oldest})")


def unsupported_media_type(accepted: list[str]) -> ApiError:
    accepted_list = ", ".join(accepted)
    message = (
        f"the body of the request was in an unknown format - accepted media types include: {accepted_list}"
    )
    return ApiError(415, "UnsupportedMediaType", message)


def method_not_allowed(verb: str, what: str) -> ApiError:
    message = f"the server does not allow this method on the requested resource: {verb} {what}"
    return ApiError(405, "MethodNotAllowed", message)


def unauthorized() -> ApiError:
    return ApiError(401, "Unauthorized", "Unauthorized")


def path_not_found(path: str) -> ApiError:
    return ApiError(404, "NotFound", f"the server could not find the requested resource ({path})")
