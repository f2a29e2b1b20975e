"""The dynamic batcher's shell: an asyncio queue in front of a model version's worker threads.

Requests wait in the event loop; ``batch_planner.plan`` says when to dispatch; the batch is concatenated,
run and split again on a worker thread, and each caller's future gets its own slice of every output.
No task lingers while the queue is empty — a timer exists only while a request waits for its delay.
``on_dispatch``, when set (``predictor.tracing``), hears of each batch as it leaves the queue.
"""

from __future__ import annotations

import asyncio
import functools
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from predictor.batch_planner import BatchPolicy, Dispatch, Queued, Wait, plan
from predictor.signature import BoundInputs

Execute = Callable[[list[np.ndarray], int], list[np.ndarray]]  # (inputs, number of requests) -> outputs
Submit = Callable[..., asyncio.Future]  # (function, *args) -> a loop future of function(*args), off the loop
OnDispatch = Callable[[list[BoundInputs]], None]  # the requests of a batch, as it goes to a worker


@dataclass
class _Pending:
    inputs: BoundInputs
    queued: Queued
    future: asyncio.Future


class DynamicBatcher:
    def __init__(self, policy: BatchPolicy, execute: Execute, submit: Submit, instances: int):
        self.policy = policy
        self._execute = execute
        self._submit = submit
        self._idle = instances
        self._queue: deque[_Pending] = deque()
        self._timer: asyncio.TimerHandle | None = None
        self.on_dispatch: OnDispatch | None = None  # called on the loop thread; None: nobody listens

    @property
    def queued(self) -> int:
        return len(self._queue)

    async def submit(self, inputs: BoundInputs) -> list[np.ndarray]:
        loop = asyncio.get_running_loop()
        pending = _Pending(inputs, Queued(loop.time(), inputs.batch_size, inputs.key), loop.create_future())
        self._queue.append(pending)
        self._pump()
        return await pending.future

    def _pump(self) -> None:
        loop = asyncio.get_running_loop()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        while True:
            decision = plan(self.policy, [p.queued for p in self._queue], loop.time(), self._idle)
            if isinstance(decision, Dispatch):
                batch = [self._queue.popleft() for _ in range(decision.count)]
                self._idle -= 1
                requests = [p.inputs for p in batch]
                if self.on_dispatch is not None:
                    self.on_dispatch(requests)
                done = self._submit(self._run, requests)
                done.add_done_callback(functools.partial(self._finished, batch))
                continue
            if isinstance(decision, Wait):
                self._timer = loop.call_at(decision.until, self._pump)
            return

    def _run(self, requests: list[BoundInputs]) -> list[list[np.ndarray]]:
        """Worker thread: one model call for all requests, then each request's rows of every output."""
        if len(requests) == 1:
            return [self._execute(requests[0].arrays, 1)]
        columns = zip(*(r.arrays for r in requests), strict=True)
        outputs = self._execute([np.concatenate(column) for column in columns], len(requests))
        sizes = [r.batch_size for r in requests]
        total = sum(sizes)
        for array in outputs:
            if array.ndim == 0 or array.shape[0] != total:
                raise RuntimeError(
                    f"a batched output has shape {list(array.shape)}, expected {total} rows first"
                )
        cuts = np.cumsum(sizes)[:-1]
        per_output = [np.split(array, cuts) for array in outputs]
        return [list(parts) for parts in zip(*per_output, strict=True)]

    def _finished(self, batch: list[_Pending], finished: asyncio.Future) -> None:
        self._idle += 1
        error = finished.exception()
        for index, pending in enumerate(batch):
            if pending.future.done():
                continue
            if error is not None:
                pending.future.set_exception(error)
            else:
                pending.future.set_result(finished.result()[index])
        self._pump()
