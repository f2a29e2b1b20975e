"""How fast the local backend may start pods: a cap on launches under way plus a token bucket.

A revision asking for thousands of pods must not fork thousands of processes at once: every launch
costs an interpreter start (and a model load) on the same few cores, and launches that pile up only
slow each other down. So at most ``max_in_flight`` pods may be starting (spawned, not yet ready or
failed) at once, and new launches are paced at ``per_second`` with bursts of up to ``burst``.

Pure: time is the ``now`` argument (seconds, any monotonic origin), so the rule is tested without a
clock and the caller decides when to look again (``wait``).
"""

from __future__ import annotations

import math


class SpawnLimitError(ValueError):
    """A limit that cannot work (zero or negative); the message names the parameter."""


class SpawnLimiter:
    """Grants pod launches: ``allowed(now)`` how many may start now, ``take(now)`` one starts,
    ``finished()`` one launch ended (ready, failed or cancelled)."""

    __slots__ = ("_at", "_tokens", "burst", "in_flight", "max_in_flight", "per_second")

    def __init__(self, max_in_flight: int, per_second: float, burst: int) -> None:
        if max_in_flight < 1:
            raise SpawnLimitError(f"max_in_flight={max_in_flight}: must be at least 1")
        if not (math.isfinite(per_second) and per_second > 0):
            raise SpawnLimitError(f"per_second={per_second}: must be a finite number > 0")
        if burst < 1:
            raise SpawnLimitError(f"burst={burst}: must be at least 1")
        self.max_in_flight = max_in_flight
        self.per_second = per_second
        self.burst = burst
        self.in_flight = 0
        self._tokens = float(burst)  # a fresh limiter may start a full burst at once
        self._at: float | None = None

    def _refill(self, now: float) -> None:
        if self._at is not None and now > self._at:
            self._tokens = min(float(self.burst), self._tokens + (now - self._at) * self.per_second)
        if self._at is None or now > self._at:
            self._at = now

    def allowed(self, now: float) -> int:
        """How many launches may start at ``now``."""
        self._refill(now)
        return max(0, min(self.max_in_flight - self.in_flight, math.floor(self._tokens + 1e-9)))

    def take(self, now: float) -> None:
        """Count one launch starting at ``now``; raises SpawnLimitError if none is allowed."""
        if self.allowed(now) < 1:
            raise SpawnLimitError(
                f"no launch allowed at {now}: {self.in_flight} of {self.max_in_flight} in flight, "
                f"{self._tokens:.2f} tokens"
            )
        self._tokens -= 1.0
        self.in_flight += 1

    def finished(self) -> None:
        """A launch ended; its in-flight place is free again."""
        if self.in_flight > 0:
            self.in_flight -= 1

    def wait(self, now: float) -> float | None:
        """Seconds until a launch is allowed again: 0 if one is now, None if only ``finished`` can
        free one (every in-flight place is taken)."""
        if self.in_flight >= self.max_in_flight:
            return None
        self._refill(now)
        missing = 1.0 - self._tokens
        return 0.0 if missing <= 1e-9 else missing / self.per_second
