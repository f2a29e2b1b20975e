"""Spans of a real `kpa up` stack reach an OTLP/HTTP endpoint as one trace across its processes.

The stack file's ``tracing:`` section turns tracing on for every process the stack starts: the
embedded activator (this process) and each pod's queue-proxy (a child process), which get it as
``TRACING_CONFIG_*``/``OTEL_*`` variables. The collector is this test's own HTTP server on loopback,
decoding what arrives as OpenTelemetry's ``ExportTraceServiceRequest`` protobuf, as a collector would.
The revision starts at zero, so the request is held by the activator while its pod starts.
"""

from __future__ import annotations

from dataclasses import dataclass

import httpx
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from stack_fixtures import run, running_stack, stack_text
from waiting import wait_until

from httpengine.request import Request
from httpengine.response import Response
from httpengine.server import HttpServer

pytestmark = pytest.mark.timeout(60)

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_SPAN = "00f067aa0ba902b7"


@dataclass(frozen=True)
class Received:
    service: str
    name: str
    trace_id: str
    span_id: str
    parent: str


class OtlpSink:
    """POST /v1/traces with an OTLP protobuf body: each span is kept with its process's service.name."""

    def __init__(self) -> None:
        self.spans: list[Received] = []
        self.content_types: set[bytes] = set()
        self.server = HttpServer(self.handle, name="otlp-sink")
        self.url = ""

    async def start(self) -> None:
        _, port = await self.server.start("127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{port}/v1/traces"

    async def handle(self, request: Request, response: Response) -> None:
        if request.method != b"POST" or request.path != "/v1/traces":
            response.send(404, b"")
            return
        self.content_types.add(request.header(b"content-type") or b"")
        export = ExportTraceServiceRequest.FromString(await request.body.read_all(16 << 20))
        for resource_spans in export.resource_spans:
            attributes = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
            for scope in resource_spans.scope_spans:
                for span in scope.spans:
                    self.spans.append(Received(
                        attributes.get("service.name", ""), span.name, span.trace_id.hex(),
                        span.span_id.hex(), span.parent_span_id.hex(),
                    ))  # fmt: skip
        response.send(200, b"", content_type=b"application/x-protobuf")


def test_a_cold_request_through_kpa_up_reaches_the_otlp_endpoint_as_one_trace(tmp_path):
    async def body():
        sink = OtlpSink()
        await sink.start()
        text = stack_text(
            delay=0.01, cc=1, annotations={"initial-scale": "0"}, config={"allow-zero-initial-scale": "true"}
        )
        text += f"tracing:\n  backend: otlp\n  otlp-endpoint: {sink.url}\n  sample-rate: '1'\n"
        try:
            async with running_stack(text, tmp_path) as stack, httpx.AsyncClient(timeout=30) as client:
                headers = {"host": "hello", "traceparent": f"00-{TRACE_ID}-{CLIENT_SPAN}-01"}
                response = await client.get(stack.entry_url + "/", headers=headers)
                assert response.status_code == 200
                assert response.headers["x-kpa-cold-start"] == "true"

                def names() -> set[tuple[str, str]]:
                    return {(s.service, s.name) for s in sink.spans if s.trace_id == TRACE_ID}

                # The queue-proxy sends its batch within its schedule delay (5 s); the activator's at stop.
                await wait_until(lambda: ("queue-proxy", "queue_proxy.proxy") in names(), timeout=15)
            await wait_until(lambda: ("activator", "activator.request") in names(), timeout=5)
        finally:
            await sink.server.shutdown(0.0)
        spans = {s.name: s for s in sink.spans if s.trace_id == TRACE_ID}
        assert set(spans) == {
            "activator.request", "activator.wait_for_capacity", "queue_proxy.request", "queue_proxy.proxy",
        }, sink.spans  # fmt: skip
        assert spans["activator.request"].parent == CLIENT_SPAN
        assert spans["activator.wait_for_capacity"].parent == spans["activator.request"].span_id
        assert spans["queue_proxy.request"].parent == spans["activator.request"].span_id
        assert spans["queue_proxy.proxy"].parent == spans["queue_proxy.request"].span_id
        assert sink.content_types == {b"application/x-protobuf"}

    run(body())
