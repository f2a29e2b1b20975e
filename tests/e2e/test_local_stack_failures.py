"""The local stack under churn: pods removed while traffic flows, and pods that die."""

import asyncio
import os
import signal

from stack_fixtures import REVISION, client, row, run, running_stack, stack_text
from waiting import wait_until

from kpa.load import Record, parse_phases, run_load


def test_scaling_down_under_continuing_load_loses_no_request(tmp_path):
    """60 req/s of 50 ms work (concurrency 3) with a target of 1 need ~5 pods; the rate then drops to
    8 req/s and the revision shrinks while requests keep coming. Serve mode (target-burst-capacity 0)
    sends them straight to the queue-proxies, so this exercises the drain: out of routing first, then
    SIGTERM. (containerConcurrency 4 lets one pod absorb the ramp-up: with TBC 0 nothing else would.)"""

    async def scenario():
        text = stack_text(
            delay=0.05,
            cc=4,
            annotations={"target": "1", "max-scale": "6"},
            config={"target-burst-capacity": "0"},
        )
        async with running_stack(text, tmp_path) as stack:
            await wait_until(lambda: row(stack)["ready_pods"] == 1, 20, "the initial pod")
            peak = 0
            stopped_pods: set[str] = set()
            seen_pods: set[str] = set()

            async def watch():
                nonlocal peak
                while True:
                    pods = set(stack.actuator.process_groups(REVISION))
                    stopped_pods.update(seen_pods - pods)
                    seen_pods.update(pods)
                    peak = max(peak, row(stack)["ready_pods"])
                    await asyncio.sleep(0.1)

            watcher = asyncio.create_task(watch())
            load = client(stack)
            try:
                result = await run_load(load, parse_phases(["rate:60:8", "rate:8:14"]))
            finally:
                load.close()
                watcher.cancel()
            summary = result.summary()
            assert peak >= 3, f"never scaled up (peak {peak})"
            assert len(stopped_pods) >= 2, f"pods were not scaled down under load: {stopped_pods}"
            assert row(stack)["ready_pods"] < peak
            assert summary["failed"] == 0, summary["outcomes"]
            assert summary["requests"] == 60 * 8 + 8 * 14
            assert stack.entry.served_direct > 0  # serve mode was used, not only the activator

    run(scenario())


def test_sigkill_of_a_pod_mid_load_fails_fast_and_the_pod_is_replaced(tmp_path):
    """SIGKILL both processes of one of two pods while 6 clients keep it busy: the requests it held
    fail at once with 502/503 (no hang, no timeout), later requests succeed, and a new pod replaces it."""

    async def scenario():
        text = stack_text(delay=0.3, cc=2, annotations={"target": "2", "min-scale": "2", "max-scale": "2"})
        async with running_stack(text, tmp_path) as stack:
            await wait_until(lambda: row(stack)["ready_pods"] == 2, 20, "two ready pods")
            load = client(stack, timeout=20)
            records: list[Record] = []
            kill_at = 0.0

            async def kill_one():
                nonlocal kill_at
                await wait_until(lambda: len(records) >= 20, 10, "traffic flowing through both pods")
                victim, pids = sorted(stack.actuator.process_groups(REVISION).items())[0]
                kill_at = asyncio.get_running_loop().time()
                for pid in pids:
                    os.killpg(pid, signal.SIGKILL)
                return victim

            killer = asyncio.create_task(kill_one())
            try:
                result = await run_load(load, parse_phases(["conc:6:8"]), on_record=records.append)
            except BaseException:
                killer.cancel()
                raise
            finally:
                load.close()
            victim = await killer
            failures = [r for r in result.records if not 200 <= r.status < 300]
            assert all(r.status in (502, 503) for r in failures), [(r.status, r.error) for r in failures]
            assert len(failures) <= 6, f"more failures than requests in flight: {len(failures)}"
            assert all(r.latency < 2.0 for r in failures), "a failed request was not answered promptly"
            assert result.summary()["ok"] > 50
            pods = stack.actuator.process_groups(REVISION)
            assert victim not in pods and len(pods) == 2, pods
            assert row(stack)["ready_pods"] == 2
            failure = stack.actuator.last_failure(REVISION)
            assert failure is not None and failure.pod == victim and "killed by SIGKILL" in failure.reason
            assert kill_at > 0

    run(scenario())


