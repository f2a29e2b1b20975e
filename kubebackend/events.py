"""Kubernetes Events from the controller: what it decided and what it refused, where users look.

`kubectl describe deployment hello` shows the Events whose ``involvedObject`` is the Deployment, so
a user who wrote a bad annotation sees "annotation autoscaling.knative.dev/target="abc": not a
number" there, and one who wonders why traffic moved sees the flip. Events are core/v1 (what
``kubectl describe`` and every Kubernetes version read), named ``<object>.<hex nanoseconds>`` as
client-go names them.

Best effort, as client-go's recorder is: posting happens off the event loop, a failure is logged
and dropped (an Event is never worth blocking or crashing a controller for), and the same message
about the same object is not posted again within ``repeat_after`` seconds, so a revision that fails
every tick does not flood the API server.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Executor
from datetime import UTC, datetime
from typing import Any

from kubernetes.client import CoreV1Api, CoreV1Event

from kubebackend.retry import describe

log = logging.getLogger("kpa.controller")

COMPONENT = "kpa-controller"
NORMAL, WARNING = "Normal", "Warning"
REPEAT_AFTER_S = 600.0
MESSAGE_LIMIT = 1024  # events.k8s.io caps note at 1 kB; core Events are kept to the same
_REMEMBERED = 10_000  # (object, reason, message) keys kept for de-duplication before the oldest go


def involved(obj: Mapping[str, Any]) -> dict[str, Any]:
    """The ObjectReference of an object as the API gave it (kind and apiVersion filled by informers)."""
    meta = obj.get("metadata") or {}
    return {
        key: value
        for key, value in (
            ("kind", obj.get("kind")),
            ("apiVersion", obj.get("apiVersion")),
            ("namespace", meta.get("namespace")),
            ("name", meta.get("name")),
            ("uid", meta.get("uid")),
            ("resourceVersion", meta.get("resourceVersion")),
        )
        if value
    }


def event_body(
    reference: Mapping[str, Any], kind: str, reason: str, message: str, now: float, instance: str
) -> dict[str, Any]:
    """A core/v1 Event about ``reference`` (pure: ``now`` is unix seconds)."""
    stamp = datetime.fromtimestamp(int(now), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    namespace = reference.get("namespace") or "default"
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": f"{reference.get('name', 'object')}.{int(now * 1e9):x}", "namespace": namespace},
        "involvedObject": dict(reference),
        "type": kind,
        "reason": reason,
        "message": message if len(message) <= MESSAGE_LIMIT else message[: MESSAGE_LIMIT - 1] + "…",
        "source": {"component": COMPONENT},
        "firstTimestamp": stamp,
        "lastTimestamp": stamp,
        "count": 1,
        "reportingComponent": COMPONENT,
        "reportingInstance": instance,
    }


class EventRecorder:
    """Posts Events about objects, off the loop, de-duplicated; see the module docstring."""

    def __init__(
        self,
        core: CoreV1Api,
        executor: Executor | None = None,
        *,
        instance: str | None = None,
        clock: Callable[[], float] = time.time,
        repeat_after: float = REPEAT_AFTER_S,
    ) -> None:
        self._core = core
        self._executor = executor
        self.instance = instance or socket.gethostname()
        self._clock = clock
        self._repeat_after = repeat_after
        self._last: dict[tuple[str, str, str, str], float] = {}
        self._tasks: set[asyncio.Future[None]] = set()
        self.posted = 0
        self.failed = 0

    def normal(self, obj: Mapping[str, Any], reason: str, message: str) -> None:
        self.record(obj, NORMAL, reason, message)

    def warning(self, obj: Mapping[str, Any], reason: str, message: str) -> None:
        self.record(obj, WARNING, reason, message)

    def record(self, obj: Mapping[str, Any], kind: str, reason: str, message: str) -> None:
        """Post an Event about ``obj`` (an object as the API gave it) unless it was just posted."""
        reference = involved(obj)
        now = self._clock()
        key = (str(reference.get("uid") or reference.get("name")), kind, reason, message)
        last = self._last.get(key)
        if last is not None and now - last < self._repeat_after:
            return
        if len(self._last) >= _REMEMBERED:
            for old in sorted(self._last, key=self._last.__getitem__)[: _REMEMBERED // 2]:
                del self._last[old]
        self._last[key] = now
        body = event_body(reference, kind, reason, message, now, self.instance)
        log.log(
            logging.WARNING if kind == WARNING else logging.INFO,
            "%s %s/%s: %s: %s",
            reference.get("kind"), reference.get("namespace"), reference.get("name"), reason, message,
        )  # fmt: skip
        future = asyncio.get_running_loop().run_in_executor(self._executor, self._post, body)
        self._tasks.add(future)
        future.add_done_callback(self._tasks.discard)

    def _post(self, body: dict[str, Any]) -> None:
        try:
            event = CoreV1Event.from_dict(body)
            assert event is not None
            self._core.create_namespaced_event(body["metadata"]["namespace"], event)
            self.posted += 1
        except Exception as error:  # best effort: never the controller's failure
            self.failed += 1
            log.warning("could not post Event %s: %s", body["reason"], describe(error))

    async def close(self) -> None:
        """Wait (briefly) for Events still being posted."""
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=2.0)
