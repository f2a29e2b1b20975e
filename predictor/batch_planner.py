"""The dynamic batcher's decision, as a pure function of the queue and the clock.

Triton's rule, which this follows: when a model instance is free, take requests from the head of the
queue (all with the same per-example shapes, never more than ``max_batch_size`` examples). Dispatch at
once if that batch is full, hits a preferred size, or cannot grow because the next request does not
fit; otherwise wait until the oldest request has waited ``max_queue_delay`` and dispatch what is there.
With a zero delay a free instance takes whatever is queued, so batches form only under load.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class BatchPolicy:
    max_batch_size: int
    max_queue_delay_s: float = 0.0
    preferred_sizes: tuple[int, ...] = ()


@dataclass(frozen=True)
class Queued:
    arrival: float
    size: int  # examples in this request (its batch dimension)
    key: Hashable  # requests batch together only when their keys are equal


@dataclass(frozen=True)
class Dispatch:
    count: int  # requests taken from the head of the queue
    size: int  # examples in the batch


@dataclass(frozen=True)
class Wait:
    until: float


def plan(
    policy: BatchPolicy, queue: Sequence[Queued], now: float, idle_instances: int
) -> Dispatch | Wait | None:
    """What to do now: dispatch a batch, wait until a deadline, or nothing (no request, no free instance)."""
    if not queue or idle_instances <= 0:
        return None
    head = queue[0]
    count, size, preferred = 0, 0, None
    blocked = False
    for item in queue:
        if item.key != head.key or size + item.size > policy.max_batch_size:
            blocked = True
            break
        count += 1
        size += item.size
        if size in policy.preferred_sizes:
            preferred = Dispatch(count, size)
    if count == 0:  # an oversized head (callers check sizes first) still goes, alone
        return Dispatch(1, head.size)
    if size == policy.max_batch_size or blocked:
        return Dispatch(count, size)
    if now >= head.arrival + policy.max_queue_delay_s:
        return Dispatch(count, size)
    if preferred is not None:
        return preferred
    return Wait(head.arrival + policy.max_queue_delay_s)
