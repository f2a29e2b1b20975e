"""Where the activator's stats go: the autoscaler, over HTTP or in the same process.

Knative's activator streams stats over a websocket; here a ``StatSink`` takes a batch of
``RevisionStat`` and must not block the data path. Two sinks:

* ``HttpStatSink`` POSTs the batch as JSON to the autoscaler (the contract is in docs/activator.md):
  ``[{"namespace": ..., "revision": ..., "stat": {Stat fields}}, ...]``, expecting a 2xx. Each batch
  is sent on its own task, so, as in Knative, batches may arrive out of order; a failed send is
  logged and counted, not retried (the next second's report carries fresh figures).
* ``CallbackStatSink`` hands the batch to a Python callable (the local stack's embedded autoscaler).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import httpx

from autoscaler.stat import Stat

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RevisionStat:
    namespace: str
    revision: str
    stat: Stat

    def to_json(self) -> dict[str, Any]:
        return {"namespace": self.namespace, "revision": self.revision, "stat": self.stat.to_json()}


class StatSink(Protocol):
    def send(self, stats: Sequence[RevisionStat]) -> None:
        """Ship one batch without blocking the caller."""

    async def close(self) -> None:
        """Finish or drop what is in flight and release resources."""


class CallbackStatSink:
    """Calls ``callback(batch)`` synchronously; exceptions are logged, never raised into the data path."""

    def __init__(self, callback: Callable[[Sequence[RevisionStat]], None]) -> None:
        self._callback = callback

    def send(self, stats: Sequence[RevisionStat]) -> None:
        try:
            self._callback(stats)
        except Exception:
            log.exception("stat callback failed for %d stat(s)", len(stats))

    async def close(self) -> None:
        return None


class HttpStatSink:
    """POSTs each batch to ``url`` on a background task (httpx: a control-plane call, not the hot path)."""

    def __init__(self, url: str, *, timeout: float = 2.0) -> None:
        self.url = url
        self.sent = 0
        self.failed = 0
        self._client = httpx.AsyncClient(timeout=timeout)
        self._tasks: set[asyncio.Task[None]] = set()

    def send(self, stats: Sequence[RevisionStat]) -> None:
        if not stats:
            return
        task = asyncio.get_running_loop().create_task(self._post([s.to_json() for s in stats]))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _post(self, body: list[dict[str, Any]]) -> None:
        try:
            reply = await self._client.post(self.url, json=body)
            if reply.status_code // 100 != 2:
                raise httpx.HTTPStatusError(
                    f"{reply.status_code} {reply.text[:200]!r}", request=reply.request, response=reply
                )
            self.sent += 1
        except httpx.HTTPError as exc:
            self.failed += 1
            if self.failed == 1 or self.failed % 100 == 0:
                log.warning("stat push to %s failed (%d so far): %s", self.url, self.failed, exc)

    async def close(self) -> None:
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=1.0)
        await self._client.aclose()
