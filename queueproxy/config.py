"""The queue-proxy's settings, read from Knative's environment variables and overridden by flags.

Pure: ``load_config(env, overrides)`` turns strings into a validated ``QueueProxyConfig`` or raises
``QueueProxyConfigError`` naming the variable, the value and what would be accepted, e.g.
``CONTAINER_CONCURRENCY="x": not an integer``. The readiness probe is Knative's JSON encoding of a
Kubernetes probe (``SERVING_READINESS_PROBE``), one object or a list of them.
"""

from __future__ import annotations

import functools
import json
import math
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from queueproxy.auth import ENV_OF_ANNOTATION, AuthConfigError, AuthSpec
from queueproxy.payload_events import (
    INFERENCE_SERVICE_ENV,
    MODE_ENV,
    URL_ENV,
    LoggerConfigError,
    LoggerSettings,
    parse_logger,
)
from tracing.config import TracingConfig, TracingConfigError, tracing_from_env

DEFAULT_SERVING_PORT = 8012
DEFAULT_ADMIN_PORT = 8022
DEFAULT_STATS_PORT = 9090
DEFAULT_METRICS_PORT = 9091
DEFAULT_USER_PORT = 8080
DEFAULT_REVISION_TIMEOUT = 300.0
DEFAULT_DRAIN_TIMEOUT = 30.0  # Knative's drain quiet period
# Admin (/wait-for-drain), stats and metrics listen on loopback unless told otherwise, whatever the
# serving address: nothing but the pod itself needs them (see docs/security.md for the stats scrape).
LOOPBACK = "127.0.0.1"
QUEUE_DEPTH_PER_SLOT = 10  # Knative: queue depth = 10 × containerConcurrency


class QueueProxyConfigError(ValueError):
    """A setting that cannot be used; the message names it, its value and the accepted range."""


@dataclass(frozen=True, slots=True)
class ProbeSpec:
    """One readiness probe of the user container, as the queue-proxy runs it.

    ``period`` 0 is Knative's aggressive mode: retry every 50 ms with a 100 ms timeout until
    ``success_threshold`` consecutive successes.
    """

    kind: str  # "tcp" or "http"
    host: str
    port: int
    path: str = "/"
    scheme: str = "http"
    headers: tuple[tuple[str, str], ...] = ()
    initial_delay: float = 0.0
    timeout: float = 1.0
    period: float = 0.0
    success_threshold: int = 1
    failure_threshold: int = 3

    @property
    def aggressive(self) -> bool:
        return self.period == 0

    def describe(self) -> str:
        if self.kind == "tcp":
            return f"tcp {self.host}:{self.port}"
        return f"http GET {self.scheme}://{self.host}:{self.port}{self.path}"


@dataclass(frozen=True, slots=True)
class QueueProxyConfig:
    container_concurrency: int = 0
    queue_depth: int = 0  # 0 = 10 × container_concurrency
    serving_port: int = DEFAULT_SERVING_PORT
    admin_port: int = DEFAULT_ADMIN_PORT
    stats_port: int = DEFAULT_STATS_PORT
    metrics_port: int = DEFAULT_METRICS_PORT
    host: str = "127.0.0.1"
    admin_host: str = LOOPBACK  # admin and metrics ports
    stats_host: str = LOOPBACK  # the autoscaler scrapes it; on Kubernetes bind the pod IP or 0.0.0.0
    user_host: str = "127.0.0.1"
    user_port: int = DEFAULT_USER_PORT
    revision_timeout: float = DEFAULT_REVISION_TIMEOUT
    response_start_timeout: float = 0.0  # 0 disables
    idle_timeout: float = 0.0  # 0 disables
    drain_timeout: float = DEFAULT_DRAIN_TIMEOUT
    pod_name: str = ""
    revision: str = ""  # the realm of data-path authentication challenges
    namespace: str = ""  # these three label /metrics (docs/metrics.md); configuration and service
    configuration: str = ""  # default to the name autoscaler.stat.owner_name derives
    service: str = ""
    auth: AuthSpec | None = None  # data-path authentication; None: every request passes
    tracing: TracingConfig = field(default_factory=TracingConfig)  # TRACING_CONFIG_*, docs/tracing.md
    logger: LoggerSettings | None = None  # KServe's payload logger (docs/payload-logging.md); None: off
    probes: tuple[ProbeSpec, ...] = field(default=())

    @property
    def effective_queue_depth(self) -> int:
        return self.queue_depth or QUEUE_DEPTH_PER_SLOT * self.container_concurrency

    @property
    def max_idle_connections(self) -> int:
        """Knative keeps ``cc`` idle connections to the user container, 1000 when unlimited."""
        return self.container_concurrency if self.container_concurrency > 0 else 1000


