"""KServe's inference logger in the queue-proxy: capture request and response bodies, send them later.

The request path only copies bytes it already has and appends a ``Payload`` to a bounded buffer
(``EventBuffer``: at most ``buffer_events`` payloads and ``buffer_bytes`` bytes); one background task
sends the buffer in order, each event a binary-mode CloudEvent POSTed to the sink with a timeout and
at most ``retries`` more tries. So a slow, hanging or dead sink costs the request being served
nothing: when the buffer is full the event is dropped and counted, never waited for. On shutdown the
sender gets ``FLUSH_GRACE`` seconds to empty the buffer, then what is left is dropped and counted.

Capture, only when a logger is configured (the handler's one ``payload_log is not None`` check):

* the request body as received: taken whole when it has arrived with the head (the request then
  still takes the no-task fast path), else awaited before the request goes on, as KServe's agent
  reads it whole first — up to ``max_payload_bytes``; a longer one streams on unlogged;
* the response body as the user container sent it, through a ``ResponseSink`` that passes every call
  on at once (a streaming answer still streams) and keeps a copy up to ``max_payload_bytes``.

A payload larger than ``max_payload_bytes`` is not sent: it is dropped and counted
(``reason="too_large"``) — a truncated JSON body would be a corrupt event. Answers the queue-proxy
gives itself (502, 504, 503 queue full) and responses cut off midway make no response event.
Counters (``kpa_payload_log_*``) are a prometheus-client collector registered into the queue-proxy's
registry; see docs/payload-logging.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime

from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from httpengine.request import Request, RequestBody
from httpengine.response import BufferedResponse, Response
from httpengine.upstream import UpstreamPool
from queueproxy.payload_events import (
    REQUEST_EVENT,
    RESPONSE_EVENT,
    EventBuffer,
    LoggerSettings,
    Payload,
    binary_event,
)

log = logging.getLogger(__name__)

FLUSH_GRACE = 1.0  # seconds the sender may go on emptying the buffer once the queue-proxy stops
RETRY_BACKOFF = 0.05  # seconds before the first retry, doubling after each
DROP_REASONS = ("buffer_full", "too_large", "shutdown")


class PayloadLogger(Collector):
    """The buffer, the sender task and the counters of one queue-proxy's payload logger."""

    def __init__(self, settings: LoggerSettings) -> None:
        self.settings = settings
        self.buffer = EventBuffer(settings.buffer_events, settings.buffer_bytes)
        self.sent = {REQUEST_EVENT: 0, RESPONSE_EVENT: 0}
        self.dropped = dict.fromkeys(DROP_REASONS, 0)
        self.failures = 0
        self.high_water = 0  # the most payloads the buffer ever held (tests check the cap holds)
        host, port, self._host, self._target = settings.sink()
        self.pool = UpstreamPool(
            host, port, max_idle=1, connect_timeout=settings.timeout, forwarded_for=False
        )
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task[None] | None = None

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._send_loop())

    async def close(self, grace: float = FLUSH_GRACE) -> None:
        """Let the sender empty the buffer for up to ``grace`` seconds, then stop it; what is left
        (and an event being sent) is dropped and counted, so a hanging sink never holds up exit."""
        task = self._task
        if task is None:
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(grace):
                while len(self.buffer) or not self._idle.is_set():
                    await asyncio.sleep(0.01)
        sending = 0 if self._idle.is_set() else 1
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        self._task = None
        self.dropped["shutdown"] += self.buffer.clear() + sending
        self.pool.close()

    # -- the request path ------------------------------------------------------------------
    def capture(self, request: Request, response: Response) -> Response | _CapturedResponse:
        """Start logging one request; returns the sink its answer must be written through."""
        settings = self.settings
        event_id = request.index.get(b"ce-id")
        exchange = _Exchange(
            self,
            event_id.decode("latin-1") if event_id else str(uuid.uuid4()),
            request.index.get(b"content-type"),
        )
        if settings.spec.logs_requests:
            body = request.body
            if body.complete:
                data = body.take_buffered()
                request.body = _whole(data, body)
                exchange.add_request(data)
                exchange.request_done()
            else:
                request.body = _PendingBody(body, exchange)  # the handler then calls await_body
        else:
            exchange.request_logged = True
        if not settings.spec.logs_responses:
            return response
        return _CapturedResponse(response, exchange)

    async def await_body(self, request: Request) -> None:
        """Read the rest of a request body ``capture`` found incomplete, then queue its event.

        A body past ``max_payload_bytes`` is not waited for further: it goes on streaming (its event
        is dropped as too large). If the client breaks off, what was read goes on and the exchange
        fails upstream the usual way.
        """
        pending = request.body
        if not isinstance(pending, _PendingBody):
            return
        exchange, inner = pending.exchange, pending.inner
        parts = []
        try:
            while not exchange.over and (chunk := await inner.read()):
                parts.append(chunk)
                exchange.add_request(chunk)
        except Exception:  # the client broke off: no request event; the upstream sees the same break
            pending.prefix = b"".join(parts)
            exchange.request_logged = True
            exchange.take(None)
            return
        if inner.complete and not exchange.over:
            request.body = _whole(b"".join(parts), inner)
        else:
            pending.prefix = b"".join(parts)
        exchange.request_done()

    def emit(self, payload: Payload | None, reason: str = "") -> None:
        """Queue ``payload`` for the sender, or count it dropped (None: too large to log)."""
        if payload is None:
            self.dropped["too_large"] += 1
        elif not self.buffer.offer(payload):
            self.dropped["buffer_full"] += 1
        else:
            self.high_water = max(self.high_water, len(self.buffer))
            self._wake.set()

    # -- the sender ------------------------------------------------------------------------
    async def _send_loop(self) -> None:
        buffer = self.buffer
        while True:
            while not len(buffer):
                self._wake.clear()
                await self._wake.wait()
            payload = buffer.take()
            self._idle.clear()
            try:
                await self._send(payload)
            finally:
                self._idle.set()

    async def _send(self, payload: Payload) -> None:
        settings = self.settings
        stamp = datetime.fromtimestamp(payload.at, UTC).isoformat().replace("+00:00", "Z")
        headers, body = binary_event(payload, settings, stamp)
        prepared = self.pool.prepare(b"POST", self._target, headers, body, host=self._host)
        problem = ""
        for attempt in range(settings.retries + 1):
            if attempt:
                await asyncio.sleep(RETRY_BACKOFF * 2 ** (attempt - 1))
            try:
                async with asyncio.timeout(settings.timeout):
                    status = await self.pool.send(prepared, BufferedResponse())
            except TimeoutError:
                problem = f"no answer within {settings.timeout:g}s"
                continue
            except Exception as exc:  # the sender outlives any sink failure
                problem = str(exc)
                continue
            if 200 <= status < 300:
                self.sent[payload.event_type] += 1
                return
            problem = f"status {status}"
        self.failures += 1
        if self.failures == 1 or self.failures % 100 == 0:
            log.warning(
                "payload logger: event %s not delivered to %s after %d tries (%s); %d undelivered so far",
                payload.id, settings.spec.url, settings.retries + 1, problem, self.failures,
            )  # fmt: skip

    # -- /metrics --------------------------------------------------------------------------
    def collect(self) -> Iterator[Metric]:
        events = CounterMetricFamily(
            "kpa_payload_log_events",
            "Payload events delivered to the logger sink, by type.",
            labels=("type",),
        )
        for event_type, count in self.sent.items():
            events.add_metric((event_type,), count)
        yield events
        dropped = CounterMetricFamily(
            "kpa_payload_log_dropped",
            "Payload events not sent: buffer full, payload over the byte bound, or left at shutdown.",
            labels=("reason",),
        )
        for reason, count in self.dropped.items():
            dropped.add_metric((reason,), count)
        yield dropped
        yield CounterMetricFamily(
            "kpa_payload_log_failures",
            "Payload events the sink did not take after every try (timeouts, errors, non-2xx).",
            value=self.failures,
        )
        yield GaugeMetricFamily(
            "kpa_payload_log_buffered_events",
            "Payload events waiting for the sender now.",
            value=len(self.buffer),
        )


