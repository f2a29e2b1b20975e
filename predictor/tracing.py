"""The predictor's spans: an inference request, and where its time went — decode, queue, inference, encode.

``TracedPredictorApp`` is the HTTP app with spans; the server makes it instead of the plain app only
when given a tracer, so with tracing off none of this is imported or run. Per inference request, as a
tree (the client's ``traceparent`` — the queue-proxy's proxy span behind a revision — is its parent)::

    predictor.request        SERVER  the whole answer, status and model attributes
    ├── predictor.queue              the wait for a worker thread, or for the dynamic batcher's dispatch
    ├── predictor.decode             the body into the model's inputs
    ├── predictor.inference          the model call (with a batcher: the batch it ran in)
    └── predictor.encode             the outputs into the response

Without a batcher the wait for a worker comes before decode (the whole pipeline runs there); with one,
the request is decoded on the event loop and then waits for its batch. The request records timestamps
only (plain attribute writes, from whichever thread runs each stage); the child spans are made with
those times when the answer is known, on the event loop thread.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from typing import Any

from opentelemetry.trace import Span, SpanKind, Status, StatusCode, Tracer, set_span_in_context

from httpengine.limits import Limits
from httpengine.request import Request
from predictor.http_app import Decode, Encode, PredictorApp, Response
from predictor.manager import ModelManager
from predictor.serving import ModelVersion
from predictor.signature import BoundInputs
from tracing.propagation import incoming

# The request whose answer is being made: ``_timed`` may run after an await (a model loaded on demand),
# in the task that awaits the answer, so the request travels in that task's context.
_CURRENT: ContextVar[_Request | None] = ContextVar("predictor_request", default=None)


class _Request:
    """One inference request's span and the wall-clock times (ns) of its stages; 0: not reached."""

    __slots__ = ("batch_requests", "batch_size", "decode", "decoded", "dispatched", "encode", "encoded",
                 "failed", "key", "model", "prepared", "span")  # fmt: skip

    def __init__(self, span: Span) -> None:
        self.span = span
        self.model: ModelVersion | None = None
        self.key = 0  # id() of the inputs waiting in a batcher, while they wait
        self.prepared = self.decode = self.decoded = self.dispatched = self.encode = self.encoded = 0
        self.batch_size = self.batch_requests = 0
        self.failed = ""  # the stage that raised, if one did


class TracedPredictorApp(PredictorApp):
    def __init__(self, manager: ModelManager, limits: Limits | None = None, *, tracer: Tracer) -> None:
        super().__init__(manager, limits)
        self.tracer = tracer
        self._batching: dict[int, _Request] = {}  # id(inputs) -> its request, while waiting in a batcher

    def _inference(
        self, name: str, request: Request, serve: Callable[[], Response | Awaitable[Response]]
    ) -> Response | Awaitable[Response]:
        span = self.tracer.start_span(
            "predictor.request",
            context=incoming(request),
            kind=SpanKind.SERVER,
            attributes={
                "http.request.method": request.method.decode("latin-1"),
                "url.path": request.path,
                "kpa.model.name": name,
            },
        )
        traced = _Request(span)
        token = _CURRENT.set(traced)
        try:
            outcome = super()._inference(name, request, serve)  # _timed now, or inside ``outcome``
        finally:
            _CURRENT.reset(token)
        if isinstance(outcome, tuple):
            self._end(traced, outcome[0])
            return outcome
        return self._ended_later(traced, outcome)

    async def _ended_later(self, traced: _Request, outcome: Awaitable[Response]) -> Response:
        status = 0
        token = _CURRENT.set(traced)  # this task's context: the app awaits each answer in a task of its own
        try:
            answer = await outcome  # counted: a failure comes back as its error answer
            status = answer[0]
            return answer
        finally:
            _CURRENT.reset(token)
            self._end(traced, status)

    def _timed(self, model: ModelVersion, decode: Decode, encode: Encode) -> tuple[Decode, Encode]:
        decode, encode = super()._timed(model, decode, encode)
        traced = _CURRENT.get()
        assert traced is not None, "_timed runs for a request _inference began"
        traced.model = model
        traced.prepared = time.time_ns()
        batcher = model.batcher
        if batcher is not None and batcher.on_dispatch is None:
            batcher.on_dispatch = self._dispatched

        def traced_decode() -> tuple[BoundInputs, Any]:
            traced.decode = time.time_ns()
            traced.failed = "decode"
            inputs, context = decode()
            traced.decoded = time.time_ns()
            traced.failed = "inference"
            traced.batch_size, traced.batch_requests = max(inputs.batch_size, 1), 1
            if batcher is not None:  # decoded on the loop thread, as the dispatch is heard
                traced.key = id(inputs)
                self._batching[traced.key] = traced
            return inputs, context

        def traced_encode(context: Any, outputs: list) -> Response:
            traced.encode = time.time_ns()
            traced.failed = "encode"
            answer = encode(context, outputs)
            traced.encoded = time.time_ns()
            traced.failed = ""
            return answer

        return traced_decode, traced_encode

    def _dispatched(self, batch: list[BoundInputs]) -> None:
        """The batcher's ``on_dispatch``: each request's wait ends now, in a batch of this size."""
        now = time.time_ns()
        size = sum(max(inputs.batch_size, 1) for inputs in batch)
        for inputs in batch:
            traced = self._batching.pop(id(inputs), None)
            if traced is not None:
                traced.dispatched, traced.batch_size, traced.batch_requests = now, size, len(batch)

    def _end(self, traced: _Request, status: int) -> None:
        span = traced.span
        if traced.key:
            self._batching.pop(traced.key, None)
        if status:
            span.set_attribute("http.response.status_code", status)
        if status >= 500 or not status:
            span.set_status(Status(StatusCode.ERROR, f"status {status}" if status else "no response"))
        model = traced.model
        if model is not None:
            self._stages(traced, model)
        span.end()

    def _stages(self, traced: _Request, model: ModelVersion) -> None:
        """The child spans, from the stages' times; a stage that raised ends now, as an error."""
        now = time.time_ns()
        batch = {"kpa.batch_size": traced.batch_size, "kpa.batch_requests": traced.batch_requests}
        traced.span.set_attributes({"kpa.model.name": model.name, "kpa.model.version": str(model.version)})
        if traced.batch_size:  # known once decoded
            traced.span.set_attributes(batch)
        batched = model.batcher is not None
        waited = (traced.decoded, traced.dispatched) if batched else (traced.prepared, traced.decode)
        stages = (
            ("queue", *waited),
            ("decode", traced.decode, traced.decoded),
            ("inference", traced.dispatched if batched else traced.decoded, traced.encode),
            ("encode", traced.encode, traced.encoded),
        )  # fmt: skip
        parent = set_span_in_context(traced.span)
        for stage, start, end in stages:
            if not start:
                continue
            span = self.tracer.start_span(
                f"predictor.{stage}", context=parent, start_time=start,
                attributes=batch if stage == "inference" else None,
            )  # fmt: skip
            if not end and traced.failed == stage:
                span.set_status(Status(StatusCode.ERROR, f"{stage} failed"))
            span.end(end_time=end or now)
