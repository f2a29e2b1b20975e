"""A policy of one's own, loaded by ``file.py:Class`` from a stack file, runs live on ``kpa up`` as in
the simulator; and a policy that fails never takes ``kpa up`` down: the last decision stays and the
status names the policy and its error."""

from __future__ import annotations

import asyncio
import textwrap
from pathlib import Path

import httpx
from stack_fixtures import run, running_stack, stack_text
from waiting import wait_until

ROOT = Path(__file__).resolve().parents[2]
WARM_POOL = ROOT / "examples" / "policies" / "warm_pool.py"


def with_policy(policy: str) -> str:
    return stack_text(delay=0.01, cc=4) + f"    policy: {policy}\n"


def test_the_warm_pool_example_keeps_a_pod_where_the_kpa_would_scale_to_zero(tmp_path):
    """Stable window 6 s, grace 1 s: the KPA would be at zero within about 10 s of idling."""

    async def scenario():
        text = with_policy(f"{{name: '{WARM_POOL}:WarmPool', pool: 1}}")
        async with running_stack(text, tmp_path / "logs") as stack:
            status = stack.service.status
            await wait_until(lambda: "warm pool" in status()[0].reason and status()[0].ready_pods == 1, 20)
            async with httpx.AsyncClient(timeout=20) as http:
                for _ in range(10):
                    answer = await http.get(stack.entry_url + "/", headers={"Host": "hello"})
                    assert answer.status_code == 200
            await wait_until(lambda: status()[0].reason == "warm pool: 0 busy + 1 warm", 15)
            await asyncio.sleep(10)  # idle longer than the KPA would take to reach zero
            row = status()[0]
            assert (row.ready_pods, row.requested_pods, row.mode) == (1, 1, "serve")

    run(scenario())


def test_a_failing_policy_keeps_the_last_decision_and_says_why(tmp_path):
    module = tmp_path / "boom.py"
    module.write_text(
        textwrap.dedent(
            """
            class Boom:
                def __init__(self, settings, now):
                    self.calls = 0

                def decide(self, seen):
                    self.calls += 1
                    if self.calls > 2:
                        raise RuntimeError("out of ideas")
                    return 1
            """
        )
    )

    async def scenario():
        async with running_stack(with_policy(f"'{module}:Boom'"), tmp_path / "logs") as stack:
            status = stack.service.status
            await wait_until(lambda: "out of ideas" in status()[0].reason, 20, lambda: status()[0].reason)
            row = status()[0]
            assert f"policy {module}:Boom failed" in row.reason and "keeping 1 pods" in row.reason
            await wait_until(lambda: status()[0].ready_pods == 1, 20)
            async with httpx.AsyncClient(timeout=20) as http:
                answer = await http.get(stack.entry_url + "/", headers={"Host": "hello"})
            assert answer.status_code == 200

    run(scenario())
