"""The dynamic batcher's decision (pure, time passed in) and its asyncio shell on a real event loop."""

import asyncio
import threading

import numpy as np
import pytest
from waiting import wait_until

from predictor.batch_planner import BatchPolicy, Dispatch, Queued, Wait, plan
from predictor.batcher import DynamicBatcher
from predictor.signature import BoundInputs
from predictor.workers import Workers

POLICY = BatchPolicy(max_batch_size=8, max_queue_delay_s=0.010)


def _queue(*items: tuple[float, int]) -> list[Queued]:
    return [Queued(arrival, size, "k") for arrival, size in items]


@pytest.mark.parametrize(
    ("policy", "queue", "now", "idle", "decision"),
    [
        (POLICY, [], 0.0, 1, None),
        (POLICY, _queue((0.0, 1)), 0.0, 0, None),
        (POLICY, _queue((0.0, 1)), 0.001, 1, Wait(0.010)),
        (POLICY, _queue((0.0, 1), (0.002, 2)), 0.010, 1, Dispatch(2, 3)),
        (POLICY, _queue((0.0, 4), (0.001, 4)), 0.001, 1, Dispatch(2, 8)),
        (POLICY, _queue((0.0, 4), (0.001, 3), (0.002, 2)), 0.002, 1, Dispatch(2, 7)),
        (BatchPolicy(8, 0.0), _queue((0.0, 1)), 0.0, 1, Dispatch(1, 1)),
        (BatchPolicy(8, 0.0), _queue((0.0, 1), (0.0, 1), (0.0, 1)), 0.0, 1, Dispatch(3, 3)),
        (BatchPolicy(8, 0.010, (2, 4)), _queue((0.0, 1), (0.0, 1), (0.0, 1)), 0.001, 1, Dispatch(2, 2)),
        (
            BatchPolicy(8, 0.010, (2, 4)),
            _queue((0.0, 1), (0.0, 1), (0.0, 1), (0.0, 1)),
            0.001,
            1,
            Dispatch(4, 4),
        ),
        (BatchPolicy(8, 0.010, (2,)), _queue((0.0, 1)), 0.001, 1, Wait(0.010)),
        (BatchPolicy(2, 0.010), _queue((0.0, 5)), 0.0, 1, Dispatch(1, 5)),
    ],
    ids=[
        "empty-queue-does-nothing",
        "no-free-instance-does-nothing",
        "lone-request-waits-for-its-delay",
        "delay-expired-dispatches-what-is-there",
        "full-batch-goes-at-once",
        "next-request-that-does-not-fit-closes-the-batch",
        "zero-delay-dispatches-at-once",
        "zero-delay-takes-everything-queued",
        "preferred-size-goes-at-once",
        "largest-preferred-size-wins",
        "below-preferred-size-waits",
        "oversized-head-still-goes-alone",
    ],
)
def test_plan(policy, queue, now, idle, decision):
    assert plan(policy, queue, now, idle) == decision


def test_requests_with_different_shapes_never_share_a_batch():
    queue = [Queued(0.0, 1, "a"), Queued(0.0, 1, "b"), Queued(0.0, 1, "a")]
    assert plan(POLICY, queue, 0.0, 1) == Dispatch(1, 1)


def _bound(value: float, rows: int = 1) -> BoundInputs:
    return BoundInputs([np.full((rows, 2), value, np.float32)], rows)


def test_shell_runs_one_model_call_for_concurrent_requests_and_splits_the_answers():
    calls: list[int] = []
    running = threading.Event()
    gate = threading.Event()

    def execute(arrays: list[np.ndarray], requests: int) -> list[np.ndarray]:
        running.set()
        gate.wait(5)
        calls.append(len(arrays[0]))
        return [arrays[0] * 10]

    async def scenario() -> list[list[np.ndarray]]:
        workers = Workers(1, "test")
        batcher = DynamicBatcher(BatchPolicy(8, 0.0), execute, workers.submit, instances=1)
        try:
            first = asyncio.ensure_future(batcher.submit(_bound(1.0)))
            await wait_until(running.is_set, what="the first call to run (held at the gate)")
            rest = [
                asyncio.ensure_future(batcher.submit(_bound(v, rows))) for v, rows in ((2.0, 2), (3.0, 1))
            ]
            # ... so these queue up behind the one busy instance, and go together
            await wait_until(lambda: batcher.queued == 2, what="the two later requests queued")
            gate.set()
            return await asyncio.gather(first, *rest)
        finally:
            gate.set()
            workers.shutdown()

    first, second, third = asyncio.run(scenario())
    assert calls == [1, 3]
    assert first[0].tolist() == [[10.0, 10.0]]
    assert second[0].tolist() == [[20.0, 20.0], [20.0, 20.0]]
    assert third[0].tolist() == [[30.0, 30.0]]


def test_shell_fails_every_request_of_a_failed_batch_and_keeps_serving():
    def execute(arrays: list[np.ndarray], requests: int) -> list[np.ndarray]:
        if (arrays[0] < 0).any():
            raise ValueError("negative input")
        return [arrays[0]]

    async def scenario():
        workers = Workers(1, "test")
        batcher = DynamicBatcher(BatchPolicy(8, 0.020), execute, workers.submit, instances=1)
        try:
            bad = await asyncio.gather(
                batcher.submit(_bound(-1.0)), batcher.submit(_bound(2.0)), return_exceptions=True
            )
            return bad, await batcher.submit(_bound(4.0))
        finally:
            workers.shutdown()

    bad, good = asyncio.run(scenario())
    assert all(isinstance(result, ValueError) for result in bad)
    assert good[0].tolist() == [[4.0, 4.0]]
