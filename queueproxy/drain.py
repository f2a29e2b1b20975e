"""Drain: keep serving after SIGTERM until traffic has been quiet for a while, then let go.

Kubernetes removes a terminating pod from endpoints asynchronously, so requests keep arriving for
a few seconds after SIGTERM. Knative's answer, kept here: fail readiness at once, keep serving,
and finish only when ``quiet_period`` has passed since the later of the drain start and the last
request. ``Drainer`` is the pure rule (time comes from the caller); ``DrainWaiter`` is its asyncio
shell used by the SIGTERM path and by the admin ``/wait-for-drain`` endpoint.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field


@dataclass
class Drainer:
    quiet_period: float
    draining_since: float | None = field(default=None)
    last_request: float = field(default=float("-inf"))

    @property
    def draining(self) -> bool:
        return self.draining_since is not None

    def touch(self, now: float) -> None:
        """A request arrived (probes excluded): while draining it restarts the quiet period."""
        self.last_request = now

    def start(self, now: float) -> None:
        if self.draining_since is None:
            self.draining_since = now

    def drained_at(self) -> float | None:
        """When the drain completes if no further request arrives; None when not draining."""
        if self.draining_since is None:
            return None
        return max(self.draining_since, self.last_request) + self.quiet_period


class DrainWaiter:
    """Waits on a ``Drainer`` with the monotonic clock."""

    def __init__(self, drainer: Drainer) -> None:
        self.drainer = drainer

    def start(self) -> None:
        self.drainer.start(time.monotonic())

    async def wait(self) -> None:
        """Block until drained; returns at once when no drain was started."""
        while True:
            done_at = self.drainer.drained_at()
            if done_at is None:
                return
            left = done_at - time.monotonic()
            if left <= 0:
                return
            await asyncio.sleep(left)  # a request in the meantime moves done_at: look again
