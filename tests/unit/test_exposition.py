"""A scrape renders ``/metrics`` off the event loop: the text is the same as rendered on it, a snapshot
keeps the counts of its moment, live state is read on the loop's thread and the rest happens on
another, and the loop keeps serving while a large body renders."""

import asyncio
import threading
import time
from collections.abc import Iterator

from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from activator.metrics import ActivatorMetrics, RevisionGauges
from autoscaler.exposition import exposition, exposition_off_loop


def busy_activator(revisions: int) -> ActivatorMetrics:
    rows = [RevisionGauges("ns", f"rev-{i:04d}", 1, 2, 8, 2) for i in range(revisions)]
    metrics = ActivatorMetrics(lambda: rows, lambda: 3, pod_name="act-1")
    for row in rows:
        for code in (200, 503):
            metrics.observe_request("ns", row.revision, code, 4.2)
        metrics.observe_wait("ns", row.revision, 0.02, cold=True)
    return metrics


class ThreadRecorder(Collector):
    """A plain collector (no snapshot) that notes the thread it was collected on."""

    def __init__(self) -> None:
        self.threads: list[int] = []

    def collect(self) -> Iterator[Metric]:
        self.threads.append(threading.get_ident())
        yield GaugeMetricFamily("recorded", "The thread that collected it.", value=1)


def test_the_text_rendered_off_the_loop_is_the_text_rendered_on_it():
    metrics = busy_activator(20)
    recorder = ThreadRecorder()
    assert asyncio.run(exposition_off_loop([metrics, recorder])) == exposition([metrics, recorder])


def test_knative_counters_lose_the_total_suffix_and_ours_keep_it():
    text = exposition([busy_activator(2)]).decode()
    assert "# TYPE activator_request_count counter" in text
    assert "activator_request_count_total" not in text
    assert "kpa_activator_stat_push_failures_total" in text


def test_a_snapshot_renders_the_counts_and_gauges_of_its_moment():
    held = [RevisionGauges("ns", "hello", 1, 0, 4, 1)]
    metrics = ActivatorMetrics(lambda: held, lambda: 0)
    metrics.observe_request("ns", "hello", 200, 3.0)
    frozen = metrics.snapshot()
    before = exposition([frozen])
    metrics.observe_request("ns", "hello", 200, 3.0)
    metrics.observe_wait("ns", "hello", 1.5, cold=True)
    held[0] = RevisionGauges("ns", "hello", 9, 9, 4, 1)
    assert exposition([frozen]) == before
    assert exposition([metrics]) != before


def test_live_state_is_read_on_the_loop_thread_and_the_snapshot_collected_elsewhere():
    collected_on: list[int] = []

    class Recording(ActivatorMetrics):
        def collect(self) -> Iterator[Metric]:
            collected_on.append(threading.get_ident())
            return super().collect()

    metrics = Recording()
    metrics.snapshot = lambda: Recording()  # type: ignore[method-assign]
    recorder = ThreadRecorder()

    async def scrape() -> int:
        await exposition_off_loop([metrics, recorder])
        return threading.get_ident()

    loop_thread = asyncio.run(scrape())
    assert recorder.threads == [loop_thread]  # a plain collector reads live state: on the loop
    assert len(collected_on) == 1 and collected_on[0] != loop_thread  # a snapshot: in the worker


def test_the_event_loop_keeps_serving_while_a_large_scrape_renders():
    metrics = busy_activator(1000)  # ~20 MB of text, most of a second of CPU

    async def ticks_during(render) -> tuple[int, float]:
        ticks = 0
        stop = asyncio.Event()

        async def ticker() -> None:
            nonlocal ticks
            while not stop.is_set():
                await asyncio.sleep(0.001)
                ticks += 1

        task = asyncio.create_task(ticker())
        await asyncio.sleep(0)
        started = time.perf_counter()
        await render()
        took = time.perf_counter() - started
        stop.set()
        await task
        return ticks, took

    async def on_loop() -> bytes:
        return exposition([metrics])

    async def off_loop() -> bytes:
        return await exposition_off_loop([metrics])

    blocked, _ = asyncio.run(ticks_during(on_loop))
    served, took = asyncio.run(ticks_during(off_loop))
    assert blocked <= 1  # on the loop, nothing else runs until the text is done
    # Off it, the loop gets the GIL back every few ms: at least one tick per 50 ms of rendering.
    assert served >= max(5, int(took / 0.05)), (served, took)
