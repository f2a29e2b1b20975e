"""simulation.recycled against the simpy installed: each test names the simpy internal it relies on.

If one fails after a simpy upgrade, simulation/recycled.py needs to follow simpy's new internals
(or go back to ``env.timeout``, about 60 % more wall time per event at the time of writing).
"""

from __future__ import annotations

import itertools

import simpy
from simpy.events import NORMAL

from simulation.recycled import Recycled, Recycler


def test_simpy_is_the_major_version_the_recycler_was_written_for():
    major = simpy.__version__.split(".")[0]
    assert major == "4", (
        f"simpy {simpy.__version__}: simulation/recycled.py was written against simpy 4's Environment "
        "internals; check what these tests name, then widen the simpy<5 pin in pyproject.toml"
    )


def test_the_environment_keeps_the_queue_counter_and_clock_the_recycler_uses():
    env = simpy.Environment(initial_time=3.0)
    assert isinstance(getattr(env, "_queue", None), list), (
        "simpy.Environment._queue is no longer a list (heap)"
    )
    assert isinstance(getattr(env, "_eid", None), itertools.count), (
        "simpy.Environment._eid is no longer a count"
    )
    assert getattr(env, "_now", None) == env.now == 3.0, "simpy.Environment._now no longer holds env.now"


def test_fire_pushes_the_heap_entry_environment_schedule_pushes():
    by_schedule, by_fire = simpy.Environment(initial_time=1.0), simpy.Environment(initial_time=1.0)
    event = simpy.Event(by_schedule)
    by_schedule.schedule(event, NORMAL, 2.5)
    Recycler(by_fire).fire(2.5, [])
    (expected,), (pushed,) = by_schedule._queue, by_fire._queue
    assert pushed[:3] == expected[:3] == (3.5, NORMAL, 0), (
        f"simpy.Environment.schedule now pushes {expected[:3]}...: Recycler.fire pushes "
        f"{pushed[:3]}... (time, priority, eid); make them the same"
    )
    assert expected[3] is event and isinstance(pushed[3], Recycled), "the event is no longer the 4th field"


def test_a_fired_event_fires_again_with_its_new_time_and_payload():
    env = simpy.Environment()
    timers = Recycler(env)
    seen: list[tuple[str, float, float, int]] = []

    def on_fire(event: Recycled) -> None:
        timers.release(event)
        seen.append((event.payload, event.at, env.now, id(event)))
        if event.payload == "first":
            timers.fire(0.5, callbacks, "second")

    callbacks = [on_fire]
    timers.fire(1.0, callbacks, "first")
    env.run()
    (first, at1, now1, id1), (second, at2, now2, id2) = seen
    assert (first, at1, second, at2) == ("first", 1.0, "second", 1.5)
    assert (now1, now2) == (at1, at2), "simpy's Environment.step no longer sets env.now to the event's time"
    assert id1 == id2, "the fired event was not reused"


def test_simpy_clears_a_fired_events_callbacks_and_accepts_it_as_succeeded():
    env = simpy.Environment()
    timers = Recycler(env)
    fired: list[Recycled] = []
    timers.fire(1.0, [fired.append])
    env.run()  # raises if simpy reads the event as failed (_ok)
    (event,) = fired
    assert event.callbacks is None, (
        "simpy's Environment.step no longer sets a fired event's callbacks to None: a recycled event may "
        "still be read as pending; simulation/recycled.py must follow"
    )
    assert event.ok and event.processed, "simpy no longer reads _ok/callbacks for Event.ok/processed"


def test_recycled_events_and_timeouts_at_one_time_fire_in_the_order_they_were_scheduled():
    env = simpy.Environment()
    timers = Recycler(env)
    order: list[str] = []
    env.timeout(1.0).callbacks.append(lambda _: order.append("timeout before"))
    timers.fire(1.0, [lambda _: order.append("recycled")])
    env.timeout(1.0).callbacks.append(lambda _: order.append("timeout after"))
    env.run()
    assert order == ["timeout before", "recycled", "timeout after"], (
        "events at the same time no longer fire in scheduling order (simpy's eid tie-break): "
        "simulated runs would no longer repeat"
    )


def test_run_until_stops_between_recycled_events_and_resumes():
    env = simpy.Environment()
    timers = Recycler(env)
    times: list[float] = []

    def tick(event: Recycled) -> None:
        timers.release(event)
        times.append(event.at)
        if event.at < 5:
            timers.fire(1.0, callbacks)

    callbacks = [tick]
    timers.fire(1.0, callbacks)
    env.run(until=2.5)
    assert times == [1.0, 2.0]
    env.run(until=10)
    assert times == [1.0, 2.0, 3.0, 4.0, 5.0]


def test_a_streams_own_event_fires_again_outside_the_pool():
    env = simpy.Environment()
    timers = Recycler(env)
    event = Recycled(env)
    times: list[float] = []

    def arrive(fired: Recycled) -> None:
        assert fired is event and env.now == fired.at
        times.append(fired.at)
        if len(times) < 3:
            timers.again(event, 0.25, callbacks)

    callbacks = [arrive]
    timers.again(event, 1.0, callbacks)
    env.run()
    assert times == [1.0, 1.25, 1.5]
