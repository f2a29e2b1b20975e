"""What a scrape of ``/metrics`` costs, and what counting one request costs on the hot path.

Run from the repository root: ``python benchmarks/bench_metrics.py [--revisions 1000]``. It builds an
activator and an autoscaler service in process (no sockets) holding N revisions with traffic counted
for each (two response codes and a capacity wait per revision on the activator; a pushed stat and a
decision per revision on the autoscaler), then times ``metrics_text()`` of each (the activator admin
port's body; ``kpa up``'s admin ``/metrics`` is both), best and median of repeated renders. The hot
path is the per-request update each component makes (``RequestMetrics.observe`` and ``reject`` in the
queue-proxy, ``observe_request`` and ``observe_wait`` in the activator), in ns per call.

Only the stable public names are used, so the same script measures a tree before and after a change
(``PYTHONPATH=<other tree> python benchmarks/bench_metrics.py``) in one session: absolute figures on a
shared 2-core machine drift, ratios taken in one run compare.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import timeit
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import machine

from activator.config import RevisionConfig
from activator.server import Activator
from autoscaler.actuator import PodInfo
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


def render_ms(render: object, repeats: int) -> tuple[float, float, int]:
    """(best, median) milliseconds of ``render()`` and the size of its text."""
    times = []
    size = 0
    for _ in range(repeats):
        started = time.perf_counter()
        text = render()  # type: ignore[operator]
        times.append((time.perf_counter() - started) * 1e3)
        size = len(text)
    return min(times), statistics.median(times), size


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
    print(f"render of /metrics with {n} revisions, ms (best / median of {args.repeats}), bytes:")
    activator, service = activator_with(n), service_with(n)
    for label, render in (("activator admin", activator.metrics_text), ("autoscaler", service.metrics_text)):
        best, median, size = render_ms(render, args.repeats)
        print(f"  {label:<20} {best:8.2f} / {median:8.2f}   {size:>9,}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
