"""What the activator knows about one revision, validated once at the edge.

The control API, the CLI's revisions file and the in-process API all build a ``RevisionConfig``
through ``RevisionConfig.from_json``, so a bad value is refused with the same message whichever
way it came in: the field, the value, and what would be accepted.
"""

from __future__ import annotations

import contextlib
import math
import re
from dataclasses import dataclass
from typing import Any

from autoscaler.stat import RevisionKey

# Knative's defaults: revision timeoutSeconds 300, containerConcurrency 0 (unlimited).
DEFAULT_TIMEOUT_SECONDS = 300.0
DEFAULT_NAMESPACE = "default"

# A held request for a cc=0 revision stands for "up to 100 in flight per pod" when sizing the queue:
# Knative's container-concurrency-target-default, the load one pod is expected to carry.
_UNLIMITED_CC_SIZING = 100
# Never bound the queue below this: a cold revision must absorb the burst that woke it while its first
# pods start (Knative's activator never rejects at all; a held request costs one socket).
MIN_QUEUE_BOUND = 1000
# Like the queue-proxy's breaker (queue depth 10·cc), but per revision and counted in pods.
QUEUE_DEPTH_PER_SLOT = 10

_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_FIELDS = ("name", "namespace", "container_concurrency", "timeout_seconds", "queue_bound")


def _positive_finite(value: float) -> bool:
    try:
        return math.isfinite(value) and value > 0
    except OverflowError:  # an integer too large for a float
        return False


class ActivatorConfigError(ValueError):
    """A revision setting that cannot be used; the message names it and the accepted range."""


def default_queue_bound(container_concurrency: int, pods: int) -> int:
    """How many requests a revision may hold while it lacks capacity, when the user did not say.

    Sized from the revision's capacity: ten queued requests per concurrency slot of the assigned
    pods, as the queue-proxy queues 10·cc per pod, counting at least one pod so a revision at zero
    can hold its first burst, and never fewer than ``MIN_QUEUE_BOUND``.
    """
    per_pod = container_concurrency if container_concurrency > 0 else _UNLIMITED_CC_SIZING
    return max(MIN_QUEUE_BOUND, QUEUE_DEPTH_PER_SLOT * per_pod * max(1, pods))


def check_activator_slot(index: int, count: int) -> None:
    """A replica's place among ``count`` activators; index -1 means "not in the list: use every pod"."""
    if count < 1 or not -1 <= index < count:
        raise ActivatorConfigError(
            f"activator index={index} count={count}: need count >= 1 and -1 <= index < count"
        )


@dataclass(frozen=True, slots=True)
class RevisionConfig:
    name: str
    namespace: str = DEFAULT_NAMESPACE
    container_concurrency: int = 0  # 0 = unlimited, as in Knative
    timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS  # covers waiting for capacity and the proxied call
    queue_bound: int | None = None  # None = default_queue_bound(cc, pods)

    def __post_init__(self) -> None:
        for label, value in (("name", self.name), ("namespace", self.namespace)):
            if not isinstance(value, str) or not _NAME.fullmatch(value) or len(value) > 63:
                raise ActivatorConfigError(
                    f"revision {label}={value!r}: must be a DNS label (lowercase letters, digits, '-', "
                    f"at most 63 characters)"
                )
        cc = self.container_concurrency
        if isinstance(cc, bool) or not isinstance(cc, int) or cc < 0:
            raise ActivatorConfigError(
                f"revision {self.name} container_concurrency={cc!r}: must be an integer >= 0"
            )
        timeout = self.timeout_seconds
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not _positive_finite(timeout):
            raise ActivatorConfigError(
                f"revision {self.name} timeout_seconds={timeout!r}: must be a number > 0"
            )
        bound = self.queue_bound
        if bound is not None and (isinstance(bound, bool) or not isinstance(bound, int) or bound < 1):
            raise ActivatorConfigError(
                f"revision {self.name} queue_bound={bound!r}: must be an integer >= 1, "
                "or null for the default"
            )

    @property
    def key(self) -> RevisionKey:
        return RevisionKey(self.namespace, self.name)

    def queue_bound_for(self, pods: int) -> int:
        return (
            self.queue_bound
            if self.queue_bound is not None
            else default_queue_bound(self.container_concurrency, pods)
        )

    def to_json(self) -> dict[str, Any]:
        return {field: getattr(self, field) for field in _FIELDS}

    @classmethod
    def from_json(cls, doc: Any, *, name: str | None = None) -> RevisionConfig:
        """Build from a JSON/YAML mapping; ``name`` fills in the name when the document is keyed by it."""
        if not isinstance(doc, dict):
            raise ActivatorConfigError(f"revision config must be an object, got {type(doc).__name__}")
        unknown = set(doc) - set(_FIELDS)
        if unknown:
            raise ActivatorConfigError(
                f"revision config has unknown field(s) {sorted(unknown, key=str)}; allowed: {list(_FIELDS)}"
            )
        values = dict(doc)
        if name is not None and values.setdefault("name", name) != name:
            raise ActivatorConfigError(
                f"revision config name={values['name']!r} does not match its key {name!r}"
            )
        if "name" not in values:
            raise ActivatorConfigError("revision config needs a name")
        timeout = values.get("timeout_seconds")
        if isinstance(timeout, int) and not isinstance(timeout, bool):
            with contextlib.suppress(OverflowError):  # too large for a float: refused by name below
                values["timeout_seconds"] = float(timeout)
        return cls(**values)