def _int(name: str, raw: str, minimum: int = 0, maximum: int | None = None) -> int:
    try:
        value = int(raw.strip())
    except ValueError:
        raise QueueProxyConfigError(f'{name}="{raw}": not an integer') from None
    if value < minimum or (maximum is not None and value > maximum):
        bound = f"in [{minimum}, {maximum}]" if maximum is not None else f">= {minimum}"
        raise QueueProxyConfigError(f'{name}="{raw}": must be {bound}')
    return value


def _seconds(name: str, raw: str, *, positive: bool = False) -> float:
    try:
        value = float(raw.strip())
    except ValueError:
        raise QueueProxyConfigError(f'{name}="{raw}": not a number of seconds') from None
    if not math.isfinite(value) or value < 0 or (positive and value == 0):
        raise QueueProxyConfigError(
            f'{name}="{raw}": must be a {"positive" if positive else "non-negative"} number of seconds'
        )
    return value


def _port(name: str, raw: str) -> int:
    return _int(name, raw, 0, 65535)


# (Knative environment variable or None, config field = flag destination, parser(name, raw))
_SETTINGS: tuple[tuple[str | None, str, Any], ...] = (
    ("CONTAINER_CONCURRENCY", "container_concurrency", lambda n, r: _int(n, r)),
    (None, "queue_depth", lambda n, r: _int(n, r)),
    ("QUEUE_SERVING_PORT", "serving_port", _port),
    (None, "admin_port", _port),
    (None, "stats_port", _port),
    (None, "metrics_port", _port),
    (None, "host", lambda n, r: r),
    ("KPA_ADMIN_HOST", "admin_host", lambda n, r: r),
    ("KPA_STATS_HOST", "stats_host", lambda n, r: r),
    (None, "user_host", lambda n, r: r),
    ("USER_PORT", "user_port", lambda n, r: _int(n, r, 1, 65535)),
    ("REVISION_TIMEOUT_SECONDS", "revision_timeout", lambda n, r: _seconds(n, r, positive=True)),
    ("REVISION_RESPONSE_START_TIMEOUT_SECONDS", "response_start_timeout", _seconds),
    ("REVISION_IDLE_TIMEOUT_SECONDS", "idle_timeout", _seconds),
    (None, "drain_timeout", _seconds),
    ("SERVING_POD", "pod_name", lambda n, r: r),
    ("SERVING_REVISION", "revision", lambda n, r: r),
    ("SERVING_NAMESPACE", "namespace", lambda n, r: r),
    ("SERVING_CONFIGURATION", "configuration", lambda n, r: r),
    ("SERVING_SERVICE", "service", lambda n, r: r),
    *((env, "auth_" + key.removeprefix("kpa.dev/auth-").replace("-", "_"), lambda n, r: r)
      for key, env in ENV_OF_ANNOTATION.items()),
    (URL_ENV, "logger_url", lambda n, r: r),
    (MODE_ENV, "logger_mode", lambda n, r: r),
    ("PAYLOAD_LOGGER_SOURCE_URI", "logger_source_uri", lambda n, r: r),
    (INFERENCE_SERVICE_ENV, "logger_inference_service", lambda n, r: r),
    ("PAYLOAD_LOGGER_COMPONENT", "logger_component", lambda n, r: r),
    ("PAYLOAD_LOGGER_ENDPOINT", "logger_endpoint", lambda n, r: r),
    ("PAYLOAD_LOGGER_BUFFER_EVENTS", "logger_buffer_events", lambda n, r: _int(n, r, 1)),
    ("PAYLOAD_LOGGER_BUFFER_BYTES", "logger_buffer_bytes", lambda n, r: _int(n, r, 1)),
    ("PAYLOAD_LOGGER_MAX_PAYLOAD_BYTES", "logger_max_payload_bytes", lambda n, r: _int(n, r, 0)),
    ("PAYLOAD_LOGGER_TIMEOUT_SECONDS", "logger_timeout", lambda n, r: _seconds(n, r, positive=True)),
    ("PAYLOAD_LOGGER_RETRIES", "logger_retries", lambda n, r: _int(n, r, 0, 10)),
)  # fmt: skip
_AUTH_FIELDS = tuple(dest for _, dest, _ in _SETTINGS if dest.startswith("auth_"))
_LOGGER_FIELDS = tuple(dest for _, dest, _ in _SETTINGS if dest.startswith("logger_"))

