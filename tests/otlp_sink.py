"""An OTLP/HTTP traces endpoint on loopback, as a collector would run one: what the processes under test
export arrives here, decoded from OpenTelemetry's ``ExportTraceServiceRequest`` protobuf. Importable
from every kind of test (``pythonpath`` in pyproject.toml)."""

from __future__ import annotations

from dataclasses import dataclass, field

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from httpengine.request import Request
from httpengine.response import Response
from httpengine.server import HttpServer


@dataclass(frozen=True)
class Received:
    service: str
    name: str
    trace_id: str
    span_id: str
    parent: str
    attributes: dict = field(default_factory=dict, compare=False)


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
                        {a.key: _value(a.value) for a in span.attributes},
                    ))  # fmt: skip
        response.send(200, b"", content_type=b"application/x-protobuf")


def _value(value) -> object:
    kind = value.WhichOneof("value")
    return getattr(value, kind) if kind else None