def test_a_user_command_that_cannot_start_is_reported_and_retried_with_backoff(tmp_path):
    """A container that exits at once is reported with its exit code and output, and retried with
    growing delays (like CrashLoopBackOff), not in a hot loop; the stack itself keeps running."""

    async def scenario():
        crash = "import sys; print('boom: no model here', file=sys.stderr); sys.exit(3)"
        text = stack_text(delay=0.0, cc=1, command=["python", "-c", crash])
        async with running_stack(text, tmp_path) as stack:
            await wait_until(
                lambda: stack.actuator.last_failure(REVISION) is not None, 10, "a reported failure"
            )
            await asyncio.sleep(6.0)  # the window the retries are counted in: backoff is the behaviour
            failure = stack.actuator.last_failure(REVISION)
            assert "user container exited with code 3 before becoming ready" in failure.reason
            assert "boom: no model here" in failure.output_tail
            assert row(stack)["pod_failure"].endswith(failure.reason)
            attempts = len(list(tmp_path.glob("hello-*.queue-proxy.log")))
            assert 3 <= attempts <= 5, f"{attempts} attempts in ~6 s: backoff is not working"
            assert row(stack)["ready_pods"] == 0 and row(stack)["desired_pods"] == 1

    run(scenario())


def test_a_failing_scrape_records_nothing_and_the_revision_keeps_its_decision(tmp_path):
    """Scrapes of a pod whose stats endpoint fails raise ScrapeError naming the pod and the reason;
    the next decision still uses the windows' earlier data."""
    from autoscaler.actuator import PodInfo
    from autoscaler.revision import settings_from
    from autoscaler.service import AutoscalerService, ScrapeError
    from autoscaler.stat import Stat
    from httpengine.server import HttpServer

    class OnePod:
        """An actuator with one ready pod whose stats URL the test controls."""

        def __init__(self, stats_url: str) -> None:
            self.pod = PodInfo("hello-1", REVISION, "127.0.0.1:9", stats_url, 0.0, True)
            self.desired: list[int] = []

        def set_desired_scale(self, revision, desired):
            self.desired.append(desired)

        def desired_scale(self, revision):
            return self.desired[-1] if self.desired else 1

        def pods(self, revision):
            return [self.pod]

        def subscribe(self, listener):
            pass

    healthy = True

    async def stats(request, response):
        if healthy:
            body = Stat("hello-1", average_concurrent_requests=7.0, request_count=7.0).to_json()
            response.send(200, str(body).replace("'", '"').encode(), content_type=b"application/json")
        else:
            response.send(500, b"stats broken\n")

    async def scenario():
        nonlocal healthy
        server = HttpServer(stats)
        _, port = await server.start("127.0.0.1", 0)
        actuator = OnePod(f"http://127.0.0.1:{port}/stats")
        settings = settings_from({"autoscaling.knative.dev/target": "1"}, {"stable-window": "6s"}, 0)
        service = AutoscalerService(actuator)
        service.add_revision(REVISION, settings)
        try:
            await service.start()
            stat = await service.scrape(actuator.pods(REVISION), settings.stable_window)
            assert stat.pod_name == "service-scraper" and stat.average_concurrent_requests == 7.0
            service.record_pushed([(REVISION, stat)])
            first = service.decide_now(REVISION)
            assert first.valid and first.desired_pods == 10  # ceil(7 / 0.7)
            healthy = False
            try:
                await service.scrape(actuator.pods(REVISION), settings.stable_window)
            except ScrapeError as exc:
                assert "hello-1: HTTP 500" in str(exc) and "0 of 1 sampled pods answered" in str(exc)
            else:
                raise AssertionError("a failing scrape must raise ScrapeError")
            await server.shutdown(0.1)
            try:
                await service.scrape(actuator.pods(REVISION), settings.stable_window)
            except ScrapeError as exc:
                assert "connection refused" in str(exc)
            later = service.decide_now(REVISION)
            assert later.valid and later.desired_pods == 10
        finally:
            await service.close()
            await server.shutdown(0)  # at once if the test already shut it down

    run(scenario())
