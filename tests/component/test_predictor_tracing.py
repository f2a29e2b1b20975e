"""The predictor's spans, read from memory over a real server: one request's tree under the client's
traceparent, stage timings that nest and follow one another, the batch a request ran in, failures
marked where they happened — and, with tracing off, nothing made and OpenTelemetry not even imported.

The server is ``predictor.server.serve`` on loopback in a thread of this process (so its tracer can
export into memory); the process-level wiring (``TRACING_CONFIG_*`` / ``OTEL_*`` variables, flushing at
exit) is checked against a real ``kpa predictor`` and the test's OTLP/HTTP endpoint.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import torch
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from otlp_sink import OtlpSink
from predictor_fixtures import PredictorProcess, save_torchscript, write_config, write_scale_model
from tables import named
from torch import nn
from waiting import wait_until_blocking

from predictor.model_cache import Budget
from predictor.server import ServerOptions, serve
from tracing.config import TracingConfig
from tracing.provider import INSTRUMENTATION, tracer_provider

pytestmark = pytest.mark.timeout(90)

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
CLIENT_SPAN = "b7ad6b7169203331"
TRACEPARENT = f"00-{TRACE_ID}-{CLIENT_SPAN}-01"
STAGES = ["predictor.queue", "predictor.decode", "predictor.inference", "predictor.encode"]
PAIR_DELAY_S = 5.0  # the batched model waits this long for a second request (a preferred batch of 2)
SECOND_AFTER_S = 0.3  # when the second request of the batch is sent


class Fragile(nn.Module):
    """Fails inside the model for negative inputs: a 500 from inference."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if bool((x < 0).any()):
            raise ValueError("negative values are not allowed")
        return x + 1


