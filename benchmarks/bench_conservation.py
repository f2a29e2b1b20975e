"""Request conservation, long form: every pattern of tests/e2e/test_conservation.py, stretched.

    .venv/bin/python benchmarks/bench_conservation.py [--scale 4] [--only NAME ...] [--markdown]

Each pattern (benchmarks/conservation.py: proxy mode, the same counted by hey, scale to zero and back,
serve mode, mode flips, scale up and down, SIGKILLed user containers and queue-proxies in both modes)
runs against its own `kpa up` with its steady phases ``--scale`` times as long as in the test; at the
default scale the patterns send well over 100,000 requests in all. Per pattern it prints requests sent,
answered, 2xx, each error code, lost (no complete answer within the revision timeout + 5 s), p50/p99,
and `kpa up`'s RSS and open descriptors before and after the load.

Baseline, same run: the same raw clients (16 connections) straight at one `python3 -m http.server`,
the user container of the http.server patterns; their req/s is shown as a ratio to it. The exit
status is 1 if any request was lost or answered with an undocumented code, or a pattern did not
happen (e.g. no mode flip seen).
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import uvloop
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import free_port, machine, stop, wait_for_port
from conservation import HTTP_SERVER, PatternResult, Phase, RawClients, Tally, patterns, run_named

BASELINE_CLIENTS = 16


async def baseline(seconds: float) -> tuple[Tally, float]:
    """Raw clients straight at one http.server for ``seconds``: the tally and the wall time."""
    port = free_port()
    command = [arg.replace("$PORT", str(port)) for arg in HTTP_SERVER]
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port)
        clients = RawClients(f"http://127.0.0.1:{port}", "web", timeout=15)
        clients.set_phase(Phase(BASELINE_CLIENTS, seconds))
        started = time.monotonic()
        run = asyncio.create_task(clients.run(BASELINE_CLIENTS))
        await asyncio.sleep(seconds)
        clients.set_phase(None)
        tally = await run
        return tally, time.monotonic() - started
    finally:
        stop(server)


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f}"


def _mib(value: int) -> str:
    return f"{value / 2**20:.1f}"


def cells(
    name: str, tally: Tally, rps: str, ratio: str, p50_p99: tuple[float, float], rss: str, fds: str
) -> list[str]:
    errors = ", ".join(f"{code}: {n}" for code, n in tally.errors().items()) or "-"
    counts = [f"{tally.sent:,}", f"{tally.answered:,}", f"{tally.ok:,}", errors, str(len(tally.lost))]
    return [name, *counts, rps, ratio, *map(_ms, p50_p99), rss, fds]


def pattern_cells(result: PatternResult, baseline_rps: float, http_server: bool) -> list[str]:
    rps = result.tally.sent / result.seconds
    ratio = f"{rps / baseline_rps:.2f}" if http_server else "-"
    rss = f"{_mib(result.before.rss)} → {_mib(result.after.rss)}"
    fds = f"{result.before.fds} → {result.after.fds}"
    return cells(result.name, result.tally, f"{rps:,.0f}", ratio, result.percentiles(), rss, fds)


HEADERS = ["pattern", "sent", "answered", "2xx", "errors", "lost", "req/s", "vs baseline", "p50 ms",
           "p99 ms", "kpa up RSS MiB", "kpa up fds"]  # fmt: skip


async def main(args: argparse.Namespace) -> int:
    console = Console(width=None if sys.stdout.isatty() else 200)
    console.print(f"machine: {machine()}")
    chosen = [p for p in patterns() if not args.only or p.name in args.only]
    base_tally, base_seconds = await baseline(4 * args.scale)
    base_rps = base_tally.sent / base_seconds
    base = cells("baseline: http.server direct", base_tally, f"{base_rps:,.0f}", "1.00",
                 base_tally.percentiles(), "-", "-")  # fmt: skip
    rows = [base]
    total = Tally()
    failures: list[str] = []
    with tempfile.TemporaryDirectory(prefix="bench-conservation-") as tmp:
        for pattern in chosen:
            console.print(f"[bold]{pattern.name}[/]: {pattern.what}")
            try:
                result = await run_named(pattern, Path(tmp) / pattern.name, args.scale)
            except AssertionError as exc:
                failures.append(f"{pattern.name}: {exc}")
                console.print(f"  [red]{exc}")
                continue
            total.merge(result.tally)
            rows.append(pattern_cells(result, base_rps, "http.server" in pattern.stack))
            problems = result.tally.violations() + pattern.check(result)
            failures += [f"{pattern.name}: {problem}" for problem in problems]
            for line in [*result.events, *problems[:20]]:
                console.print(f"  {line}")
    rows.append(cells("all patterns", total, "-", "-", total.percentiles(), "-", "-"))
    if args.markdown:
        print("| " + " | ".join(HEADERS) + " |")
        print("|" + "---|" * len(HEADERS))
        for line in rows:
            print("| " + " | ".join(line) + " |")
    else:
        table = Table(*HEADERS, title="request conservation through kpa up")
        for line in rows:
            table.add_row(*line)
        console.print(table)
    goal = "met" if total.sent >= 100_000 and not failures else "NOT met"
    console.print(
        f"goal (0 requests without an answer over >= 100,000 requests): {goal} — "
        f"{total.sent:,} sent, {len(total.lost)} lost, {len(failures)} problems"
    )
    for failure in failures[:50]:
        console.print(f"  {failure}")
    return 1 if failures else 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", type=float, default=4.0, help="steady phases this many times the test's")
    parser.add_argument("--only", action="append", help="run only this pattern (repeatable)")
    parser.add_argument("--markdown", action="store_true", help="print the table as markdown")
    return parser.parse_args(argv)


if __name__ == "__main__":
    sys.exit(uvloop.run(main(parse_args())))
