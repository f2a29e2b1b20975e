"""What a scrape of ``/metrics`` costs, and what counting one request costs on the hot path.

Run from the repository root: ``python benchmarks/bench_metrics.py [--revisions 1000]``. It builds an
activator and an autoscaler service in process (no sockets) holding N revisions with traffic counted
for each (two response codes and a capacity wait per revision on the activator; a pushed stat and a
decision per revision on the autoscaler), then renders each one's ``/metrics`` body both ways: all of it
on the event loop (as before), and with only the reading of live state there and the rest in a thread
(``autoscaler.exposition``, what the servers do); for each, the render's time and the longest the event
loop went without running a 1 ms ticker (what a request being served waits at worst). The hot
path is the per-request update each component makes (``RequestMetrics.observe`` and ``reject`` in the
queue-proxy, ``observe_request`` and ``observe_wait`` in the activator), in ns per call.

Only the stable public names are used, so the same script measures a tree before and after a change
(``PYTHONPATH=<other tree> python benchmarks/bench_metrics.py``) in one session: absolute figures on a
shared 2-core machine drift, ratios taken in one run compare.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
import timeit
from collections.abc import Awaitable, Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import machine

from activator.config import RevisionConfig
from activator.server import Activator
from autoscaler.actuator import PodInfo
from autoscaler.exposition import exposition, exposition_off_loop
from autoscaler.revision import settings_from
from autoscaler.service import AutoscalerService
from autoscaler.stat import RevisionKey, Stat
from queueproxy.metrics import RequestMetrics


class _TwoPods:
    """An actuator whose every revision has two ready pods and wants two."""

    def set_desired_scale(self, revision: RevisionKey, desired: int) -> None:
        pass

    def desired_scale(self, revision: RevisionKey) -> int:
        return 2

    def pods(self, revision: RevisionKey) -> list[PodInfo]:
        return [
            PodInfo(f"{revision.name}-{i}", revision, f"127.0.0.1:{9000 + i}", "", 0.0, True) for i in (1, 2)
        ]

    def subscribe(self, listener: object) -> None:
        pass


def activator_with(revisions: int) -> Activator:
    activator = Activator()
    for i in range(revisions):
        name = f"revision-{i:04d}"
        activator.set_revision(RevisionConfig(name, namespace="default", container_concurrency=4))
        for code in (200, 503):
            activator.metrics.observe_request("default", name, code, 4.2)
        activator.metrics.observe_wait("default", name, 0.003 * (i % 50), cold=i % 2 == 0)
    return activator


def service_with(revisions: int) -> AutoscalerService:
    service = AutoscalerService(_TwoPods(), clock=lambda: 1000.0)  # type: ignore[arg-type]
    settings = settings_from({"autoscaling.knative.dev/target": "10"}, {}, 0)
    refs = [RevisionKey("default", f"revision-{i:04d}") for i in range(revisions)]
    for ref in refs:
        service.add_revision(ref, settings)
    service.record_pushed((ref, Stat(f"{ref.name}-1", average_concurrent_requests=7.25)) for ref in refs)
    for ref in refs:
        service.decide_now(ref)
    return service


async def render_ms(render: Callable[[], Awaitable[bytes]], repeats: int) -> tuple[float, float, int]:
    """(median milliseconds of ``await render()``, median of the longest time the event loop went
    without running a 1 ms ticker during each render, the size of its text)."""
    walls: list[float] = []
    stalls: list[float] = []
    size = 0
    longest = 0.0

    async def ticker() -> None:
        nonlocal longest
        last = time.perf_counter()
        while True:
            await asyncio.sleep(0.001)
            now = time.perf_counter()
            longest = max(longest, now - last)
            last = now

    ticking = asyncio.create_task(ticker())
    try:
        for _ in range(repeats):
            await asyncio.sleep(0.005)
            longest = 0.0
            started = time.perf_counter()
            size = len(await render())
            walls.append((time.perf_counter() - started) * 1e3)
            await asyncio.sleep(0.002)  # the ticker's turn after the render
            stalls.append(longest * 1e3)
    finally:
        ticking.cancel()
    return statistics.median(walls), statistics.median(stalls), size


def per_call_ns(statement: str, env: dict[str, object], number: int = 200_000) -> float:
    return min(timeit.repeat(statement, globals=env, number=number, repeat=5)) / number * 1e9


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--revisions", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args(argv)
    print(machine())
    print(f"code under test: {Path(sys.modules['queueproxy.metrics'].__file__ or '').parent.parent}")
    requests = RequestMetrics("hello-00001-deployment-abc")
    env: dict[str, object] = {"requests": requests, "counters": activator_with(0).metrics}
    print("hot path, ns per call (best of 5):")
    for statement in (
        "requests.observe(200, 3.7)",
        "requests.observe_app(200, 3.1)",
        "requests.reject()",
        "counters.observe_request('default', 'hello', 200, 4.2)",
        "counters.observe_wait('default', 'hello', 0.004, False)",
    ):
        print(f"  {statement:<50} {per_call_ns(statement, env):7.1f}")
    n = args.revisions
    print(f"/metrics with {n} revisions: median of {args.repeats} renders; 'loop held' is the longest the")
    print("event loop went without running a 1 ms ticker during a render (what a request waits at worst):")
    activator, service = activator_with(n), service_with(n)
    for label, collectors in (("activator", [activator.metrics]), ("autoscaler", [service.metrics])):

        async def on_loop(collectors: list = collectors) -> bytes:
            return exposition(collectors)  # the render before: all of it on the loop

        async def off_loop(collectors: list = collectors) -> bytes:
            return await exposition_off_loop(collectors)

        base_wall, base_held, size = asyncio.run(render_ms(on_loop, args.repeats))
        wall, held, _ = asyncio.run(render_ms(off_loop, args.repeats))
        print(
            f"  {label:<11} {size:>11,} bytes  on the loop: {base_wall:7.1f} ms, loop held "
            f"{base_held:7.1f} ms | off the loop: {wall:7.1f} ms, loop held {held:6.1f} ms "
            f"({base_held / held:5.1f}x shorter)"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