class _Exchange:
    """One request's events: its id, the request body and the response body as far as captured."""

    __slots__ = ("content_type", "id", "logger", "over", "parts", "request_logged", "size")

    def __init__(self, logger: PayloadLogger, event_id: str, content_type: bytes | None) -> None:
        self.logger = logger
        self.id = event_id
        self.content_type = content_type
        self.request_logged = False
        self.parts: list[bytes] = []
        self.size = 0
        self.over = False

    def add_request(self, data: bytes) -> None:
        if not self.request_logged:  # body bytes after the answer began are not the event's any more
            self.add(data)

    def add(self, data: bytes) -> None:
        if self.over or not data:
            return
        self.size += len(data)
        if self.size > self.logger.settings.max_payload_bytes:
            self.over, self.parts = True, []
        else:
            self.parts.append(data)

    def take(
        self, event_type: str | None, content_type: bytes | None = None, status: int = 0
    ) -> Payload | None:
        """The payload captured so far (None when over the bound, or with no ``event_type``); starts
        the next capture afresh."""
        body = None if self.over else b"".join(self.parts)
        self.parts, self.size, self.over = [], 0, False
        if body is None or event_type is None:
            return None
        return Payload(event_type, self.id, content_type, body, time.time(), status)

    def request_done(self) -> None:
        """The request body is in (or the answer began before it was): queue the request event."""
        if not self.request_logged:
            self.request_logged = True
            self.logger.emit(self.take(REQUEST_EVENT, self.content_type))

    def response_done(self, content_type: bytes | None, status: int) -> None:
        self.logger.emit(self.take(RESPONSE_EVENT, content_type, status))


