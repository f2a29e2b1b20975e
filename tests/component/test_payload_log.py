"""KServe's payload logger in a real queue-proxy in front of a real user container: the events a real
sink receives (order, paired ids, types, headers, bodies) per mode, and what a hanging or dead sink
does to the requests being served (nothing), to the counters, to the buffer and to shutdown."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest
from payload_sink import RecordingSink, dead_sink_url, hanging_sink
from queueproxy_fixtures import client_for, run, stack
from tables import named
from waiting import wait_until

from queueproxy.payload_events import REQUEST_EVENT, RESPONSE_EVENT, LoggerSettings, LoggerSpec

REQUEST_BODY = json.dumps({"instances": [[6.8, 2.8, 4.8, 1.4], [6.0, 3.4, 4.5, 1.6]]}).encode()


def logger(url: str, mode: str = "all", **bounds: Any) -> LoggerSettings:
    return LoggerSettings(
        LoggerSpec(url, mode),
        "http://localhost:8012/",
        "sklearn-iris",
        "kserve-test",
        "predictor",
        "",
        **bounds,
    )


async def wait_events(sink: RecordingSink, count: int) -> None:
    await wait_until(lambda: len(sink.events) >= count, what=lambda: f"{count} events; got {sink.events}")


def test_mode_all_sends_each_request_then_its_response_with_one_id_in_arrival_order():
    async def body() -> None:
        async with RecordingSink() as sink, stack(logger=logger(sink.url)) as (_, _, ports, client):
            answers = []
            for i in range(5):
                payload = REQUEST_BODY + b" " * i  # five different bodies
                answer = await client.post(
                    "/echo", content=payload, headers={"content-type": "application/json"}
                )
                assert answer.status_code == 200 and answer.content == payload
                answers.append(payload)
            tagged = await client.post("/echo", content=b"{}", headers={"ce-id": "my-id-1"})
            assert tagged.content == b"{}"
            await wait_events(sink, 12)
            events = sink.events
            assert [e.type for e in events] == [REQUEST_EVENT, RESPONSE_EVENT] * 6
            ids = [e.id for e in events]
            assert all(ids[i] == ids[i + 1] for i in range(0, 12, 2)), ids  # paired
            assert len(set(ids)) == 6 and ids[-1] == "my-id-1"  # distinct; a client's Ce-Id is kept
            for i, payload in enumerate(answers):
                request, response = events[2 * i], events[2 * i + 1]
                assert request.body == payload and response.body == payload
                assert request.headers["content-type"] == "application/json"
                assert response.headers["content-type"] == "application/octet-stream"  # what /echo says
                assert response.headers["ce-statuscode"] == "200"
            first = events[0].headers
            assert events[0].target == "/events"
            assert first["ce-specversion"] == "1.0"
            assert first["ce-source"] == "http://localhost:8012/"
            assert first["ce-inferenceservicename"] == "sklearn-iris"
            assert first["ce-namespace"] == "kserve-test"
            assert first["ce-component"] == "predictor"
            assert first["ce-time"].endswith("Z")
            assert "ce-endpoint" in first
            async with client_for(ports["metrics_port"]) as scraper:
                metrics = (await scraper.get("/metrics")).text
            assert f'kpa_payload_log_events_total{{type="{REQUEST_EVENT}"}} 6.0' in metrics
            assert f'kpa_payload_log_events_total{{type="{RESPONSE_EVENT}"}} 6.0' in metrics
            assert 'kpa_payload_log_dropped_total{reason="buffer_full"} 0.0' in metrics
            assert "kpa_payload_log_failures_total 0.0" in metrics

    run(body)


MODES = [
    ("request", [REQUEST_EVENT] * 3),
    ("response", [RESPONSE_EVENT] * 3),
]


@pytest.mark.parametrize(("mode", "types"), named(MODES))
def test_mode_request_or_response_sends_only_that_kind(mode, types):
    async def body() -> None:
        async with RecordingSink() as sink, stack(logger=logger(sink.url, mode)) as (_, _, _, client):
            for i in range(3):
                assert (await client.post("/echo", content=b"x%d" % i)).content == b"x%d" % i
            await wait_events(sink, 3)
            await asyncio.sleep(0.2)  # nothing more comes
            assert [e.type for e in sink.events] == types
            assert [e.body for e in sink.events] == [b"x0", b"x1", b"x2"]
            assert len({e.id for e in sink.events}) == 3

    run(body)


def test_streaming_answers_still_stream_and_a_streamed_request_body_is_logged_whole():
    async def body() -> None:
        async with RecordingSink() as sink, stack(logger=logger(sink.url)) as (_, _, _, client):
            started = time.monotonic()
            async with client.stream("GET", "/stream?n=3&gap=0.3") as answer:
                chunks = answer.aiter_raw()
                first = await chunks.__anext__()
                first_at = time.monotonic() - started
                rest = b"".join([chunk async for chunk in chunks])
            assert first == b"part0\n" and first_at < 0.25  # not held back for the copy
            assert first + rest == b"part0\npart1\npart2\n"

            async def slow_upload():
                for i in range(4):
                    yield b"chunk%d;" % i
                    await asyncio.sleep(0.05)

            answer = await client.post("/count", content=slow_upload())
            assert answer.content == b"28"
            # An app that answers without reading the body: the event still holds all of it.
            assert (await client.post("/", content=slow_upload())).content == b"ok"
            await wait_events(sink, 6)
            assert [(e.type, e.body) for e in sink.events] == [
                (REQUEST_EVENT, b""),
                (RESPONSE_EVENT, b"part0\npart1\npart2\n"),
                (REQUEST_EVENT, b"chunk0;chunk1;chunk2;chunk3;"),
                (RESPONSE_EVENT, b"28"),
                (REQUEST_EVENT, b"chunk0;chunk1;chunk2;chunk3;"),
                (RESPONSE_EVENT, b"ok"),
            ]

    run(body)


def test_a_payload_over_the_byte_bound_is_dropped_and_counted_and_the_client_gets_it_all():
    async def body() -> None:
        async with RecordingSink() as sink, stack(logger=logger(sink.url, max_payload_bytes=1000)) as stacked:
            _, proxy, _, client = stacked
            big = b"y" * 5000
            assert (await client.post("/echo", content=big)).content == big
            assert (await client.post("/echo", content=b"small")).content == b"small"
            await wait_events(sink, 2)
            await asyncio.sleep(0.1)
            assert [e.body for e in sink.events] == [b"small", b"small"]
            assert proxy.payload_log is not None
            assert proxy.payload_log.dropped["too_large"] == 2  # the request and its response

            async def slow_upload():
                for _ in range(5):
                    yield b"z" * 1000
                    await asyncio.sleep(0.02)

            # Arriving after its head and past the bound: not waited for further, it streams on whole.
            assert (await client.post("/count", content=slow_upload())).content == b"5000"
            await wait_events(sink, 3)
            assert proxy.payload_log.dropped["too_large"] == 3
            assert [(e.type, e.body) for e in sink.events[2:]] == [(RESPONSE_EVENT, b"5000")]

    run(body)


SINKS = [("hanging",), ("dead",)]


@pytest.mark.parametrize("kind", named(SINKS))
def test_a_hanging_or_dead_sink_never_delays_or_fails_a_request_and_shutdown_is_prompt(kind):
    async def body() -> None:
        async with hanging_sink() as (hanging_url, accepted):
            url = hanging_url if kind == "hanging" else dead_sink_url()
            settings = logger(url, buffer_events=8, timeout=0.5, retries=1)
            async with stack(logger=settings) as (_, proxy, _, client):
                payload_log = proxy.payload_log
                assert payload_log is not None
                slowest = 0.0
                for round_ in range(10):  # 200 requests, 400 events, against a buffer of 8
                    started = time.monotonic()
                    answers = await asyncio.gather(
                        *(client.post("/echo", content=b"r%d-%d" % (round_, i)) for i in range(20))
                    )
                    slowest = max(slowest, time.monotonic() - started)
                    assert [a.content for a in answers] == [b"r%d-%d" % (round_, i) for i in range(20)]
                assert slowest < 1.0, slowest  # a sink timeout is 0.5 s: no request waited for one
                assert payload_log.high_water <= 8
                assert payload_log.dropped["buffer_full"] > 300
                await wait_until(lambda: payload_log.failures >= 1, timeout=5.0)
                assert sum(payload_log.sent.values()) == 0
                if kind == "hanging":
                    assert accepted  # the sender did reach it
                closing = time.monotonic()
                await payload_log.close()
                assert time.monotonic() - closing < 1.5  # FLUSH_GRACE, not the sink's timeouts
                assert len(payload_log.buffer) == 0
                total = (
                    sum(payload_log.dropped.values()) + payload_log.failures + sum(payload_log.sent.values())
                )
                assert total == 400  # every event accounted for: sent, failed or dropped

    run(body, timeout=60.0)
