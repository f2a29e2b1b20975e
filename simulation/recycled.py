"""Recycled simpy events: the one place the simulator relies on simpy's internals (simpy 4).

Every simulated request needs two timed events, its arrival and its completion. simpy's public way —
``env.timeout(delay, value)`` and ``callbacks.append`` — builds a Timeout and a callback list per
event: 0.77 µs per event in a no-op model against 0.49 µs here. Here a fired event is scheduled again
instead: a :class:`Recycler` keeps the fired ones and :meth:`Recycler.fire` puts one back on the event
queue with a new time, payload and (shared, read-only) callback list; :meth:`Recycler.again` does
the same for a stream's own event.

What this relies on, each checked by tests/unit/test_simulation_recycled.py, which names what changed:

* ``Environment.step`` pops ``(time, priority, eid, event)`` off ``env._queue``, sets ``env._now`` to
  that time, sets ``event.callbacks`` to None, calls the callbacks it took, and then reads nothing of
  the event but ``_ok`` (False would raise);
* ``Environment.schedule`` pushes ``(env._now + delay, priority, next(env._eid), event)`` on
  ``env._queue``, which :meth:`Recycler.fire` does itself (one Python call less per event).

simpy 5 may change any of it: pyproject pins ``simpy<5``.
"""

from __future__ import annotations

from collections.abc import Callable
from heapq import heappush
from typing import Any

import simpy
from simpy.events import NORMAL

Callbacks = list[Callable[["Recycled"], None]]


class Recycled(simpy.Event):
    """A succeeded event that fires at ``at`` carrying ``payload``, and may be fired again after that.

    ``at`` is exactly what ``env.now`` is while its callbacks run, so they read it instead of the clock.
    """

    def __init__(self, env: simpy.Environment) -> None:
        super().__init__(env)
        self._ok = True  # succeeded: step() raises for a processed event whose _ok is False
        self._value = None  # triggered, as far as simpy's own checks go; the payload travels beside it
        self.payload: Any = None
        self.at = 0.0


class Recycler:
    """Timed callbacks on one environment, on a pool of :class:`Recycled` events.

    A callback hands its event back with :attr:`release` and reads its ``payload`` and ``at`` before
    calling anything that may fire: the next :meth:`fire` may reuse the event.
    """

    __slots__ = ("_eid", "_env", "_queue", "_spare", "release")

    def __init__(self, env: simpy.Environment) -> None:
        self._env = env
        self._queue = env._queue
        self._eid = env._eid
        self._spare: list[Recycled] = []
        self.release: Callable[[Recycled], None] = self._spare.append

    def fire(self, delay: float, callbacks: Callbacks, payload: Any = None) -> None:
        """Call each of ``callbacks`` with the event ``delay`` simulated seconds from now.

        ``callbacks`` is shared by every firing (simpy only reads it); ``payload`` rides on the event.
        """
        spare = self._spare
        event = spare.pop() if spare else Recycled(self._env)
        at = self._env._now + delay
        event.at = at
        event.payload = payload
        event.callbacks = callbacks
        heappush(self._queue, (at, NORMAL, next(self._eid), event))

    def again(self, event: Recycled, delay: float, callbacks: Callbacks) -> None:
        """Fire ``event`` (fired, or new) again ``delay`` from now, outside the pool.

        For a stream with one event pending at a time (the arrivals): a pool would cost a pop and a
        release per firing for nothing. Its ``payload`` stays as it was.
        """
        at = self._env._now + delay
        event.at = at
        event.callbacks = callbacks
        heappush(self._queue, (at, NORMAL, next(self._eid), event))
