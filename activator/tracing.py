"""The activator's spans: the request, and its wait for capacity while its revision had none.

``TracedRequestPath`` is the request path with spans; the activator uses it instead of the plain one
only when given a tracer, so with tracing off none of this runs. Per request, as a tree::

    activator.request                SERVER  the client's traceparent is its parent; the one sent to
    │                                        the queue-proxy names this span
    └── activator.wait_for_capacity          while the request was held (only when it was)

Attributes: ``kpa.revision`` (namespace/name) on both; ``kpa.cold_start`` — on the wait, whether its
revision had no capacity when the wait began; on the request, whether it was held by a revision at
zero (what the ``X-Kpa-Cold-Start`` response header says) — and the status the client got.
"""

from __future__ import annotations

from typing import Any

from opentelemetry.context import attach, detach
from opentelemetry.trace import (
    SpanKind,
    Status,
    StatusCode,
    Tracer,
    get_current_span,
    set_span_in_context,
)

from activator.forwarding import Outcome, RequestPath
from activator.revisions import RevisionTable, RoutedRevision, Ticket
from activator.throttler import Expired, Grant
from httpengine.request import Request
from httpengine.response import Response
from tracing.propagation import carry, incoming


class TracedRequestPath(RequestPath):
    def __init__(self, table: RevisionTable, *, tracer: Tracer, **kwargs: Any) -> None:
        super().__init__(table, **kwargs)
        self._tracer = tracer

    async def _serve_in_task(
        self,
        revision: RoutedRevision,
        ticket: Ticket,
        cold: bool,
        outcome: Outcome,
        request: Request,
        response: Response,
        *rest: Any,  # the rest of RequestPath._serve_in_task's arguments, passed on as they are
    ) -> None:
        span = self._tracer.start_span(
            "activator.request",
            context=incoming(request),
            kind=SpanKind.SERVER,
            attributes={
                "http.request.method": request.method.decode("latin-1"),
                "url.path": request.path,
                "kpa.revision": str(revision.key),
                "kpa.cold_start": cold,
            },
        )
        carry(request, span)  # every try at a pod goes out under this span
        token = attach(set_span_in_context(span))
        try:
            await super()._serve_in_task(revision, ticket, cold, outcome, request, response, *rest)
        finally:
            detach(token)
            status = response.status
            if status:
                span.set_attribute("http.response.status_code", status)
            if status >= 500 or not status:
                span.set_status(Status(StatusCode.ERROR, f"status {status}" if status else "no response"))
            span.end()

    async def _wait(self, revision: RoutedRevision, ticket: Ticket) -> Grant[Ticket] | Expired[Ticket]:
        cold = revision.throttler.capacity == 0
        if cold:
            get_current_span().set_attribute("kpa.cold_start", True)
        span = self._tracer.start_span(
            "activator.wait_for_capacity",
            attributes={"kpa.revision": str(revision.key), "kpa.cold_start": cold},
        )
        try:
            result = await super()._wait(revision, ticket)
        except BaseException:
            span.set_status(Status(StatusCode.ERROR, "the client left while held"))
            span.end()
            raise
        if isinstance(result, Expired):
            span.set_status(Status(StatusCode.ERROR, "no capacity before the deadline"))
        span.end()
        return result