FLAG_NAMES = {dest: "--" + dest.replace("_", "-") for _, dest, _ in _SETTINGS}
ENV_NAMES = {dest: env for env, dest, _ in _SETTINGS if env}


def load_config(
    env: Mapping[str, str], overrides: Mapping[str, str | None] | None = None
) -> QueueProxyConfig:
    """Build the config from environment variables, then flag ``overrides`` (flag dest -> string)."""
    overrides = overrides or {}
    values: dict[str, Any] = {}
    for env_name, dest, parse in _SETTINGS:
        flag_value = overrides.get(dest)
        if flag_value is not None:
            values[dest] = parse(FLAG_NAMES[dest], str(flag_value))
        elif env_name and env.get(env_name, "") != "":
            values[dest] = parse(env_name, env[env_name])
    auth_values = [values.pop(dest, None) for dest in _AUTH_FIELDS]
    logger_values = {
        dest.removeprefix("logger_"): values.pop(dest) for dest in _LOGGER_FIELDS if dest in values
    }
    try:
        auth = AuthSpec(*auth_values) if any(auth_values) else None
    except AuthConfigError as exc:
        message = str(exc)
        for annotation, env_name in ENV_OF_ANNOTATION.items():
            message = message.replace(annotation, env_name)
        raise QueueProxyConfigError(message) from None
    try:
        tracing = tracing_from_env(env)
    except TracingConfigError as exc:
        raise QueueProxyConfigError(str(exc)) from None
    config = QueueProxyConfig(**values, auth=auth, tracing=tracing)
    if not config.pod_name:
        config = replace(config, pod_name=socket.gethostname())
    if config.queue_depth and not config.container_concurrency:
        raise QueueProxyConfigError(
            f"{FLAG_NAMES['queue_depth']}={config.queue_depth}: needs a container concurrency > 0 "
            "(with CONTAINER_CONCURRENCY=0 there is no breaker and no queue)"
        )
    probe_json = overrides.get("readiness_probe") or env.get("SERVING_READINESS_PROBE", "")
    source = "--readiness-probe" if overrides.get("readiness_probe") else "SERVING_READINESS_PROBE"
    probes = parse_probes(probe_json, source, config.user_host, config.user_port)
    logger = _logger(config, logger_values, overrides) if logger_values else None
    return replace(config, probes=probes, logger=logger)


def _logger(
    config: QueueProxyConfig, values: dict[str, Any], overrides: Mapping[str, str | None]
) -> LoggerSettings:
    """The payload logger's settings; errors name the variable (or flag) and the fix."""

    def name(key: str) -> str:
        dest = "logger_" + key
        return FLAG_NAMES[dest] if overrides.get(dest) is not None else ENV_NAMES[dest]

    if "url" not in values:
        given = ", ".join(name(key) for key in values)
        raise QueueProxyConfigError(
            f"{given}: set without {URL_ENV} (or --logger-url), the sink to log to; add it or remove them"
        )
    try:
        spec = parse_logger(values.pop("url"), values.pop("mode", None), name("url"), name("mode"))
    except LoggerConfigError as exc:
        raise QueueProxyConfigError(str(exc)) from None
    source = values.pop("source_uri", None) or f"http://localhost:{config.serving_port}/"
    service = values.pop("inference_service", None) or config.revision
    return LoggerSettings(spec, source, service, config.namespace, **values)


