"""The predictor's ``GET /metrics``: KServe's per-model latency histograms and our batch and request counts.

KServe's Python model server exports ``request_preprocess_seconds``, ``request_predict_seconds`` and
``request_postprocess_seconds`` (histograms, label ``model_name``, prometheus-client's default buckets);
here they time decode, inference and encode. KServe's ``request_explain_seconds`` is left out: nothing
here explains. Ours: ``kpa_predictor_batch_size`` (examples per model call, read at scrape time from the
versions' own counters) and ``kpa_predictor_requests_total{model_name, response_code}`` (inference
requests by status; a 404 for a model that does not exist is not counted); each model's KServe state and,
with a memory budget, the model cache's families (predictor.model_metrics).

Per request only plain lists and dicts change, under one lock (decode and encode may run on a model's
worker threads); prometheus-client runs only when ``/metrics`` is scraped, from this app's own registry.
"""

from __future__ import annotations

import threading
import time
from bisect import bisect_left
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Iterator
from itertools import accumulate
from typing import TYPE_CHECKING, Any, TypeVar

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.metrics_core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from predictor.model_metrics import cache_families, state_family

if TYPE_CHECKING:
    from predictor.manager import ModelManager

SECONDS_BUCKETS: tuple[float, ...] = tuple(Histogram.DEFAULT_BUCKETS[:-1])  # KServe's: the library default
BATCH_BUCKETS: tuple[float, ...] = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
STAGES = ("request_preprocess_seconds", "request_predict_seconds", "request_postprocess_seconds")
_STAGE_HELP = (
    "Time to decode a request into model inputs (s).",
    "Time from decoded inputs to the model's outputs: worker or batch wait and inference (s).",
    "Time to encode the model's outputs into the response (s).",
)
CONTENT_TYPE = b"text/plain; version=0.0.4; charset=utf-8"

Answer = TypeVar("Answer", bound=tuple)  # (status, body, headers)
Encoded = TypeVar("Encoded")  # what an encode makes: a REST answer or a gRPC response message


def _le(bounds: Iterable[float]) -> tuple[str, ...]:
    return (*(repr(float(bound)) for bound in bounds), "+Inf")


class _Stages:
    """One model's three stage histograms: bucket counts and sums, per stage."""

    __slots__ = ("buckets", "sums")

    def __init__(self) -> None:
        self.buckets = [[0] * (len(SECONDS_BUCKETS) + 1) for _ in STAGES]
        self.sums = [0.0] * len(STAGES)