def _whole(data: bytes, like: RequestBody) -> RequestBody:
    """A complete body holding ``data``, framed upstream as ``like`` was (chunked or with a length)."""
    whole = RequestBody.of(data)
    whole.chunked, whole.content_length = like.chunked, like.content_length
    return whole


class _PendingBody(RequestBody):
    """A request body that had not all arrived with its head: ``PayloadLogger.await_body`` reads it;
    when it stays incomplete (too long to log, or cut off) the upstream reads ``prefix`` (what was
    read) and then the rest through here."""

    __slots__ = ("exchange", "inner", "prefix")

    def __init__(self, inner: RequestBody, exchange: _Exchange) -> None:
        super().__init__(None, inner.content_length, inner.chunked)
        self.complete = False  # the pool then streams it with read()
        self.inner = inner
        self.exchange = exchange
        self.prefix = b""

    def take_buffered(self) -> bytes:
        data, self.prefix = self.prefix + self.inner.take_buffered(), b""
        return data

    async def read(self) -> bytes:
        if self.prefix:
            data, self.prefix = self.prefix, b""
            return data
        return await self.inner.read()


class _CapturedResponse:
    """A ``ResponseSink`` that passes everything on to the client's ``Response`` and keeps a copy.

    ``accepts_raw`` is False so the upstream's head arrives parsed (its Content-Type is needed);
    bodies still go out as they come.
    """

    __slots__ = ("_content_type", "_exchange", "_inner", "_status")

    accepts_raw = False

    def __init__(self, inner: Response, exchange: _Exchange) -> None:
        self._inner = inner
        self._exchange = exchange
        self._status = 0
        self._content_type: bytes | None = None

    @property
    def started(self) -> bool:
        return self._inner.started

    @property
    def finished(self) -> bool:
        return self._inner.finished

    def start(
        self, status: int, headers: Iterable[tuple[bytes, bytes]] = (), content_length: int | None = None
    ) -> None:
        headers = list(headers)
        self._status = status
        self._content_type = next((v for n, v in headers if n.lower() == b"content-type"), None)
        self._inner.start(status, headers, content_length)

    def start_raw(self, status: int, head: bytes) -> None:
        raise NotImplementedError("a captured response asks for parsed heads (accepts_raw is False)")

    def write(self, data: bytes) -> None:
        self._exchange.add(data)
        self._inner.write(data)

    def flush(self) -> None:
        self._inner.flush()

    def end(self, data: bytes = b"") -> None:
        if self._inner.finished:
            return
        self._exchange.add(data)
        self._inner.end(data)
        self._exchange.response_done(self._content_type, self._status)

    def abort(self) -> None:
        self._inner.abort()

    def retract(self) -> bool:
        retracted = self._inner.retract()
        if retracted:
            self._exchange.take(None)  # a 502 replaces it: nothing of it is the app's answer
        return retracted

    def link_flow(self, transport: asyncio.ReadTransport | None) -> None:
        self._inner.link_flow(transport)
