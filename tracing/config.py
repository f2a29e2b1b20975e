"""Tracing settings: Knative's ``config-tracing`` keys and OpenTelemetry's endpoint variables, validated.

Pure: ``parse_tracing(keys, names)`` turns strings into a ``TracingConfig`` or raises
``TracingConfigError`` naming the setting as the user wrote it (a ConfigMap key, a stack-file key or an
environment variable), its value and what would be accepted. Every process reads its tracing settings
from the environment (``tracing_from_env``) — Knative's queue-proxy gets ``config-tracing`` as
``TRACING_CONFIG_*`` variables, and ``kpa up`` hands its stack file's ``tracing:`` section to each
process it starts the same way (``TracingConfig.to_env``).

Off unless asked for: no ``backend`` and no OTLP endpoint means ``none``; an OTLP endpoint alone
(``OTEL_EXPORTER_OTLP_ENDPOINT``, the standard variable) means ``otlp``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

BACKENDS = ("none", "otlp", "zipkin")
DEFAULT_SAMPLE_RATE = 0.1  # Knative's config-tracing default
# config-tracing key -> the environment variable carrying it to a process (Knative's TRACING_CONFIG_*
# for its own keys; OpenTelemetry's standard variable for the OTLP endpoint, our addition to the keys).
ENV_OF_KEY = {
    "backend": "TRACING_CONFIG_BACKEND",
    "sample-rate": "TRACING_CONFIG_SAMPLE_RATE",
    "debug": "TRACING_CONFIG_DEBUG",
    "zipkin-endpoint": "TRACING_CONFIG_ZIPKIN_ENDPOINT",
    "otlp-endpoint": "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
}
KEYS = tuple(ENV_OF_KEY)
OTLP_BASE_ENV = "OTEL_EXPORTER_OTLP_ENDPOINT"  # OpenTelemetry's: the traces URL is it + /v1/traces
OTLP_TRACES_PATH = "/v1/traces"


class TracingConfigError(ValueError):
    """A tracing setting that cannot be used; the message names it, its value and what is accepted."""


@dataclass(frozen=True, slots=True)
class TracingConfig:
    backend: str = "none"  # one of BACKENDS
    sample_rate: float = DEFAULT_SAMPLE_RATE  # of new traces; a request with a parent follows its parent
    endpoint: str = ""  # where spans go: the OTLP/HTTP traces URL, or the Zipkin v2 spans URL

    @property
    def enabled(self) -> bool:
        return self.backend != "none"

    def to_env(self) -> dict[str, str]:
        """The environment variables that give a child process these settings (empty when off)."""
        if not self.enabled:
            return {}
        endpoint_key = "otlp-endpoint" if self.backend == "otlp" else "zipkin-endpoint"
        return {
            ENV_OF_KEY["backend"]: self.backend,
            ENV_OF_KEY["sample-rate"]: repr(self.sample_rate),
            ENV_OF_KEY[endpoint_key]: self.endpoint,
        }


def tracing_from_env(env: Mapping[str, str]) -> TracingConfig:
    """The settings in ``env`` (``TRACING_CONFIG_*``, ``OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT``)."""
    keys = {key: env[name] for key, name in ENV_OF_KEY.items() if env.get(name, "").strip()}
    names = dict(ENV_OF_KEY)
    base = env.get(OTLP_BASE_ENV, "").strip()
    if "otlp-endpoint" not in keys and base:
        keys["otlp-endpoint"] = base.rstrip("/") + OTLP_TRACES_PATH
        names["otlp-endpoint"] = OTLP_BASE_ENV
    return parse_tracing(keys, names)


def parse_tracing(keys: Mapping[str, str], names: Mapping[str, str] | None = None) -> TracingConfig:
    """Validate ``config-tracing`` ``keys``; ``names`` says how to call each key in an error message."""
    names = names or {}

    def name(key: str) -> str:
        return names.get(key, key)

    unknown = sorted(set(keys) - set(KEYS))
    if unknown:
        raise TracingConfigError(f"unknown tracing key(s) {unknown}; known: {list(KEYS)}")
    values = {key: value.strip() for key, value in keys.items()}
    backend = values.get("backend") or ("otlp" if values.get("otlp-endpoint") else "none")
    if backend not in BACKENDS:
        raise TracingConfigError(
            f'{name("backend")}="{backend}": unknown backend; use one of {list(BACKENDS)}'
        )
    rate = _sample_rate(name("sample-rate"), values.get("sample-rate"))
    debug = values.get("debug", "false").lower()
    if debug not in ("true", "false"):
        raise TracingConfigError(f'{name("debug")}="{values["debug"]}": must be true or false')
    if debug == "true":
        rate = 1.0  # Knative: debug samples every request
    if backend == "none":
        return TracingConfig("none", rate)
    endpoint_key = f"{backend}-endpoint"
    endpoint = values.get(endpoint_key, "")
    if not endpoint:
        also = f" (or {OTLP_BASE_ENV})" if backend == "otlp" else ""
        raise TracingConfigError(
            f'{name("backend")}="{backend}" needs {name(endpoint_key)}{also}: the URL spans are sent to'
        )
    if not endpoint.startswith(("http://", "https://")):
        raise TracingConfigError(f'{name(endpoint_key)}="{endpoint}": must be an http:// or https:// URL')
    return TracingConfig(backend, rate, endpoint)


def _sample_rate(name: str, raw: str | None) -> float:
    if raw is None or raw == "":
        return DEFAULT_SAMPLE_RATE
    try:
        rate = float(raw)
    except ValueError:
        raise TracingConfigError(f'{name}="{raw}": not a number; use a fraction from 0 to 1') from None
    if not math.isfinite(rate) or not 0.0 <= rate <= 1.0:
        raise TracingConfigError(f'{name}="{raw}": must be from 0 to 1 (0.1 samples one request in ten)')
    return rate
