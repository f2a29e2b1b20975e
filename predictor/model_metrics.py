"""The multi-model pod's counters and their ``/metrics`` families.

* ``kpa_predictor_model_state{model_name, state}`` — 1 for the model's KServe activeModelState, 0 for the
  other four (Pending, Standby, Loading, Loaded, FailedToLoad); every mode.
* With a budget (``--memory-budget`` / ``--max-models``): ``kpa_predictor_model_cache_hits_total`` and
  ``kpa_predictor_model_cache_misses_total`` (requests that found their model loaded, or waited for its
  load), ``kpa_predictor_model_evictions_total`` (unloaded to make room), the histogram
  ``kpa_predictor_model_load_wait_seconds`` (how long each miss waited) and the gauge
  ``kpa_predictor_resident_bytes`` (each resident model's measured size), all by ``model_name``.

The counters change on the event loop thread only (requests are held and released there), and
``/metrics`` is rendered there too, so they need no lock.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from itertools import accumulate

from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from predictor.model_status import MODEL_STATES

LOAD_WAIT_BUCKETS: tuple[float, ...] = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


@dataclass
class CacheCounters:
    hits: Counter = field(default_factory=Counter)
    misses: Counter = field(default_factory=Counter)
    loads: Counter = field(default_factory=Counter)  # loads started for requests or the load API
    evictions: Counter = field(default_factory=Counter)
    wait_buckets: dict[str, list[int]] = field(default_factory=dict)
    wait_sums: dict[str, float] = field(default_factory=dict)

    def waited(self, model: str, seconds: float) -> None:
        buckets = self.wait_buckets.setdefault(model, [0] * (len(LOAD_WAIT_BUCKETS) + 1))
        buckets[bisect_left(LOAD_WAIT_BUCKETS, seconds)] += 1
        self.wait_sums[model] = self.wait_sums.get(model, 0.0) + seconds

    def of(self, model: str) -> dict[str, int]:
        return {
            "hits": self.hits[model],
            "misses": self.misses[model],
            "loads": self.loads[model],
            "evictions": self.evictions[model],
        }


def state_family(states: Iterable[tuple[str, str]]) -> Metric:
    """``(model name, active state)`` pairs as one 0/1 gauge per model and state."""
    family = GaugeMetricFamily(
        "kpa_predictor_model_state",
        "1 for the model's KServe activeModelState, 0 for the others.",
        labels=("model_name", "state"),
    )
    for model, active in states:
        for state in MODEL_STATES:
            family.add_metric((model, state), float(state == active))
    return family


def cache_families(counters: CacheCounters, resident: Iterable[tuple[str, int]]) -> Iterator[Metric]:
    """The budget's families; ``resident`` gives each resident model's bytes."""
    for name, help_text, counts in (
        ("kpa_predictor_model_cache_hits", "Requests that found their model loaded.", counters.hits),
        ("kpa_predictor_model_cache_misses", "Requests that waited for a model load.", counters.misses),
        ("kpa_predictor_model_evictions", "Models unloaded to make room in the budget.", counters.evictions),
    ):
        family = CounterMetricFamily(name, help_text, labels=("model_name",))
        for model, count in sorted(counts.items()):
            family.add_metric((model,), count)
        yield family
    waits = HistogramMetricFamily(
        "kpa_predictor_model_load_wait_seconds",
        "How long a request waited for its model to load (s).",
        labels=("model_name",),
    )
    le = (*(repr(float(bound)) for bound in LOAD_WAIT_BUCKETS), "+Inf")
    for model, buckets in sorted(counters.wait_buckets.items()):
        waits.add_metric((model,), list(zip(le, accumulate(buckets), strict=True)), counters.wait_sums[model])
    yield waits
    sizes = GaugeMetricFamily(
        "kpa_predictor_resident_bytes", "Measured size of each loaded model (bytes).", labels=("model_name",)
    )
    for model, size in sorted(resident):
        sizes.add_metric((model,), size)
    yield sizes
