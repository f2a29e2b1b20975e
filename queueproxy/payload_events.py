"""KServe's inference logger, the pure part: the ``logger`` spec, the sender's bounds, the CloudEvents.

KServe's ``spec.predictor.logger: {url, mode}`` asks for every request and/or response of a predictor
to be sent as a CloudEvent in binary mode (``ce-*`` headers; the body is the payload itself, with its
Content-Type) to ``url``; ``mode`` is ``all`` (the default), ``request`` or ``response``. The events
carry KServe's types and extension attributes (``inferenceservicename``, ``namespace``, ``component``,
``endpoint``), and a request and its response share one ``id`` (the request's ``Ce-Id`` header when
it has one, else a fresh UUID), as KServe's agent does (pkg/logger). Here the queue-proxy sends them:
see queueproxy/payload_log.py for the capture and the sender, docs/payload-logging.md for the mapping.

Everything here is pure — time and ids are passed in — so the stack file, the Kubernetes enrollment
and the queue-proxy's own configuration read a logger the same way and fail with the same messages.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from cloudevents.conversion import to_binary
from cloudevents.http import CloudEvent

REQUEST_EVENT = "org.kubeflow.serving.inference.request"
RESPONSE_EVENT = "org.kubeflow.serving.inference.response"
MODES = ("all", "request", "response")
DEFAULT_MODE = "all"  # KServe's default
# The queue-proxy's environment (KServe's agent takes the same as flags: --log-url, --log-mode, ...).
URL_ENV = "PAYLOAD_LOGGER_URL"
MODE_ENV = "PAYLOAD_LOGGER_MODE"
INFERENCE_SERVICE_ENV = "PAYLOAD_LOGGER_INFERENCE_SERVICE"
# A plain Deployment has no spec.predictor.logger: these annotations stand in for it.
URL_ANNOTATION = "logger.kpa-emulator.dev/url"
MODE_ANNOTATION = "logger.kpa-emulator.dev/mode"
# The sender's bounds (docs/payload-logging.md): KServe's agent queues 100 events.
DEFAULT_BUFFER_EVENTS = 100
DEFAULT_BUFFER_BYTES = 16 * 1024 * 1024
DEFAULT_MAX_PAYLOAD_BYTES = 1024 * 1024
DEFAULT_TIMEOUT_SECONDS = 2.0
DEFAULT_RETRIES = 2


class LoggerConfigError(ValueError):
    """A logger setting that cannot be used; the message names the field, the value and the fix."""


@dataclass(frozen=True, slots=True)
class LoggerSpec:
    """KServe's ``logger``: where the events go and which ones."""

    url: str
    mode: str = DEFAULT_MODE

    @property
    def logs_requests(self) -> bool:
        return self.mode != "response"

    @property
    def logs_responses(self) -> bool:
        return self.mode != "request"

    def env(self) -> dict[str, str]:
        """The queue-proxy environment that turns this logger on."""
        return {URL_ENV: self.url, MODE_ENV: self.mode}


def parse_logger(url: object, mode: object, url_field: str, mode_field: str) -> LoggerSpec:
    """A validated ``LoggerSpec``; errors name ``url_field``/``mode_field`` (where the value came from).

    The sink must be a plain ``http://host[:port]/path`` URL: TLS to the sink is not supported.
    """
    if url is None or (isinstance(url, str) and not url.strip()):
        raise LoggerConfigError(
            f"{url_field}: the sink URL is missing; give one, e.g. http://message-dumper.default/"
        )
    if not isinstance(url, str):
        raise LoggerConfigError(
            f"{url_field}={url!r}: must be a URL string, e.g. http://message-dumper.default/"
        )
    url = url.strip()
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise LoggerConfigError(f'{url_field}="{url}": not a URL ({exc}); e.g. http://sink:8080/') from None
    if parts.scheme == "https":
        raise LoggerConfigError(
            f'{url_field}="{url}": TLS to the sink is not supported; use an http:// URL '
            "(a sink inside the cluster, or a TLS-terminating proxy beside the pod)"
        )
    if parts.scheme != "http" or not parts.hostname:
        raise LoggerConfigError(
            f'{url_field}="{url}": not an http:// URL with a host; e.g. http://message-dumper.default/'
        )
    if port == 0:
        raise LoggerConfigError(f'{url_field}="{url}": port 0 cannot be connected to; give the sink\'s port')
    if mode is None or mode == "":
        mode = DEFAULT_MODE
    if not isinstance(mode, str) or mode not in MODES:
        raise LoggerConfigError(f"{mode_field}={mode!r}: unknown logger mode; use one of {', '.join(MODES)}")
    return LoggerSpec(url, mode)


