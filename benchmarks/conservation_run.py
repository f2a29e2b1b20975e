"""A conservation pattern run: a stack, load phases (client counts, optional pacing, optional
wait-for-a-state) and actions at phase starts (kills), with ``/status`` sampled throughout so a caller
can check the pattern really happened (modes seen, pods peak/low, pods killed) next to the counts.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from conservation_clients import Phase, PhaseTimeout, RawClients
from conservation_stack import KpaUp, Status, Usage
from conservation_tally import Tally


@dataclass
class PatternResult:
    name: str
    tally: Tally
    seconds: float
    samples: list[tuple[float, Status]]
    before: Usage
    after: Usage
    events: list[str]
    reported_percentiles: tuple[float, float] | None = None  # hey's own, where hey did the counting

    def percentiles(self) -> tuple[float, float]:
        """p50 and p99 latency in seconds."""
        return self.reported_percentiles or self.tally.percentiles()

    def modes(self) -> set[str]:
        return {row["mode"] for _, row in self.samples}

    def ready_pods(self) -> list[int]:
        return [row["ready_pods"] for _, row in self.samples]

    def served(self) -> dict[str, int]:
        return self.samples[-1][1].get("served", {}) if self.samples else {}


async def wait_for(up: KpaUp, predicate: Callable[[Status], bool], timeout: float, what: str) -> Status:
    """Poll /status until ``predicate(row)`` holds; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        row = up.row(await up.status())
        if predicate(row):
            return row
        if time.monotonic() > deadline:
            raise PhaseTimeout(f"timed out after {timeout:g}s waiting for {what}; last status row: {row}")
        await asyncio.sleep(0.1)


async def run_pattern(
    name: str,
    up: KpaUp,
    phases: Sequence[Phase],
    *,
    host: str,
    timeout: float,
    sample_every: float = 0.25,
) -> PatternResult:
    """Drive ``phases`` through ``up``'s entry with raw clients, sampling /status meanwhile.

    The clients' per-request deadline is ``timeout`` (the revision timeout plus MARGIN); after the last
    phase each client finishes the request it has in hand, so every request sent is counted."""
    clients = RawClients(up.entry, host, timeout)
    samples: list[tuple[float, Status]] = []
    events: list[str] = []
    before = up.usage()
    started = clients.started
    latest: dict[str, Status] = {}

    async def sample() -> None:
        while True:
            with contextlib.suppress(OSError, TimeoutError, RuntimeError):
                status = await up.status()
                row = dict(up.row(status), served=status.get("served", {}))
                latest["row"] = row
                samples.append((time.monotonic() - started, row))
            await asyncio.sleep(sample_every)

    async def drive() -> None:
        try:
            for phase in phases:
                clients.set_phase(phase)
                if phase.action is not None:
                    events.append(f"{time.monotonic() - started:.2f}s {await phase.action(up)}")
                if phase.until is None:
                    await asyncio.sleep(phase.seconds)
                    continue
                deadline = time.monotonic() + phase.seconds
                while not ("row" in latest and phase.until(latest["row"])):
                    if time.monotonic() > deadline:
                        raise PhaseTimeout(
                            f"{name}: {phase.until_what or 'phase condition'} not seen within "
                            f"{phase.seconds:g}s; last status row: {latest.get('row')}"
                        )
                    await asyncio.sleep(0.05)
                events.append(f"{time.monotonic() - started:.2f}s {phase.until_what}")
        finally:
            clients.set_phase(None)

    sampler = asyncio.create_task(sample())
    driver = asyncio.create_task(drive())
    try:
        clients.set_phase(phases[0])
        tally = await clients.run(max(p.clients for p in phases))
        await driver  # re-raises a PhaseTimeout
    finally:
        driver.cancel()
        sampler.cancel()
    seconds = time.monotonic() - started
    with contextlib.suppress(OSError, TimeoutError, RuntimeError):
        status = await up.status()
        samples.append((seconds, dict(up.row(status), served=status.get("served", {}))))
    return PatternResult(name, tally, seconds, samples, before, up.usage(), events)