def default_probe(user_host: str, user_port: int) -> ProbeSpec:
    """Knative's default: TCP on the user port, aggressive, one success."""
    return ProbeSpec(kind="tcp", host=user_host, port=user_port)


def parse_probes(raw: str, source: str, user_host: str, user_port: int) -> tuple[ProbeSpec, ...]:
    """Knative's JSON probe encoding: one probe object or a list; empty means the default TCP probe."""
    if not raw or not raw.strip():
        return (default_probe(user_host, user_port),)
    try:
        doc = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise QueueProxyConfigError(
            f"{source}={raw!r}: not valid JSON ({exc.msg} at position {exc.pos})"
        ) from None
    docs = doc if isinstance(doc, list) else [doc]
    if not docs:
        return (default_probe(user_host, user_port),)
    return tuple(
        _parse_probe(d, f"{source}[{i}]" if isinstance(doc, list) else source, user_host, user_port)
        for i, d in enumerate(docs)
    )


def _parse_probe(doc: Any, source: str, user_host: str, user_port: int) -> ProbeSpec:
    if not isinstance(doc, dict):
        raise QueueProxyConfigError(f"{source}: a probe must be a JSON object, got {type(doc).__name__}")

    def number(key: str, default: float, minimum: float = 0) -> float:
        value = doc.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float) or value < minimum:
            raise QueueProxyConfigError(f"{source}: {key}={value!r}: must be a number >= {minimum}")
        return float(value)

    def port_of(action: dict, key: str) -> int:
        value = action.get("port", user_port)
        if isinstance(value, str) and value.isdigit():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 65536:
            raise QueueProxyConfigError(
                f"{source}: {key}.port={value!r}: must be a port number (named ports are not supported)"
            )
        return value

    probe = functools.partial(
        ProbeSpec,
        initial_delay=number("initialDelaySeconds", 0),
        timeout=number("timeoutSeconds", 1, minimum=0) or 1.0,
        period=number("periodSeconds", 0),
        success_threshold=max(1, int(number("successThreshold", 1))),
        failure_threshold=max(1, int(number("failureThreshold", 3))),
    )
    if isinstance(doc.get("httpGet"), dict):
        action = doc["httpGet"]
        scheme = str(action.get("scheme", "HTTP")).lower()
        if scheme != "http":
            raise QueueProxyConfigError(
                f"{source}: httpGet.scheme={action.get('scheme')!r}: only HTTP is supported"
            )
        path = action.get("path") or "/"
        if not isinstance(path, str) or not path.startswith("/"):
            raise QueueProxyConfigError(f"{source}: httpGet.path={path!r}: must start with /")
        headers = []
        for h in action.get("httpHeaders") or []:
            if (
                not isinstance(h, dict)
                or not isinstance(h.get("name"), str)
                or not isinstance(h.get("value"), str)
            ):
                raise QueueProxyConfigError(
                    f"{source}: httpGet.httpHeaders entry {h!r}: needs string name and value"
                )
            headers.append((h["name"], h["value"]))
        return probe(
            kind="http",
            host=action.get("host") or user_host,
            port=port_of(action, "httpGet"),
            path=path,
            headers=tuple(headers),
        )
    if isinstance(doc.get("tcpSocket"), dict):
        action = doc["tcpSocket"]
        return probe(kind="tcp", host=action.get("host") or user_host, port=port_of(action, "tcpSocket"))
    if "exec" in doc or "grpc" in doc:
        # Knative turns exec probes into TCP probes on the user port; gRPC health is not spoken here.
        return probe(kind="tcp", host=user_host, port=user_port)
    raise QueueProxyConfigError(
        f"{source}: needs one of httpGet, tcpSocket (or exec, probed as TCP); got keys {sorted(doc)}"
    )
