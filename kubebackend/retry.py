"""How the controller retries the API server: which failures are worth retrying, how long to wait,
and a per-key worker that coalesces writes and retries them.

An API server answers 409 when someone wrote the object since we read it, 429 when it sheds load,
5xx when it (or etcd) is unwell, and a connection can fail while it restarts. All of these pass;
the right answer is to try again later with the newest intent, not to crash and not to hammer it.
Other 4xx answers (403 RBAC, 404 gone, 422 invalid) will fail the same way next time: the caller
logs them, tells the user with an Event and does not retry.

:class:`KeyedWork` is client-go's workqueue cut down to what we need: ``add(key)`` asks for the
work of ``key`` to run; at most one run per key is under way, a key added while it runs runs once
more afterwards (so a burst of changes costs one or two API calls, and the last run sees the latest
state), and a run that raises is retried after a jittered exponential backoff.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

import urllib3.exceptions
from kubernetes.client import ApiException

log = logging.getLogger("kpa.controller")

BACKOFF_BASE = 0.2  # seconds before the first retry (before jitter)
BACKOFF_CAP = 30.0  # never wait longer than this between tries
RETRYABLE_STATUS = frozenset({0, 409, 429, 500, 502, 503, 504})

K = TypeVar("K", bound=Hashable)


def backoff_delay(
    attempt: int, rng: random.Random, base: float = BACKOFF_BASE, cap: float = BACKOFF_CAP
) -> float:
    """Seconds to wait before try ``attempt + 1`` (``attempt`` ≥ 1 failures so far).

    Exponential, capped, with "equal jitter" (half fixed, half random): many controllers or
    informers failing together at an API server restart spread their retries instead of
    arriving in step.
    """
    ceiling = min(cap, base * 2 ** max(0, attempt - 1))
    return ceiling / 2 + rng.uniform(0, ceiling / 2)


def status_of(error: BaseException) -> int | None:
    """The HTTP status of an API failure (0: no answer), None for anything that is not one."""
    if isinstance(error, ApiException):
        return int(error.status or 0)
    if isinstance(error, urllib3.exceptions.HTTPError | OSError):
        return 0
    return None


def is_retryable(error: BaseException) -> bool:
    """True for failures that pass: conflicts, throttling, server errors, no connection."""
    return status_of(error) in RETRYABLE_STATUS


def describe(error: BaseException) -> str:
    """One line for a log or an Event: the status and the API server's message, not a traceback."""
    if isinstance(error, ApiException):
        message = error.reason or ""
        body = error.body.decode(errors="replace") if isinstance(error.body, bytes) else error.body
        if body:
            try:
                message = json.loads(body).get("message", message)
            except (ValueError, AttributeError):
                message = body[:200]
        return f"HTTP {error.status}: {message}" if error.status else f"no answer: {message}"
    return f"{type(error).__name__}: {error}"


class KeyedWork(Generic[K]):
    """Coalescing per-key work with retries; see the module docstring. Runs on the event loop."""

    def __init__(
        self,
        name: str,
        work: Callable[[K], Awaitable[None]],
        *,
        rng: random.Random | None = None,
        base: float = BACKOFF_BASE,
        cap: float = BACKOFF_CAP,
    ) -> None:
        self.name = name
        self._work = work
        self._rng = rng or random.Random()
        self._base = base
        self._cap = cap
        self._tasks: dict[K, asyncio.Task[None]] = {}
        self._again: set[K] = set()
        self._closed = False
        self.failures = 0  # runs that raised, for metrics and tests

    def add(self, key: K) -> None:
        """Run the work of ``key`` soon (once more after the current run, if one is under way)."""
        if self._closed:
            return
        self._again.add(key)
        if key not in self._tasks:
            self._tasks[key] = asyncio.get_running_loop().create_task(
                self._run(key), name=f"{self.name} {key}"
            )

    def forget(self, key: K) -> None:
        """Stop working on ``key``: a pending retry is cancelled (its object went away)."""
        self._again.discard(key)
        task = self._tasks.pop(key, None)
        if task is not None:
            task.cancel()

    def cancel_all(self) -> None:
        """Drop every pending run and retry now (a replica that stopped leading); stays open, so
        ``add`` works again afterwards. A call already sent to the API server is not recalled."""
        self._again.clear()
        tasks = list(self._tasks.values())
        self._tasks.clear()
        for task in tasks:
            task.cancel()

    def busy(self) -> bool:
        return bool(self._tasks)

    async def close(self) -> None:
        self._closed = True
        tasks = list(self._tasks.values())
        self._tasks.clear()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _run(self, key: K) -> None:
        attempt = 0
        try:
            while key in self._again:
                self._again.discard(key)
                try:
                    await self._work(key)
                    attempt = 0
                except asyncio.CancelledError:
                    raise
                except Exception as error:
                    attempt += 1
                    self.failures += 1
                    delay = backoff_delay(attempt, self._rng, self._base, self._cap)
                    log.warning(
                        "%s %s: try %d failed (%s); retrying in %.1f s",
                        self.name, key, attempt, describe(error), delay,
                        exc_info=status_of(error) is None,  # not an API failure: a bug, show where
                    )  # fmt: skip
                    self._again.add(key)
                    await asyncio.sleep(delay)
        finally:
            if self._tasks.get(key) is asyncio.current_task():
                del self._tasks[key]