def logger_of_annotations(annotations: Mapping[str, str], where: str) -> LoggerSpec | None:
    """The logger a plain Deployment asks for with ``logger.kpa-emulator.dev/url`` (and ``/mode``)."""
    url, mode = annotations.get(URL_ANNOTATION), annotations.get(MODE_ANNOTATION)
    if url is None:
        if mode is not None:
            raise LoggerConfigError(
                f'{where}: annotation {MODE_ANNOTATION}="{mode}" without {URL_ANNOTATION}; '
                "add the sink URL or remove the mode"
            )
        return None
    return parse_logger(
        url, mode, f"{where}: annotation {URL_ANNOTATION}", f"{where}: annotation {MODE_ANNOTATION}"
    )


def logger_of_predictor(predictor: Mapping[str, Any], where: str) -> LoggerSpec | None:
    """KServe's ``spec.predictor.logger`` of an InferenceService, if it has one."""
    logger = predictor.get("logger")
    if logger is None:
        return None
    field = "spec.predictor.logger"
    if not isinstance(logger, Mapping):
        raise LoggerConfigError(f"{where}: {field} must be a mapping like {{url: http://sink/, mode: all}}")
    unknown = sorted(set(logger) - {"url", "mode"})
    if unknown:
        raise LoggerConfigError(
            f"{where}: {field}.{unknown[0]}: not supported here (only url and mode; "
            "KServe's storage, metadataHeaders and TLS settings are not); remove it"
        )
    return parse_logger(
        logger.get("url"), logger.get("mode"), f"{where}: {field}.url", f"{where}: {field}.mode"
    )


@dataclass(frozen=True, slots=True)
class LoggerSettings:
    """Everything the queue-proxy's sender needs: the spec, the event attributes, the bounds."""

    spec: LoggerSpec
    source: str  # the CloudEvents source: KServe's agent uses its own URL
    inference_service: str = ""
    namespace: str = ""
    component: str = "predictor"
    endpoint: str = ""
    buffer_events: int = DEFAULT_BUFFER_EVENTS
    buffer_bytes: int = DEFAULT_BUFFER_BYTES
    max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES
    timeout: float = DEFAULT_TIMEOUT_SECONDS
    retries: int = DEFAULT_RETRIES

    def sink(self) -> tuple[str, int, bytes, bytes]:
        """(host, port, Host header, request target) of the sink URL."""
        parts = urlsplit(self.spec.url)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        return parts.hostname or "", parts.port or 80, parts.netloc.encode(), target.encode()


@dataclass(frozen=True, slots=True)
class Payload:
    """One captured request or response body, as the request path hands it to the sender."""

    event_type: str  # REQUEST_EVENT or RESPONSE_EVENT
    id: str
    content_type: bytes | None
    body: bytes
    at: float  # wall-clock seconds when it was captured: the event's time
    status: int = 0  # a response's HTTP status; 0 for a request


def binary_event(
    payload: Payload, settings: LoggerSettings, time: str
) -> tuple[list[tuple[bytes, bytes]], bytes]:
    """The HTTP headers and body of ``payload`` as a binary-mode CloudEvent; ``time`` is RFC 3339."""
    attributes: dict[str, Any] = {
        "type": payload.event_type,
        "source": settings.source,
        "id": payload.id,
        "time": time,
        "inferenceservicename": settings.inference_service,
        "namespace": settings.namespace,
        "component": settings.component,
        "endpoint": settings.endpoint,
    }
    if payload.content_type:
        attributes["datacontenttype"] = payload.content_type.decode("latin-1")
    if payload.status:
        attributes["statuscode"] = str(payload.status)  # ours: KServe logs only 200 answers
    headers, body = to_binary(CloudEvent(attributes, payload.body), data_marshaller=_as_is)
    return [(name.encode(), value.encode("latin-1")) for name, value in headers.items()], body or b""


def _as_is(data: Any) -> Any:
    return data


class EventBuffer:
    """A FIFO of payloads bounded in count and in bytes; ``offer`` refuses what would pass either."""

    def __init__(self, max_events: int, max_bytes: int) -> None:
        self.max_events = max_events
        self.max_bytes = max_bytes
        self.bytes = 0
        self._items: deque[Payload] = deque()

    def __len__(self) -> int:
        return len(self._items)

    def offer(self, payload: Payload) -> bool:
        size = len(payload.body)
        if len(self._items) >= self.max_events or self.bytes + size > self.max_bytes:
            return False
        self._items.append(payload)
        self.bytes += size
        return True

    def take(self) -> Payload:
        payload = self._items.popleft()
        self.bytes -= len(payload.body)
        return payload

    def clear(self) -> int:
        """Empty the buffer; returns how many payloads it held."""
        count = len(self._items)
        self._items.clear()
        self.bytes = 0
        return count