def v2(values: list[float]) -> dict:
    """A V2 inference request body for the [1, 4] FP32 input ``x``."""
    return {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": values}]}


@pytest.fixture(scope="module")
def repository(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("repo")
    write_scale_model(root, "scale", 1, 2.0)
    write_scale_model(
        root, "pair", 3, 3.0,
        extra=f"dynamic_batching {{ preferred_batch_size: [2] "
        f"max_queue_delay_microseconds: {int(PAIR_DELAY_S * 1e6)} }}",
    )  # fmt: skip
    write_config(root / "fragile", 'name: "fragile"\nmax_batch_size: 8\n'
                 'input [{ name: "x" data_type: TYPE_FP32 dims: [4] }]\n'
                 'output [{ name: "y" data_type: TYPE_FP32 dims: [4] }]\n'
                 'parameters { key: "backend" value { string_value: "eager" } }\n')  # fmt: skip
    save_torchscript(Fragile(), root / "fragile" / "1" / "model.pt")
    return root


class Served:
    def __init__(self, url: str, exporter: InMemorySpanExporter, provider) -> None:
        self.url, self.exporter, self.provider = url, exporter, provider

    def post(self, path: str, doc: dict, headers: dict | None = None) -> httpx.Response:
        return httpx.post(self.url + path, json=doc, headers=headers or {}, timeout=30)

    def spans(self) -> list[ReadableSpan]:
        self.provider.force_flush()
        spans = list(self.exporter.get_finished_spans())
        self.exporter.clear()
        return spans


@contextlib.contextmanager
def serving(repository: Path, cache_dir: Path, budget: Budget | None = None) -> Iterator[Served]:
    """``serve`` on a loopback port in a thread, with a tracer into memory; stopped on exit."""
    exporter = InMemorySpanExporter()
    provider = tracer_provider(
        TracingConfig("otlp", 1.0, "http://127.0.0.1:1/v1/traces"), "predictor", exporter
    )
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    events: list[dict] = []
    options = ServerOptions(repository, cache_dir, port=0, grace_s=5.0, budget=budget or Budget())
    tracer = provider.get_tracer(INSTRUMENTATION)
    thread = threading.Thread(
        target=loop.run_until_complete, args=(serve(options, events.append, stop, tracer),), daemon=True
    )
    thread.start()
    try:
        wait_until_blocking(lambda: any(e["event"] == "ready" for e in events), timeout=60)
        port = next(e["port"] for e in events if e["event"] == "listening")
        yield Served(f"http://127.0.0.1:{port}", exporter, provider)
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(30)
        loop.close()
        provider.shutdown()


@pytest.fixture(scope="module")
def traced(repository, tmp_path_factory) -> Iterator[Served]:
    with serving(repository, tmp_path_factory.mktemp("cache")) as served:
        served.spans()  # none from starting up
        yield served


def tree(spans: list[ReadableSpan]) -> tuple[ReadableSpan, dict[str, ReadableSpan]]:
    (root,) = [s for s in spans if s.name == "predictor.request"]
    children = {s.name: s for s in spans if s is not root}
    assert len(children) == len(spans) - 1, [s.name for s in spans]
    for child in children.values():
        assert child.parent is not None and child.parent.span_id == root.context.span_id, child.name
        assert child.context.trace_id == root.context.trace_id
        assert root.start_time <= child.start_time <= child.end_time <= root.end_time, child.name
    return root, children


@pytest.mark.parametrize(
    "label, path, doc",
    named([
        ("V2 infer", "/v2/models/scale/infer", v2([1, 2, 3, 4])),
        ("V2 infer, version in the path", "/v2/models/scale/versions/1/infer", v2([1, 2, 3, 4])),
        ("V1 predict", "/v1/models/scale:predict", {"instances": [[1, 2, 3, 4]]}),
    ]),
)  # fmt: skip
def test_a_request_continues_the_clients_trace_with_its_stages_in_order(traced, label, path, doc):
    response = traced.post(path, doc, {"traceparent": TRACEPARENT, "tracestate": "vendor=1"})
    assert response.status_code == 200, response.text
    root, children = tree(traced.spans())
    assert f"{root.context.trace_id:032x}" == TRACE_ID
    assert root.parent is not None and f"{root.parent.span_id:016x}" == CLIENT_SPAN and root.parent.is_remote
    assert root.kind == SpanKind.SERVER
    assert sorted(children) == sorted(STAGES)
    ordered = [children[name] for name in STAGES]  # no batcher: wait for a worker, then the pipeline
    for before, after in itertools.pairwise(ordered):
        assert before.end_time <= after.start_time, f"{before.name} overlaps {after.name}"
    assert dict(root.attributes) == {
        "http.request.method": "POST", "url.path": path, "http.response.status_code": 200,
        "kpa.model.name": "scale", "kpa.model.version": "1", "kpa.batch_size": 1, "kpa.batch_requests": 1,
    }  # fmt: skip
    assert children["predictor.inference"].attributes["kpa.batch_size"] == 1
    assert root.status.status_code == StatusCode.UNSET


def test_two_concurrent_requests_run_as_one_batch_and_their_spans_say_so(traced):
    """The first request waits in the batcher until the second arrives; both leave in one batch of 2
    (the preferred size), long before the queue delay."""
    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(traced.post, "/v2/models/pair/infer", v2([1, 1, 1, 1]))
        time.sleep(SECOND_AFTER_S)
        second = pool.submit(traced.post, "/v2/models/pair/infer", v2([2, 2, 2, 2]))
        assert first.result().status_code == second.result().status_code == 200
    spans = traced.spans()
    roots = [s for s in spans if s.name == "predictor.request"]
    assert len(roots) == 2 and roots[0].context.trace_id != roots[1].context.trace_id  # a new trace each
    runs, waits = [], []
    for root in roots:
        _, children = tree([s for s in spans if s.context.trace_id == root.context.trace_id])
        assert sorted(children) == sorted(STAGES)
        decode, queue = children["predictor.decode"], children["predictor.queue"]
        run, encode = children["predictor.inference"], children["predictor.encode"]
        # With a batcher: decoded on arrival, then queued until the batch leaves, which runs it.
        assert decode.end_time <= queue.start_time and queue.end_time == run.start_time
        assert run.end_time <= encode.start_time
        assert root.attributes["kpa.batch_size"] == 2 and root.attributes["kpa.batch_requests"] == 2
        assert root.attributes["kpa.model.version"] == "3" and run.attributes["kpa.batch_size"] == 2
        runs.append(run)
        waits.append((queue.end_time - queue.start_time) / 1e9)
    assert runs[0].start_time == runs[1].start_time, "one dispatch for both"
    assert SECOND_AFTER_S - 0.05 <= max(waits) < PAIR_DELAY_S / 2  # the first waited for the second


@pytest.mark.parametrize(
    "label, path, doc, status, failed, made",
    named([
        ("no such model: the request span only", "/v2/models/nope/infer", v2([1, 2, 3, 4]), 404, None,
         []),
        ("a body that does not decode: decode fails", "/v2/models/scale/infer", {"inputs": "x"}, 400,
         "predictor.decode", ["predictor.queue", "predictor.decode"]),
        ("the model raises: inference fails", "/v2/models/fragile/infer", v2([-1, 0, 0, 0]), 500,
         "predictor.inference", ["predictor.queue", "predictor.decode", "predictor.inference"]),
    ]),
)  # fmt: skip
def test_a_failure_shows_in_the_span_where_it_happened(traced, label, path, doc, status, failed, made):
    response = traced.post(path, doc)
    assert response.status_code == status, response.text
    root, children = tree(traced.spans())
    assert root.attributes["http.response.status_code"] == status
    assert sorted(children) == sorted(made)
    errors = {name for name, span in children.items() if span.status.status_code == StatusCode.ERROR}
    assert errors == ({failed} if failed else set())
    assert (root.status.status_code == StatusCode.ERROR) == (status >= 500)


def test_a_request_that_waits_for_its_model_to_load_on_demand_is_traced_alike(repository, tmp_path):
    """With a budget the model loads on the first request, and the answer is made after that wait."""
    with serving(repository, tmp_path / "cache", Budget(max_models=1)) as served:
        response = served.post("/v2/models/scale/infer", v2([1, 2, 3, 4]), {"traceparent": TRACEPARENT})
        assert response.status_code == 200, response.text
        assert "x-kpa-model-load" in response.headers  # it did wait for the load
        root, children = tree(served.spans())
    assert f"{root.context.trace_id:032x}" == TRACE_ID and sorted(children) == sorted(STAGES)
    assert root.attributes["kpa.model.version"] == "1" and root.attributes["kpa.batch_size"] == 1


# -- the process: settings from the environment, spans flushed at exit, off by default -------------


@pytest.mark.parametrize(
    "label, env, exported",
    named([
        ("an OTLP endpoint alone turns tracing on", {}, True),
        ("backend none turns it off, endpoint or not", {"TRACING_CONFIG_BACKEND": "none"}, False),
    ]),
)  # fmt: skip
def test_kpa_predictor_exports_to_the_otlp_endpoint_only_when_tracing_is_on(
    repository, tmp_path, monkeypatch, label, env, exported
):
    async def body() -> list:
        sink = OtlpSink()
        await sink.start()
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", sink.url.removesuffix("/v1/traces"))
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        predictor = PredictorProcess(repository, tmp_path / "cache")
        try:
            await asyncio.to_thread(predictor.start)
            status, _, _ = await asyncio.to_thread(
                predictor.request, "POST", "/v2/models/scale/infer", json.dumps(v2([1, 2, 3, 4])).encode(),
                {"traceparent": TRACEPARENT},
            )  # fmt: skip
            assert status == 200
        finally:
            assert await asyncio.to_thread(predictor.stop) == 0  # the batch still buffered goes at exit
            await sink.server.shutdown(0.0)
        return sink.spans

    spans = asyncio.run(body())
    if not exported:
        assert spans == []
        return
    assert {s.name for s in spans} == {"predictor.request", *STAGES}
    assert {(s.service, s.trace_id) for s in spans} == {("predictor", TRACE_ID)}
    (root,) = [s for s in spans if s.name == "predictor.request"]
    assert root.parent == CLIENT_SPAN and root.attributes["kpa.model.name"] == "scale"


def test_a_bad_tracing_setting_stops_kpa_predictor_at_start_naming_it(repository, tmp_path):
    env = {**os.environ, "TRACING_CONFIG_SAMPLE_RATE": "1.5"}
    done = subprocess.run(
        [sys.executable, "-m", "kpa", "predictor", "--model-repository", str(repository), "--port", "0",
         "--cache-dir", str(tmp_path)],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2
    assert 'TRACING_CONFIG_SAMPLE_RATE="1.5": must be from 0 to 1' in done.stderr


def test_with_tracing_off_the_predictor_does_not_import_opentelemetry():
    """Off costs nothing: the modules a request runs through never load the SDK or the API."""
    script = (
        "import sys; from predictor import batcher, cli, http_app, metrics, server; "
        "print([m for m in sys.modules if m.startswith('opentelemetry')])"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.strip() == "[]"
