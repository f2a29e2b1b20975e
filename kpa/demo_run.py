"""`kpa demo`, running it: start `kpa up` as a child process, drive the load stages through its entry
while polling its /status (the live table and the timeline both read the polls), then stop it.

What is recorded (``Run``: the /status samples, the stages' times, every request's result and every
pod process id seen) is all the report (``kpa.demo_report``) needs.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from kpa.dashboard import DashboardError, load_dashboard
from kpa.dashboard_png import draw, evaluate
from kpa.load import Client, LoadResult, Phase, Progress, Target, percentile, run_load
from kpa.prometheus_api import PrometheusQueryError
from kpa.prometheus_server import PrometheusServer, PrometheusUnavailable

REVISION = "classifier"


@dataclass
class Sample:
    """One poll of `kpa up`'s /status."""

    t: float
    desired: int
    ready: int
    pods: int
    mode: str
    panicking: bool
    stable: float
    panic: float
    state: str


@dataclass
class Run:
    """What one demo run saw; times are seconds since ``started``."""

    started: float = field(default_factory=time.time)
    samples: list[Sample] = field(default_factory=list)
    load_phases: list[tuple[str, float, float]] = field(default_factory=list)  # label, start, end
    results: list[tuple[float, LoadResult]] = field(default_factory=list)  # (start offset, result)
    pids: set[int] = field(default_factory=set)
    dashboard: str = ""  # what became of the Grafana dashboard PNG (drawn from Prometheus, or why not)


async def demo(
    console,
    out: Path,
    stack_file: Path,
    body: bytes,
    path: str,
    burst: list[Phase],
    steady: list[Phase],
    live: bool,
) -> Run | None:
    """Start `kpa up` on ``stack_file``, idle to zero, run ``burst`` then ``steady`` against it, idle
    to zero again, and stop it; None (after saying why) when `kpa up` did not start."""
    ready_file = out / "ready.json"
    ready_file.unlink(missing_ok=True)
    log_path = out / "kpa-up.log"
    with log_path.open("wb") as log:
        up = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "kpa",
                "up",
                str(stack_file),
                "--port",
                "0",
                "--admin-port",
                "0",
                "--no-live",
                "--log-dir",
                str(out / "pods"),
                "--ready-file",
                str(ready_file),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    record = Run()
    prometheus: PrometheusServer | None = None
    try:
        addresses = await _wait_ready_file(ready_file, up)
        if addresses is None:
            console.print(f"[red]kpa up did not start; see {log_path}[/]")
            return None
        console.print(f"kpa up: entry {addresses['entry']}, admin {addresses['admin']} (log: {log_path})")
        prometheus = await _start_prometheus(console, addresses.get("prometheus_targets"), record)
        entry = addresses["entry"]
        target = Target.from_url(
            entry + path,
            method="POST" if body else "GET",
            host_header=REVISION,
            body=body,
            headers=(("Content-Type", "application/json"),) if body else (),
        )
        async with httpx.AsyncClient(timeout=2.0) as admin:
            poller = _Poller(admin, addresses["admin"], record)
            view = asyncio.create_task(_view(console, poller, live))
            try:
                await _wait_for_zero(poller, record, "idle: the initial pod scales away", 40.0)
                await _drive(console, poller, record, [("burst", burst), ("steady", steady)], target)
                await _wait_for_zero(poller, record, "idle: back to zero", 40.0)
            finally:
                view.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await view
                console.print()
                if prometheus is not None:
                    record.dashboard = await asyncio.to_thread(_draw_dashboard, prometheus, record, out)
    finally:
        if prometheus is not None:
            prometheus.stop()
        await _stop_up(up)
    return record


async def _start_prometheus(console, targets: str | None, record: Run) -> PrometheusServer | None:
    """Debian's prometheus scraping the stack through its file_sd file, when installed here."""
    if not targets:
        record.dashboard = "not drawn: kpa up wrote no Prometheus target file"
        return None
    prometheus = PrometheusServer(Path(targets))
    try:
        await asyncio.to_thread(prometheus.start)
    except PrometheusUnavailable as exc:
        record.dashboard = f"not drawn: {exc}"
        return None
    console.print(f"prometheus: {prometheus.url} scraping every 1 s the targets in {targets}")
    return prometheus


def _draw_dashboard(prometheus: PrometheusServer, record: Run, out: Path) -> str:
    """The Grafana dashboard's queries over the whole run, drawn to ``out/dashboard.png``."""
    try:
        dashboard = load_dashboard()
        answers = evaluate(prometheus.url, dashboard, record.started, time.time())
    except (DashboardError, PrometheusQueryError) as exc:
        return f"not drawn: {exc}"
    png = draw(dashboard, answers, record.started, out / "dashboard.png")
    with_data = sum(a.has_data for a in answers)
    return f"{png} ({with_data} of {len(answers)} Grafana queries returned data)"


