"""Waiting for what another task, thread or process does: poll a condition under a deadline.

A fixed sleep before an assertion races on a loaded machine (the other side may not have got there
yet) and wastes time on an idle one. Polling under a generous deadline makes a slow machine slow a
test, never wrong. Unit, component and end-to-end tests all wait with these two (``pythonpath`` in
pyproject.toml makes this folder importable), so a timeout reads the same everywhere: what was
awaited and for how long.

The seconds returned are an upper bound on when the condition came true (the poll may see it late),
so use them for "it happened within N s", never for "it took at least N s": measure a lower bound
from the cause (the request sent, the stack started) instead.

A sleep that *is* the behaviour under test ("idle 2 s, then nothing may have happened") stays a
plain sleep, with a comment saying so.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable

Description = str | Callable[[], str] | None  # a callable is asked at the timeout: the state then


async def wait_until(
    predicate: Callable[[], bool | Awaitable[bool]],
    timeout: float = 5.0,
    what: Description = None,
    interval: float = 0.01,
) -> float:
    """Poll ``predicate`` (plain or async) until it is true; the seconds it took.

    Fails with an AssertionError naming ``what`` (by default the predicate's source line; a callable
    is asked then, so it can show the state that never came right) once ``timeout`` seconds pass; an
    exception the predicate raises propagates at once.
    """
    start = time.monotonic()
    while True:
        outcome = predicate()
        if inspect.isawaitable(outcome):
            outcome = await outcome
        if outcome:
            return time.monotonic() - start
        if time.monotonic() - start > timeout:
            raise AssertionError(_timed_out(predicate, timeout, what))
        await asyncio.sleep(interval)


def wait_until_blocking(
    predicate: Callable[[], bool],
    timeout: float = 5.0,
    what: Description = None,
    interval: float = 0.01,
) -> float:
    """The thread-blocking twin of :func:`wait_until`, for tests that talk through blocking sockets,
    child processes or threads and have no event loop of their own."""
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout:
            raise AssertionError(_timed_out(predicate, timeout, what))
        time.sleep(interval)
    return time.monotonic() - start


def _timed_out(predicate: Callable[[], object], timeout: float, what: Description) -> str:
    if callable(what):
        what = what()
    elif what is None:
        try:
            what = inspect.getsource(predicate).strip()
        except (OSError, TypeError):
            what = repr(predicate)
    return f"timed out after {timeout:g} s waiting for {what}"
