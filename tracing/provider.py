"""The shell around ``tracing.config``: a tracer provider that samples and exports as configured.

Each process builds one provider at start (``tracer_for``) and hands its ``Tracer`` to the components
that make spans; nothing is installed globally, so tests give a component a tracer of their own (an
in-memory exporter) and two components in one process (``kpa up``'s activator, a test's stack) never
share state by accident. Sampling is parent-based: a request whose ``traceparent`` says sampled is
recorded, one that says not sampled is not (its context is still passed on), and a new trace is
sampled with the configured rate. Spans leave in batches from a background thread; ``shutdown``
flushes what is left.
"""

from __future__ import annotations

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace import Tracer

from tracing.config import TracingConfig, TracingConfigError

INSTRUMENTATION = "kpa-emulator"
ZIPKIN_PACKAGE = "opentelemetry-exporter-zipkin-json"


def tracer_provider(
    config: TracingConfig, service: str, exporter: SpanExporter | None = None
) -> TracerProvider:
    """A provider for process ``service`` (the spans' ``service.name``); ``exporter`` replaces the
    configured one (tests). Raises TracingConfigError when the backend's exporter is not installed."""
    provider = TracerProvider(
        sampler=ParentBased(TraceIdRatioBased(config.sample_rate)),
        resource=Resource.create({"service.name": service}),
    )
    provider.add_span_processor(BatchSpanProcessor(exporter or _exporter(config)))
    return provider


def tracer_for(config: TracingConfig, service: str) -> tuple[Tracer, TracerProvider] | None:
    """The tracer and its provider (to ``shutdown`` at exit), or None when tracing is off."""
    if not config.enabled:
        return None
    provider = tracer_provider(config, service)
    return provider.get_tracer(INSTRUMENTATION), provider


def _exporter(config: TracingConfig) -> SpanExporter:
    if config.backend == "otlp":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter(endpoint=config.endpoint)
    if config.backend == "zipkin":
        try:
            from opentelemetry.exporter.zipkin.json import ZipkinExporter
        except ImportError:
            raise TracingConfigError(
                f"backend=zipkin: the Zipkin exporter is not installed (pip install {ZIPKIN_PACKAGE}); "
                "or send OTLP instead: backend=otlp with otlp-endpoint (Zipkin, Jaeger and the "
                "OpenTelemetry collector all receive OTLP/HTTP)"
            ) from None
        return ZipkinExporter(endpoint=config.endpoint)
    raise TracingConfigError(f"backend={config.backend}: nothing to export to")
