"""Fault injection and request counting, for tests and benchmarks of the code that talks to the fake.

Bookkeeping only (no clock, no I/O; a lock, as tests arm faults from their own thread while the
server's loop takes them): the routes ask ``take`` before serving a request, which also counts it.
A request is named by its verb (get, list, watch, create, update, patch, delete, deletecollection)
and its resource as RBAC names it: the plural, with ``/status`` or ``/scale`` for a subresource
(``deployments/scale``). ``"*"`` in a rule matches any verb or any resource.
"""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass

from fakecluster import errors
from fakecluster.errors import ApiError

VERBS = ("get", "list", "watch", "create", "update", "patch", "delete", "deletecollection")
_REASONS = {
    409: "Conflict",
    429: "TooManyRequests",
    500: "InternalError",
    503: "ServiceUnavailable",
    504: "Timeout",
}


@dataclass
class _Rule:
    verb: str
    resource: str
    code: int
    remaining: int

    def matches(self, verb: str, resource: str) -> bool:
        return self.verb in ("*", verb) and self.resource in ("*", resource)


class Faults:
    """Pending injected failures and the count of requests served, per (verb, resource)."""

    def __init__(self) -> None:
        self._rules: list[_Rule] = []
        self._requests: Counter[tuple[str, str]] = Counter()
        self._lock = threading.Lock()

    def fail_next(self, times: int, verb: str, resource: str, code: int) -> None:
        """Answer the next ``times`` requests matching ``verb`` and ``resource`` with ``code``."""
        if verb != "*" and verb not in VERBS:
            raise ValueError(f"fail_next: verb {verb!r} is not '*' or one of {', '.join(VERBS)}")
        if code not in _REASONS:
            raise ValueError(f"fail_next: code {code} is not one of {sorted(_REASONS)}")
        if times < 1:
            raise ValueError(f"fail_next: times={times}: inject at least one failure")
        with self._lock:
            self._rules.append(_Rule(verb, resource, code, times))

    def take(self, verb: str, resource: str, name: str) -> ApiError | None:
        """Count this request; the failure to answer instead of serving it, if one is pending."""
        with self._lock:
            self._requests[(verb, resource)] += 1
            rule = next((rule for rule in self._rules if rule.matches(verb, resource)), None)
            if rule is None:
                return None
            rule.remaining -= 1
            if rule.remaining == 0:
                self._rules.remove(rule)
        return _failure(rule.code, resource, name)

    def count(self, verb: str = "*", resource: str = "*") -> int:
        """How many requests matching ``verb`` and ``resource`` were served (or failed) so far."""
        with self._lock:
            counted = list(self._requests.items())
        return sum(n for (v, r), n in counted if verb in ("*", v) and resource in ("*", r))

    def reset_counts(self) -> None:
        with self._lock:
            self._requests.clear()


def _failure(code: int, resource: str, name: str) -> ApiError:
    message = f"injected by the fake cluster (fail_next) for {resource}" + (f" {name!r}" if name else "")
    if code == 500:
        return errors.internal(message)
    details = {"name": name, "kind": resource} if code == 409 else None
    if code == 409:
        message = (
            f'Operation cannot be fulfilled on {resource} "{name}": the object has been modified; please '
            "apply your changes to the latest version and try again (injected by the fake cluster)"
        )
    return ApiError(code, _REASONS[code], message, details)
