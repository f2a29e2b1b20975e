"""W3C trace context on our HTTP engine's requests: read the incoming one, replace the outgoing one.

``traceparent``/``tracestate`` are read with OpenTelemetry's W3C propagator, which ignores a malformed
``traceparent`` (the request then starts a new trace; it never fails because of the header).
``carry`` rewrites a request's trace headers in place to name the span it is forwarded under, so the
proxy's ordinary header copying sends them on: nothing else in the forwarding path knows of tracing.
"""

from __future__ import annotations

from opentelemetry.context import Context
from opentelemetry.trace import Span, set_span_in_context
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from httpengine.request import Request

TRACEPARENT = b"traceparent"
TRACESTATE = b"tracestate"
_TRACE_HEADERS = (TRACEPARENT, TRACESTATE)
_PROPAGATOR = TraceContextTextMapPropagator()


def incoming(request: Request) -> Context:
    """The context the client sent (empty when it sent none, or a malformed one)."""
    index = request.index
    traceparent = index.get(TRACEPARENT)
    if traceparent is None:
        return Context()
    carrier = {"traceparent": traceparent.decode("latin-1")}
    tracestate = index.get(TRACESTATE)
    if tracestate is not None:
        carrier["tracestate"] = tracestate.decode("latin-1")
    return _PROPAGATOR.extract(carrier)


def carry(request: Request, span: Span) -> None:
    """Make ``request``'s trace headers name ``span`` (its tracestate carried on), replacing the client's."""
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier, set_span_in_context(span))
    headers = request.headers
    index = request.index
    headers[:] = [header for header in headers if header[0] not in _TRACE_HEADERS]
    for name in _TRACE_HEADERS:
        index.pop(name, None)
        value = carrier.get(name.decode())
        if value is not None:
            headers.append((name, value.encode("latin-1")))
            index[name] = value.encode("latin-1")
