"""A ``/metrics`` body rendered without holding the event loop for the length of a large scrape.

An activator routing 1,000 busy revisions exports about 60,000 samples (Knative's latency histogram
per revision and response code, eight labels on each): most of a second of CPU to collect and format
with prometheus-client. Done on the event loop, every request the process is serving waits that long,
once per scrape. Here the live state is only *read* on the loop — a collector with ``snapshot()``
copies its counts (milliseconds), any other has its families gathered there — and the families are
built and formatted in a worker thread. The thread shares the GIL, but the interpreter hands it over
every few milliseconds (``sys.getswitchinterval``), so requests keep flowing while a scrape renders.

Every body gets Knative's unsuffixed counter names (:func:`autoscaler.stat.knative_counter_names`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Iterator
from typing import Protocol, runtime_checkable

from prometheus_client import generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from autoscaler.stat import KNATIVE_UNSUFFIXED_COUNTERS, knative_counter_names


@runtime_checkable
class Snapshotting(Protocol):
    """A collector that can hand out a copy of its state, cheap to take, whose ``collect()`` reads only
    that copy — so it may run on another thread while the original keeps counting."""

    def snapshot(self) -> Collector: ...


class _Gathered(Collector):
    """Families already collected (as a registry, for ``generate_latest``)."""

    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterator[Metric]:
        return iter(self._families)


def exposition(collectors: Iterable[Collector]) -> bytes:
    """The Prometheus text (format 0.0.4) of ``collectors``' families, rendered on the calling thread.

    Family by family, and Knative's counter names rewritten only in the text of those counters: one
    regular expression over a 20 MB body holds the GIL for a tenth of a second, the loop's thread with it.
    """
    parts = []
    for collector in collectors:
        for family in collector.collect():
            text = generate_latest(_Gathered([family]))  # type: ignore[arg-type]
            parts.append(knative_counter_names(text) if family.name in KNATIVE_UNSUFFIXED_COUNTERS else text)
    return b"".join(parts)


async def exposition_off_loop(collectors: Iterable[Collector]) -> bytes:
    """:func:`exposition`, with only the reading of live state on the event loop and the rest in a thread."""
    detached: list[Collector] = [
        collector.snapshot() if isinstance(collector, Snapshotting) else _Gathered(list(collector.collect()))
        for collector in collectors
    ]
    return await asyncio.to_thread(exposition, detached)
