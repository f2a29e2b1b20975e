"""One open watch: the changes the cluster offers it, in commit order, streamed as JSON lines until
the watch times out, is dropped, or the client goes away; BOOKMARKs on a timer when asked for.

The cluster offers changes under its lock from whatever thread wrote; ``call_soon_threadsafe``
keeps them in commit order on the server's loop, so a watch never sees revisions out of order.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator
from typing import Any

from fakecluster import watch_events
from fakecluster.resources import ResourceType
from fakecluster.store import Change
from fakecluster.watch_events import Matcher

MAX_PENDING = 10_000  # a client this far behind is dropped, as kube-apiserver drops slow watchers


class Watcher:
    """A watch of ``resource`` in ``namespace`` (None: all) through ``matches``, from ``revision``."""

    def __init__(
        self,
        resource: ResourceType,
        namespace: str | None,
        matches: Matcher,
        loop: asyncio.AbstractEventLoop,
        revision: int,
    ) -> None:
        self.resource = resource
        self.namespace = namespace
        self.matches = matches
        self.revision = revision  # every change up to this one has been offered (what a BOOKMARK says)
        self._loop = loop
        self._queue: asyncio.Queue[Change | None] = asyncio.Queue()

    def offer(self, change: Change) -> None:
        """Hand over a committed change (any thread); the stream decides what the client sees of it."""
        self._loop.call_soon_threadsafe(self._put, change)

    def close(self) -> None:
        """End the stream after what was offered before (any thread): the client sees a clean end."""
        self._loop.call_soon_threadsafe(self._put, None)

    def _put(self, item: Change | None) -> None:
        self._queue.put_nowait(item if self._queue.qsize() < MAX_PENDING else None)

    async def stream(
        self, first: list[dict[str, Any]], timeout_s: float, bookmark_every_s: float | None
    ) -> AsyncIterator[bytes]:
        """The response body: ``first`` (replayed events), then each change this watcher sees."""
        loop = asyncio.get_running_loop()
        for replayed in first:
            yield watch_events.line(replayed)
        deadline = loop.time() + timeout_s
        next_bookmark = loop.time() + bookmark_every_s if bookmark_every_s else math.inf
        while (left := deadline - loop.time()) > 0:
            try:
                async with asyncio.timeout(min(left, next_bookmark - loop.time())):
                    change = await self._queue.get()
            except TimeoutError:
                if bookmark_every_s and loop.time() >= next_bookmark:
                    yield watch_events.line(watch_events.bookmark(self.resource, self.revision))
                    next_bookmark = loop.time() + bookmark_every_s
                continue
            if change is None:
                return
            self.revision = change.revision
            event = watch_events.seen_as(change, self.namespace, self.matches)
            if event is not None:
                yield watch_events.line(event)
        if bookmark_every_s:  # kube-apiserver sends one shortly before a watch times out
            yield watch_events.line(watch_events.bookmark(self.resource, self.revision))
