"""The tests' shared wait (tests/waiting.py): it returns once the condition holds and fails naming it."""

from __future__ import annotations

import asyncio
import threading

import pytest
from waiting import wait_until, wait_until_blocking


def test_blocking_wait_returns_once_another_thread_made_the_condition_true():
    done = threading.Event()
    threading.Timer(0.05, done.set).start()
    took = wait_until_blocking(done.is_set, timeout=5.0)
    assert done.is_set() and took < 5.0


def test_blocking_wait_fails_naming_what_it_waited_for():
    with pytest.raises(AssertionError, match=r"timed out after 0.05 s waiting for the door to open"):
        wait_until_blocking(lambda: False, timeout=0.05, what="the door to open")


def test_a_description_given_as_a_callable_shows_the_state_at_the_timeout():
    state = {"pods": 0}

    def later() -> bool:
        state["pods"] += 1
        return False

    with pytest.raises(AssertionError, match=r"waiting for 3 pods \(last seen: [1-9]\d*\)"):
        wait_until_blocking(later, timeout=0.05, what=lambda: f"3 pods (last seen: {state['pods']})")


def test_a_wait_without_a_description_names_the_predicate_by_its_source():
    with pytest.raises(AssertionError, match=r"lambda: 1 > 2"):
        wait_until_blocking(lambda: 1 > 2, timeout=0.02)


def test_async_wait_returns_once_another_task_made_the_condition_true():
    async def body():
        state = {"ready": False}

        async def later():
            await asyncio.sleep(0.05)
            state["ready"] = True

        task = asyncio.create_task(later())
        await wait_until(lambda: state["ready"], timeout=5.0)
        await task

    asyncio.run(body())


def test_async_wait_awaits_an_async_predicate():
    calls = []

    async def third_time_lucky() -> bool:
        calls.append(1)
        return len(calls) >= 3

    asyncio.run(wait_until(third_time_lucky, timeout=5.0, interval=0.001))
    assert len(calls) == 3


def test_async_wait_fails_naming_what_it_waited_for():
    with pytest.raises(AssertionError, match=r"timed out after 0.05 s waiting for a pod"):
        asyncio.run(wait_until(lambda: False, timeout=0.05, what="a pod"))


def test_an_error_in_the_predicate_fails_the_wait_at_once_instead_of_being_retried():
    def broken() -> bool:
        raise KeyError("revision")

    with pytest.raises(KeyError):
        wait_until_blocking(broken, timeout=60.0)
