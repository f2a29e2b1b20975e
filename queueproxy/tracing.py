"""The queue-proxy's spans: the request, its wait in the breaker queue, and the call to the user container.

``traced_requests(tracer)`` gives the handler a subclass of its per-request object to use instead of
the plain one, so with tracing off not a line of this runs (the handler only reads which class to
make). Per request, as a tree::

    queue_proxy.request         SERVER  the client's traceparent is its parent
    ├── queue_proxy.queue_wait          waiting for a breaker slot (only when the request queued)
    └── queue_proxy.proxy       CLIENT  the user container's call; its traceparent names this span

The spans end when the client's response does, with the status it got (5xx marks them as errors).
"""

from __future__ import annotations

from opentelemetry.trace import Span, SpanKind, Status, StatusCode, Tracer, set_span_in_context

from httpengine.request import Request
from httpengine.response import Response
from queueproxy.handler import QueueProxyHandler, _Proxied
from tracing.propagation import carry, incoming


def traced_requests(tracer: Tracer, revision: str, pod: str) -> type[_Proxied]:
    """The per-request class of a traced queue-proxy (``QueueProxyHandler.request_class``)."""
    labels = {"kpa.revision": revision, "kpa.pod": pod}
    return type("TracedRequest", (_TracedProxied,), {"__slots__": (), "tracer": tracer, "labels": labels})


class _TracedProxied(_Proxied):
    __slots__ = ("proxy_span", "server_span")
    tracer: Tracer
    labels: dict[str, str]

    def __init__(
        self, handler: QueueProxyHandler, request: Request, response: Response, started: float, proxied: bool
    ) -> None:
        super().__init__(handler, request, response, started, proxied)
        self.server_span: Span = self.tracer.start_span(
            "queue_proxy.request",
            context=incoming(request),
            kind=SpanKind.SERVER,
            attributes={
                "http.request.method": request.method.decode("latin-1"),
                "url.path": request.path,
                **self.labels,
                "kpa.proxied_by_activator": proxied,
            },
        )
        self.proxy_span: Span | None = None

    def _start_proxy(self) -> None:
        if self.proxy_span is None:
            self.proxy_span = span = self.tracer.start_span(
                "queue_proxy.proxy", context=set_span_in_context(self.server_span), kind=SpanKind.CLIENT
            )
            carry(self.request, span)

    def dispatch(self) -> bool:
        self._start_proxy()
        return super().dispatch()

    async def run(self, queued: bool) -> None:
        if not queued:
            self._start_proxy()
        await super().run(queued)

    async def _admission(self) -> None:
        wait = self.tracer.start_span("queue_proxy.queue_wait", context=set_span_in_context(self.server_span))
        try:
            await super()._admission()
        finally:
            wait.end()
        self._start_proxy()

    def _finish(self) -> None:
        if self.finished:
            return
        super()._finish()
        status = self.response.status
        for span in (self.proxy_span, self.server_span):
            if span is not None:
                if status:
                    span.set_attribute("http.response.status_code", status)
                if status >= 500 or not status:
                    span.set_status(Status(StatusCode.ERROR, f"status {status}" if status else "no response"))
                span.end()
