"""Running `kpa load`'s phases against a client: open loop on schedule, closed loop for ``conc`` phases.

Open loop matters for autoscaling: a closed-loop client slows down when the service slows down and
so hides exactly the queueing the autoscaler must react to. Requests here are sent at their
scheduled instants whatever the state of earlier ones, and latency is measured from the scheduled
instant, so time spent waiting for a free connection counts (no coordinated omission).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from kpa.load_client import Client
from kpa.load_phases import Phase, send_offsets
from kpa.load_report import LoadResult, Record


@dataclass
class Progress:
    """Live counters a progress display reads while the run goes on."""

    phase: int = 0
    sent: int = 0
    done: int = 0
    ok: int = 0

    @property
    def in_flight(self) -> int:
        return self.sent - self.done


async def run_load(
    client: Client,
    phases: Sequence[Phase],
    progress: Progress | None = None,
    on_record: Callable[[Record], None] | None = None,
) -> LoadResult:
    """Run the phases back to back against ``client``; every request sent is awaited before return."""
    progress = progress or Progress()
    result = LoadResult(list(phases))
    loop = asyncio.get_running_loop()
    clock = time.perf_counter  # uvloop's loop.time() has millisecond resolution
    start = clock()
    tasks: set[asyncio.Task[None]] = set()

    async def one(scheduled: float, index: int) -> None:
        progress.sent += 1
        reply = await client.request()
        record = Record(scheduled - start, clock() - scheduled, reply.status, reply.error, index, reply.cold)
        result.records.append(record)
        progress.done += 1
        progress.ok += 200 <= reply.status < 300
        if on_record:
            on_record(record)

    def launch(scheduled: float, index: int) -> None:
        task = loop.create_task(one(scheduled, index))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    phase_start = start
    for index, phase in enumerate(phases):
        progress.phase = index
        if phase.kind == "conc":
            end = phase_start + phase.duration

            async def closed_loop(end: float = end, index: int = index) -> None:
                while clock() < end:
                    await one(clock(), index)

            await asyncio.gather(*(closed_loop() for _ in range(phase.clients)))
        else:
            for offset in send_offsets(phase):
                due = phase_start + offset
                delay = due - clock()
                if delay > 0.0005:
                    await asyncio.sleep(delay)
                launch(due, index)
            remaining = phase_start + phase.duration - clock()
            if remaining > 0:
                await asyncio.sleep(remaining)
        phase_start = max(phase_start + phase.duration, clock())
    if tasks:
        await asyncio.gather(*tasks)
    result.duration = clock() - start
    result.records.sort(key=lambda r: r.sent_at)
    return result
