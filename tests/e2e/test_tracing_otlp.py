"""Spans of a real `kpa up` stack reach an OTLP/HTTP endpoint as one trace across its processes.

The stack file's ``tracing:`` section turns tracing on for every process the stack starts: the
embedded activator (this process) and each pod's queue-proxy (a child process), which get it as
``TRACING_CONFIG_*``/``OTEL_*`` variables. The collector is this test's own HTTP server on loopback,
decoding what arrives as OpenTelemetry's ``ExportTraceServiceRequest`` protobuf, as a collector would.
The revision starts at zero, so the request is held by the activator while its pod starts. A revision
running ``kpa predictor`` adds the predictor's spans below the queue-proxy's, in the same trace.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import httpx
import pytest
import torch
from otlp_sink import OtlpSink
from stack_fixtures import run, running_stack, stack_text
from torch import nn
from waiting import wait_until

pytestmark = pytest.mark.timeout(60)

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_SPAN = "00f067aa0ba902b7"


def test_a_cold_request_through_kpa_up_reaches_the_otlp_endpoint_as_one_trace(tmp_path):
    async def body():
        sink = OtlpSink()
        await sink.start()
        text = stack_text(
            delay=0.01, cc=1, annotations={"initial-scale": "0"}, config={"allow-zero-initial-scale": "true"}
        )
        text += f"tracing:\n  backend: otlp\n  otlp-endpoint: {sink.url}\n  sample-rate: '1'\n"
        try:
            async with running_stack(text, tmp_path) as stack, httpx.AsyncClient(timeout=30) as client:
                headers = {"host": "hello", "traceparent": f"00-{TRACE_ID}-{CLIENT_SPAN}-01"}
                response = await client.get(stack.entry_url + "/", headers=headers)
                assert response.status_code == 200
                assert response.headers["x-kpa-cold-start"] == "true"

                def names() -> set[tuple[str, str]]:
                    return {(s.service, s.name) for s in sink.spans if s.trace_id == TRACE_ID}

                # The queue-proxy sends its batch within its schedule delay (5 s); the activator's at stop.
                await wait_until(lambda: ("queue-proxy", "queue_proxy.proxy") in names(), timeout=15)
            await wait_until(lambda: ("activator", "activator.request") in names(), timeout=5)
        finally:
            await sink.server.shutdown(0.0)
        spans = {s.name: s for s in sink.spans if s.trace_id == TRACE_ID}
        assert set(spans) == {
            "activator.request", "activator.wait_for_capacity", "queue_proxy.request", "queue_proxy.proxy",
        }, sink.spans  # fmt: skip
        assert spans["activator.request"].parent == CLIENT_SPAN
        assert spans["activator.wait_for_capacity"].parent == spans["activator.request"].span_id
        assert spans["queue_proxy.request"].parent == spans["activator.request"].span_id
        assert spans["queue_proxy.proxy"].parent == spans["queue_proxy.request"].span_id
        assert sink.content_types == {b"application/x-protobuf"}

    run(body())


class Double(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * 2


MODEL_CONFIG = """name: "double"
max_batch_size: 8
input [{ name: "x" data_type: TYPE_FP32 dims: [4] }]
output [{ name: "y" data_type: TYPE_FP32 dims: [4] }]
dynamic_batching { }
parameters { key: "backend" value { string_value: "eager" } }
"""
PREDICTOR_SPANS = {
    ("activator", "activator.request"), ("activator", "activator.wait_for_capacity"),
    ("queue-proxy", "queue_proxy.request"), ("queue-proxy", "queue_proxy.proxy"),
    ("predictor", "predictor.request"), ("predictor", "predictor.queue"), ("predictor", "predictor.decode"),
    ("predictor", "predictor.inference"), ("predictor", "predictor.encode"),
}  # fmt: skip


def predictor_stack(tmp_path: Path, sink_url: str) -> str:
    """One revision at zero running `kpa predictor` on a one-model repository, traced to ``sink_url``."""
    (tmp_path / "models" / "double" / "1").mkdir(parents=True)
    (tmp_path / "models" / "double" / "config.pbtxt").write_text(MODEL_CONFIG)
    torch.jit.save(torch.jit.script(Double()), str(tmp_path / "models" / "double" / "1" / "model.pt"))
    command = [sys.executable, "-m", "kpa", "predictor", "--model-repository", str(tmp_path / "models"),
               "--cache-dir", str(tmp_path / "cache")]  # fmt: skip
    config = {"stable-window": "6s", "scale-to-zero-grace-period": "1s", "allow-zero-initial-scale": "true"}
    return "\n".join([
        "config:", *(f"  {k}: '{v}'" for k, v in config.items()),
        "revisions:",
        f"  - name: hello\n    command: {json.dumps(command)}\n    startupTimeoutSeconds: 45",
        "    readinessProbe: {httpGet: {path: /v2/health/ready}}",
        "    annotations: {autoscaling.knative.dev/initial-scale: '0'}",
        f"tracing:\n  backend: otlp\n  otlp-endpoint: {sink_url}\n  sample-rate: '1'\n",
    ])  # fmt: skip


def test_one_inference_request_is_one_trace_from_the_activator_to_the_predictors_stages(tmp_path):
    async def body():
        sink = OtlpSink()
        await sink.start()
        try:
            text = predictor_stack(tmp_path, sink.url)
            async with running_stack(text, tmp_path) as stack, httpx.AsyncClient(timeout=50) as client:
                headers = {"host": "hello", "traceparent": f"00-{TRACE_ID}-{CLIENT_SPAN}-01"}
                doc = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}
                response = await client.post(
                    stack.entry_url + "/v2/models/double/infer", json=doc, headers=headers
                )
                assert response.status_code == 200, response.text
                assert response.json()["outputs"][0]["data"] == [2, 4, 6, 8]
            # Every process flushes what it still holds as it stops (the stack stops its pods first).
            await wait_until(lambda: {(s.service, s.name) for s in sink.spans} >= PREDICTOR_SPANS, timeout=10)
        finally:
            await sink.server.shutdown(0.0)
        spans = {s.name: s for s in sink.spans}
        assert len(spans) == len(sink.spans) == len(PREDICTOR_SPANS), sink.spans  # this request's, once each
        assert {s.trace_id for s in sink.spans} == {TRACE_ID}
        parents = {name: spans[name].parent for name in spans}
        assert parents["activator.request"] == CLIENT_SPAN
        assert parents["queue_proxy.request"] == spans["activator.request"].span_id
        assert parents["queue_proxy.proxy"] == spans["queue_proxy.request"].span_id
        assert parents["predictor.request"] == spans["queue_proxy.proxy"].span_id
        for stage in ("queue", "decode", "inference", "encode"):
            assert parents[f"predictor.{stage}"] == spans["predictor.request"].span_id
        attributes = spans["predictor.request"].attributes
        assert attributes["kpa.model.name"] == "double" and attributes["kpa.model.version"] == "1"
        assert attributes["kpa.batch_size"] == 1 and attributes["http.response.status_code"] == 200

    run(body())
