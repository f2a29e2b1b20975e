"""`kpa up` with a revision's ``logger: {url, mode}``: the events of requests sent through the entry
arrive at a real sink in order with paired ids, from the queue-proxy processes the stack started; and
a hanging sink neither slows the requests nor holds up the stack's stop."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import httpx
from stack_fixtures import run, running_stack, stack_text
from waiting import wait_until

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "component"))
from payload_sink import Received, RecordingSink, hanging_sink

from queueproxy.payload_events import REQUEST_EVENT, RESPONSE_EVENT


def logged_stack(url: str) -> str:
    text = stack_text(delay=0.0, cc=0, annotations={"min-scale": "1"})
    return text + f"    logger:\n      url: {url}\n      mode: all\n"


async def post(client: httpx.AsyncClient, body: bytes, event_id: str = "") -> httpx.Response:
    headers = {"host": "hello", "content-type": "application/json"} | (
        {"ce-id": event_id} if event_id else {}
    )
    return await client.post("/predict", content=body, headers=headers)


async def warm_up(client: httpx.AsyncClient) -> None:
    """Until five requests in a row are answered 200: the stack has a ready pod and its connections,
    and the warm-up's events are out of the way of the measured ones."""
    streak = [0]

    async def answered() -> bool:
        streak[0] = streak[0] + 1 if (await post(client, b"{}", "warm-up")).status_code == 200 else 0
        return streak[0] >= 5

    await wait_until(answered, timeout=20.0, what="five 200s in a row")


def test_a_stack_files_logger_sends_each_request_and_response_to_the_sink(tmp_path):
    async def body() -> None:
        async with RecordingSink() as sink, running_stack(logged_stack(sink.url), tmp_path) as stack:
            async with httpx.AsyncClient(base_url=stack.entry_url, timeout=30.0) as client:
                await warm_up(client)
                for i in range(3):
                    answer = await post(client, b'{"instances": [%d]}' % i, f"measured-{i}")
                    assert answer.status_code == 200 and answer.content.startswith(b"hello from ")

            def measured() -> list[Received]:
                return [e for e in sink.events if e.id.startswith("measured-")]

            await wait_until(
                lambda: len(measured()) >= 6, timeout=10.0, what=lambda: f"6 events: {sink.events}"
            )
            events = measured()
            assert [e.type for e in events] == [REQUEST_EVENT, RESPONSE_EVENT] * 3
            assert [e.body for e in events[0::2]] == [b'{"instances": [%d]}' % i for i in range(3)]
            assert all(e.body.startswith(b"hello from ") for e in events[1::2])
            assert all(events[i].id == events[i + 1].id for i in range(0, 6, 2))
            assert [e.id for e in events[0::2]] == ["measured-0", "measured-1", "measured-2"]
            assert {e.headers["ce-inferenceservicename"] for e in events} == {"hello"}
            assert {e.headers["ce-namespace"] for e in events} == {"default"}

    run(body())


def test_a_hanging_sink_slows_no_request_and_does_not_hold_up_the_stop(tmp_path):
    async def body() -> None:
        async with hanging_sink() as (url, accepted):
            async with running_stack(logged_stack(url), tmp_path) as stack:
                async with httpx.AsyncClient(base_url=stack.entry_url, timeout=30.0) as client:
                    await warm_up(client)
                    started = time.monotonic()
                    for i in range(20):
                        answer = await post(client, b"%d" % i)
                        assert answer.status_code == 200, (answer.headers, answer.text)
                    assert time.monotonic() - started < 5.0  # the sink's 2 s timeout is never waited for
                await wait_until(lambda: accepted, timeout=10.0, what="the sender reaching the sink")
                stopping = time.monotonic()
            stopped_in = time.monotonic() - stopping
        assert stopped_in < 5.0, stopped_in  # the sender gets FLUSH_GRACE (1 s), the sink no more

    run(body())
