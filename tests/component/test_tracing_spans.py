"""Spans of one request through a real activator, queue-proxy and user container, read from memory.

What a user of a trace viewer relies on: one trace per request, rooted at the client's context when
it sent one; the tree activator.request → (wait_for_capacity, queue_proxy.request → (queue_wait,
proxy)); the user container's traceparent naming the proxy span, so its own spans hang below; and
timings that nest and show where the time went.
"""

from __future__ import annotations

import asyncio
import time

import pytest
from queueproxy_fixtures import client_for, run
from tracing_fixtures import KEY, ON, chain
from waiting import wait_until

from tracing.config import TracingConfig

pytestmark = pytest.mark.timeout(30)

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
CLIENT_SPAN = "b7ad6b7169203331"
TRACEPARENT = f"00-{TRACE_ID}-{CLIENT_SPAN}-01"
TRACESTATE = "vendor=opaque,other=1"
HOLD = 0.3  # seconds the test keeps the revision without a pod


def hex_span(span_id: int) -> str:
    return f"{span_id:016x}"


def within(child, parent) -> bool:
    return parent.start_time <= child.start_time and child.end_time <= parent.end_time


def test_a_held_request_is_one_trace_below_the_clients_span_with_nested_timings():
    async def body():
        async with chain(with_endpoints=False) as c:
            sent = time.monotonic()
            held = asyncio.ensure_future(
                c.client.get("/headers", headers={"traceparent": TRACEPARENT, "tracestate": TRACESTATE})
            )
            await wait_until(lambda: c.activator.revision_status(KEY)["held"] == 1)
            await asyncio.sleep(HOLD - (time.monotonic() - sent))  # the hold under test: no pod yet
            c.activator.set_endpoints(KEY, [c.qp_address])
            response = await held
            assert response.status_code == 200
            seen = response.json()
            spans = c.by_name()
        assert sorted(spans) == [
            "activator.request", "activator.wait_for_capacity", "queue_proxy.proxy", "queue_proxy.request",
        ]  # fmt: skip
        assert {span.context.trace_id for span in spans.values()} == {int(TRACE_ID, 16)}
        request, wait = spans["activator.request"], spans["activator.wait_for_capacity"]
        qp, proxy = spans["queue_proxy.request"], spans["queue_proxy.proxy"]
        assert hex_span(request.parent.span_id) == CLIENT_SPAN and request.parent.is_remote
        assert wait.parent.span_id == request.context.span_id
        assert qp.parent.span_id == request.context.span_id
        assert proxy.parent.span_id == qp.context.span_id
        # The app got the proxy span's context, and the client's tracestate, carried along every hop.
        assert seen["traceparent"] == f"00-{TRACE_ID}-{hex_span(proxy.context.span_id)}-01"
        assert seen["tracestate"] == TRACESTATE
        for child, parent in ((wait, request), (qp, request), (proxy, qp)):
            assert within(child, parent), f"{child.name} outside {parent.name}"
        assert wait.end_time <= qp.start_time  # forwarded only once capacity came
        assert (wait.end_time - wait.start_time) / 1e9 >= HOLD - 0.05  # the hold, less when it was seen
        assert wait.attributes["kpa.cold_start"] is True and request.attributes["kpa.cold_start"] is True
        assert wait.attributes["kpa.revision"] == str(KEY)
        assert request.attributes["http.response.status_code"] == 200
        assert qp.attributes["kpa.revision"] == "hello" and qp.attributes["kpa.pod"] == "hello-pod"
        assert str(proxy.kind) == "SpanKind.CLIENT" and str(qp.kind) == "SpanKind.SERVER"

    run(body, timeout=25)


@pytest.mark.parametrize(
    "traceparent",
    ["garbage", "00-00000000000000000000000000000000-b7ad6b7169203331-01", f"ff-{TRACE_ID}-{CLIENT_SPAN}-01"],
)
def test_an_invalid_traceparent_starts_a_new_trace_and_never_fails_the_request(traceparent):
    async def body():
        async with chain() as c:
            response = await c.client.get("/headers", headers={"traceparent": traceparent})
            assert response.status_code == 200
            spans = c.by_name()
        root = spans["activator.request"]
        assert root.parent is None, "a malformed traceparent must not become the parent"
        assert root.context.trace_id != int(TRACE_ID, 16)
        proxy = spans["queue_proxy.proxy"]
        version, trace_id, span_id, flags = response.json()["traceparent"].split("-")
        assert trace_id == f"{root.context.trace_id:032x}" and span_id == hex_span(proxy.context.span_id)
        assert version == "00"
        assert int(flags, 16) & 1, "sampled"  # (a new trace may also set W3C level 2's random flag)
        assert "activator.wait_for_capacity" not in spans  # a pod was there: nothing was held

    run(body)


def test_a_request_the_client_did_not_sample_is_not_recorded_but_its_context_goes_on():
    async def body():
        async with chain(TracingConfig("otlp", 1.0, ON.endpoint)) as c:
            unsampled = f"00-{TRACE_ID}-{CLIENT_SPAN}-00"
            response = await c.client.get("/headers", headers={"traceparent": unsampled})
            assert response.status_code == 200
            assert c.spans() == []
        sent_on = response.json()["traceparent"]
        version, trace_id, span_id, flags = sent_on.split("-")
        assert (version, trace_id, flags) == ("00", TRACE_ID, "00") and span_id != CLIENT_SPAN

    run(body)


def test_with_tracing_off_the_app_sees_exactly_the_clients_trace_headers_and_nothing_is_exported():
    async def body():
        async with chain(None) as c:
            headers = {"traceparent": TRACEPARENT, "tracestate": TRACESTATE}
            response = await c.client.get("/headers", headers=headers)
            assert response.status_code == 200
            assert c.proxy.handler is not None and c.proxy.handler.request_class.__name__ == "_Proxied"
            assert c.spans() == []
        seen = response.json()
        assert (seen["traceparent"], seen["tracestate"]) == (TRACEPARENT, TRACESTATE)

    run(body)


def test_a_request_queued_in_the_breaker_has_a_queue_wait_span_before_its_proxy_span():
    async def body():
        async with chain(cc=1) as c, client_for(int(c.qp_address.rpartition(":")[2])) as direct:
            # Straight to the queue-proxy: through the activator (cc=1 too) the second would wait there.
            first = asyncio.ensure_future(direct.get("/gate"))
            await wait_until(lambda: c.user.in_flight == 1)
            second = asyncio.ensure_future(direct.get("/headers"))
            await wait_until(lambda: c.proxy.handler is not None and c.proxy.handler.queued == 1)
            await asyncio.sleep(HOLD)  # the queue wait under test: the slot stays taken
            c.user.gate.set()
            assert (await first).status_code == 200 and (await second).status_code == 200
            spans = c.spans()
        waits = [s for s in spans if s.name == "queue_proxy.queue_wait"]
        assert len(waits) == 1, [s.name for s in spans]
        wait = waits[0]
        qp = next(s for s in spans if s.context.span_id == wait.parent.span_id)
        proxy = next(s for s in spans if s.name == "queue_proxy.proxy" and s.parent == qp.context)
        assert qp.name == "queue_proxy.request" and within(wait, qp) and within(proxy, qp)
        assert wait.end_time <= proxy.start_time
        assert (wait.end_time - wait.start_time) / 1e9 >= HOLD

    run(body)
