"""The local stack under churn: pods removed while traffic flows, and pods that die."""

import asyncio
import os
import signal

from stack_fixtures import REVISION, client, row, run, running_stack, stack_text, wait_until

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
                await asyncio.sleep(2.0)
                victim, pids = sorted(stack.actuator.process_groups(REVISION).items())[0]
                kill_at = asyncio.get_running_loop().time()
                for pid in pids:
                    os.killpg(pid, signal.SIGKILL)
                return victim

            killer = asyncio.create_task(kill_one())
            try:
                result = await run_load(load, parse_phases(["conc:6:8"]), on_record=records.append)
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