class PredictorMetrics(Collector):
    """Counts per model; ``batch_sizes`` yields ``(model name, Counter of examples per call)`` per served
    version when scraped."""

    def __init__(
        self,
        batch_sizes: Callable[[], Iterable[tuple[str, Counter]]] = tuple,
        models: Callable[[], Iterable[Metric]] = tuple,  # the model states and budget (model_families)
    ) -> None:
        self.batch_sizes = batch_sizes
        self.models = models
        self.stages: dict[str, _Stages] = {}
        self.requests: dict[tuple[str, int], int] = {}
        self._lock = threading.Lock()
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self)

    def _observe(self, model: str, stage: int, seconds: float) -> None:
        with self._lock:
            stages = self.stages.get(model)
            if stages is None:
                stages = self.stages[model] = _Stages()
            stages.buckets[stage][bisect_left(SECONDS_BUCKETS, seconds)] += 1
            stages.sums[stage] += seconds

    def timed(
        self, model: str, decode: Callable[[], Any], encode: Callable[[Any, list], Encoded]
    ) -> tuple[Callable[[], Any], Callable[[Any, list], Encoded]]:
        """``decode`` and ``encode`` that time themselves, and the inference between them."""
        decoded_at = 0.0

        def timed_decode() -> Any:
            nonlocal decoded_at
            started = time.perf_counter()
            result = decode()
            decoded_at = time.perf_counter()
            self._observe(model, 0, decoded_at - started)
            return result

        def timed_encode(context: Any, outputs: list) -> Encoded:
            started = time.perf_counter()
            self._observe(model, 1, started - decoded_at)
            answer = encode(context, outputs)
            self._observe(model, 2, time.perf_counter() - started)
            return answer

        return timed_decode, timed_encode

    def counted(
        self,
        model: str,
        serve: Callable[[], Answer | Awaitable[Answer]],
        failed: Callable[[Exception], Answer],
    ) -> Answer | Awaitable[Answer]:
        """``serve()``'s answer, counted by status once known; ``failed`` turns an exception into the
        answer the client gets (counted by its status, and given instead of the exception)."""
        try:
            outcome = serve()
        except Exception as exc:
            outcome = failed(exc)
        if isinstance(outcome, tuple):
            self.count(model, outcome[0])
            return outcome
        return self._counted_later(model, outcome, failed)

    async def _counted_later(
        self, model: str, outcome: Awaitable[Answer], failed: Callable[[Exception], Answer]
    ) -> Answer:
        try:
            answer = await outcome
        except Exception as exc:
            answer = failed(exc)
        self.count(model, answer[0])
        return answer

    def count(self, model: str, status: int) -> None:
        """One inference request for ``model`` answered ``status`` (REST's; gRPC's as REST's would be)."""
        if status == 404:  # no such model: not a series, or any client could add as many as it likes
            return
        key = (model, status)
        with self._lock:
            self.requests[key] = self.requests.get(key, 0) + 1

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            stages = {model: (list(map(list, s.buckets)), list(s.sums)) for model, s in self.stages.items()}
            requests = dict(self.requests)
        le = _le(SECONDS_BUCKETS)
        for index, (name, help_text) in enumerate(zip(STAGES, _STAGE_HELP, strict=True)):
            family = HistogramMetricFamily(name, help_text, labels=("model_name",))
            for model, (buckets, sums) in sorted(stages.items()):
                cumulative = list(zip(le, accumulate(buckets[index]), strict=True))
                family.add_metric((model,), cumulative, sums[index])
            yield family
        by_model: dict[str, Counter] = {}
        for model, sizes in self.batch_sizes():
            by_model.setdefault(model, Counter()).update(sizes)
        batches = HistogramMetricFamily(
            "kpa_predictor_batch_size", "Examples per model call (the batches run).", labels=("model_name",)
        )
        for model, sizes in sorted(by_model.items()):
            counts = [0] * (len(BATCH_BUCKETS) + 1)
            for size, calls in sizes.items():
                counts[bisect_left(BATCH_BUCKETS, size)] += calls
            total = float(sum(size * calls for size, calls in sizes.items()))
            cumulative = list(zip(_le(BATCH_BUCKETS), accumulate(counts), strict=True))
            batches.add_metric((model,), cumulative, total)
        yield batches
        counted = CounterMetricFamily(
            "kpa_predictor_requests", "Inference requests answered, by model and status.",
            labels=("model_name", "response_code"),
        )  # fmt: skip
        for (model, status), count in sorted(requests.items()):
            counted.add_metric((model, str(status)), count)
        yield counted
        yield from self.models()

    def render(self) -> bytes:
        """The Prometheus text exposition (format 0.0.4) of the predictor's metrics."""
        return generate_latest(self.registry)


def model_families(manager: ModelManager) -> Iterator[Metric]:
    """Each model's KServe state and, with a budget, hits, misses, evictions, load waits and resident
    bytes (predictor.model_metrics)."""
    yield state_family(manager.active_states())
    if manager.cache:
        yield from cache_families(manager.counters, manager.resident_bytes())


def served_batch_sizes(manager: ModelManager) -> Iterator[tuple[str, Counter]]:
    """Each served version's examples-per-call counts (a copy: worker threads add to them)."""
    for name in manager.names():
        for version in list(manager.entry(name).versions.values()):
            yield name, version.stats.batch_sizes.copy()