async def _wait_ready_file(path: Path, up: subprocess.Popen, timeout: float = 30.0) -> dict[str, Any] | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and up.poll() is None:
        with contextlib.suppress(OSError, ValueError):
            return json.loads(path.read_text())
        await asyncio.sleep(0.1)
    return None


class _Poller:
    """Polls /status twice a second; the timeline and the live view both read from it."""

    def __init__(self, client: httpx.AsyncClient, admin: str, record: Run) -> None:
        self.client = client
        self.url = admin + "/status"
        self.record = record
        self.latest: dict[str, Any] | None = None
        self.progress: Progress | None = None
        self.stage = ""

    async def poll(self) -> dict[str, Any] | None:
        with contextlib.suppress(httpx.HTTPError, ValueError):
            doc = (await self.client.get(self.url)).json()
            self.latest = doc
            self.record.pids.update(doc.get("pod_pids", []))
            row = doc["revisions"][0]
            self.record.samples.append(
                Sample(
                    time.time() - self.record.started,
                    row["desired_pods"],
                    row["ready_pods"],
                    row["pods"],
                    row["mode"],
                    row["panicking"],
                    row["stable_concurrency"],
                    row["panic_concurrency"],
                    row["state"],
                )
            )
        return self.latest


async def _wait_for_zero(poller: _Poller, record: Run, label: str, max_wait: float) -> None:
    """Idle until the revision has no pod left (or ``max_wait`` seconds passed)."""
    poller.stage = label
    start = time.time() - record.started
    deadline = time.monotonic() + max_wait
    while time.monotonic() < deadline:
        doc = await poller.poll()
        if doc and doc["revisions"][0]["pods"] == 0 and doc["revisions"][0]["desired_pods"] == 0:
            break
        await asyncio.sleep(0.5)
    record.load_phases.append((label, start, time.time() - record.started))


async def _drive(
    console, poller: _Poller, record: Run, stages: list[tuple[str, list[Phase]]], target: Target
) -> None:
    """Run the stages' load phases back to back in one open-loop run (no gap between stages)."""
    phases = [phase for _, stage in stages for phase in stage]
    labels = [label for label, stage in stages for _ in stage]
    start = time.time() - record.started
    client = Client(target, max_connections=256, timeout=60.0)
    progress = poller.progress = Progress()

    async def follow() -> None:
        while True:
            poller.stage = labels[progress.phase]
            await poller.poll()
            await asyncio.sleep(0.5)

    following = asyncio.create_task(follow())
    try:
        result = await run_load(client, phases, progress)
    finally:
        following.cancel()
        client.close()
    record.results.append((start, result))
    offset, index = start, 0
    for label, stage in stages:
        length = sum(p.duration for p in stage)
        indices = range(index, index + len(stage))
        index += len(stage)
        end = offset + length if index < len(phases) else time.time() - record.started
        record.load_phases.append((label, offset, end))
        offset += length
        mine = [r for r in result.records if r.phase in indices]
        ok = sorted(r.latency for r in mine if 200 <= r.status < 300)
        p50 = f"{percentile(ok, 50) * 1000:.0f}" if ok else "-"
        p99 = f"{percentile(ok, 99) * 1000:.0f}" if ok else "-"
        console.print(f"  {label}: {len(mine)} requests, {len(ok)} ok, p50 {p50} ms, p99 {p99} ms")


async def _view(console, poller: _Poller, live: bool) -> None:
    from rich.console import Group
    from rich.live import Live
    from rich.text import Text

    from kpa.status import status_table, summarize_rows

    def renderable():
        progress = poller.progress
        line = f"stage: {poller.stage}"
        if progress is not None and poller.stage in ("burst", "steady"):
            line += f" — sent {progress.sent}, ok {progress.ok}, in flight {progress.in_flight}"
        if poller.latest is None:
            return Text(line)
        return Group(status_table(poller.latest, console.width), Text(line))

    if not live:
        last = ""
        while True:
            await asyncio.sleep(1.0)
            if poller.latest:
                text = f"{poller.stage}: {summarize_rows(poller.latest['revisions'])}"
                if text != last:
                    console.print(text)
                    last = text
    with Live(renderable(), console=console, refresh_per_second=4, transient=False) as view:
        while True:
            await asyncio.sleep(0.25)
            view.update(renderable())


async def _stop_up(up: subprocess.Popen) -> None:
    if up.poll() is None:
        up.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 20.0
        while up.poll() is None and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
    if up.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(up.pid, signal.SIGKILL)
        up.wait()
