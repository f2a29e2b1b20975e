"""`kpa load`: an open-loop HTTP load generator for driving a stack through idle, steps and bursts.

This module is the command (arguments, plan file, progress bar, printed summary); its parts each
have their own module and are re-exported here, the API tests, benchmarks and `kpa demo` use:

* ``kpa.load_phases``: the phase grammar (``parse_phases``, ``PHASE_FORMS``) and send schedule;
* ``kpa.load_client``: ``Client`` and ``Target``, on the project's HTTP engine;
* ``kpa.load_run``: ``run_load``, open loop on schedule (no coordinated omission), ``Progress``;
* ``kpa.load_report``: ``Record``, ``LoadResult`` and its summary, ``percentile``.

Phases are given with ``--phase`` (repeatable) or under ``phases:`` in a YAML plan file; their
grammar is in ``kpa.load_phases`` and docs/local-stack.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from kpa.load_client import Client, Reply, Target
from kpa.load_phases import PHASE_FORMS, Phase, PhaseError, parse_phase, parse_phases, send_offsets
from kpa.load_report import LoadResult, Record, percentile
from kpa.load_run import Progress, run_load

__all__ = [
    "PHASE_FORMS",
    "Client",
    "LoadResult",
    "Phase",
    "PhaseError",
    "Progress",
    "Record",
    "Reply",
    "Target",
    "configure",
    "load_plan_file",
    "parse_phase",
    "parse_phases",
    "percentile",
    "print_summary",
    "run",
    "run_async",
    "run_load",
    "send_offsets",
]


def load_plan_file(path: str | Path) -> tuple[list[Phase], dict[str, Any]]:
    """Read ``phases:`` (a list of phase strings) and optional request options from a YAML file."""
    path = Path(path)
    try:
        doc = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise PhaseError(f"{path}: cannot read load plan: {exc}") from None
    allowed = {"phases", "method", "path", "host", "body", "headers"}
    if not isinstance(doc, dict) or not isinstance(doc.get("phases"), list):
        raise PhaseError(f"{path}: expected a mapping with a 'phases:' list of strings like 'rate:50:20'")
    unknown = set(doc) - allowed
    if unknown:
        raise PhaseError(f"{path}: unknown key(s) {sorted(unknown)}; allowed: {sorted(allowed)}")
    texts = []
    for i, item in enumerate(doc["phases"]):
        if not isinstance(item, str):
            raise PhaseError(f"{path}: phases[{i}]={item!r}: must be a string like 'rate:50:20'")
        texts.append(item)
    return parse_phases(texts), {k: v for k, v in doc.items() if k != "phases"}


def configure(parser: argparse.ArgumentParser) -> None:
    parser.epilog = "phases: " + PHASE_FORMS
    parser.add_argument("url", help="http://HOST:PORT/PATH to load (e.g. the address `kpa up` printed)")
    parser.add_argument("--host", help="Host header (selects the revision on a `kpa up` entry)")
    parser.add_argument(
        "--phase",
        action="append",
        default=[],
        metavar="SPEC",
        help="a traffic phase, repeatable, run in order (e.g. idle:10 rate:50:20 burst:200)",
    )
    parser.add_argument("--plan", help="YAML file with 'phases:' and optional method/path/host/body/headers")
    parser.add_argument("--method", default=None, help="HTTP method (default GET, or POST with --data)")
    parser.add_argument("--data", help="request body; @FILE reads it from a file")
    parser.add_argument(
        "-H",
        "--header",
        action="append",
        default=[],
        metavar="NAME:VALUE",
        help="extra request header, repeatable",
    )
    parser.add_argument("--timeout", type=float, default=30.0, help="per-request timeout in seconds")
    parser.add_argument(
        "--max-connections",
        type=int,
        default=512,
        help="cap on open connections; requests beyond it wait (and that wait counts)",
    )
    parser.add_argument("--json", metavar="PATH", help="write results as JSON ('-' for stdout)")
    parser.add_argument("--records", action="store_true", help="include every request in the JSON")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def _target_from_args(args: argparse.Namespace, plan_options: Mapping[str, Any]) -> Target:
    data = args.data if args.data is not None else plan_options.get("body")
    body = b""
    if data is not None:
        body = Path(data[1:]).read_bytes() if str(data).startswith("@") else str(data).encode()
    headers = [tuple(h.split(":", 1)) for h in args.header]
    if any(len(h) != 2 for h in headers):
        raise ValueError(f"--header values must look like NAME:VALUE, got {args.header}")
    headers += [(str(k), str(v)) for k, v in (plan_options.get("headers") or {}).items()]
    if body and not any(name.lower() == "content-type" for name, _ in headers):
        headers.append(("Content-Type", "application/json"))
    method = args.method or plan_options.get("method") or ("POST" if body else "GET")
    target = Target.from_url(
        args.url,
        method=method,
        host_header=args.host or plan_options.get("host"),
        body=body,
        headers=tuple((n.strip(), v.strip()) for n, v in headers),
    )
    if plan_options.get("path") and urlsplit(args.url).path in ("", "/"):
        target = replace(target, path=str(plan_options["path"]))
    return target


async def _run_with_progress(client: Client, phases: list[Phase], quiet: bool) -> LoadResult:
    from rich.progress import BarColumn, TextColumn, TimeElapsedColumn
    from rich.progress import Progress as Bar

    counters = Progress()
    total = sum(p.duration for p in phases) or 1.0
    if quiet:
        return await run_load(client, phases, counters)
    with Bar(
        TextColumn("{task.description}"),
        BarColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[stats]}"),
        transient=False,
    ) as bar:
        task = bar.add_task("load", total=total, stats="")
        run = asyncio.create_task(run_load(client, phases, counters))
        started = time.monotonic()
        while not run.done():
            bar.update(
                task,
                completed=min(total, time.monotonic() - started),
                description=f"[{counters.phase + 1}/{len(phases)}] {phases[counters.phase].label}",
                stats=f"sent {counters.sent} ok {counters.ok} "
                f"failed {counters.done - counters.ok} in flight {counters.in_flight}",
            )
            await asyncio.wait([run], timeout=0.2)
        bar.update(task, completed=total)
        return run.result()


def print_summary(result: LoadResult, out: Any = None) -> None:
    from rich.console import Console
    from rich.table import Table

    s = result.summary()
    table = Table(title="kpa load", show_header=False)
    table.add_row("requests", f"{s['requests']} in {s['duration_s']} s ({s['throughput_rps']} req/s)")
    table.add_row("ok (2xx)", str(s["ok"]))
    table.add_row("failed", str(s["failed"]))
    table.add_row("outcomes", ", ".join(f"{k}: {v}" for k, v in s["outcomes"].items()) or "-")
    if s["cold_start_requests"]:
        table.add_row("held for a cold start", str(s["cold_start_requests"]))
    lat = s["latency_ms"]
    table.add_row("latency (2xx)", " ".join(f"{k} {v} ms" for k, v in lat.items()) if lat["p50"] else "-")
    Console(file=out or sys.stdout).print(table)


def run(args: argparse.Namespace) -> int:
    try:
        phases, options = load_plan_file(args.plan) if args.plan else ([], {})
        phases += parse_phases(args.phase) if args.phase or not phases else []
        target = _target_from_args(args, options)
    except (PhaseError, ValueError, OSError) as exc:
        print(f"kpa load: {exc}", file=sys.stderr)
        return 2

    async def main() -> LoadResult:
        client = Client(target, max_connections=args.max_connections, timeout=args.timeout)
        try:
            return await _run_with_progress(client, phases, args.quiet or args.json == "-")
        finally:
            client.close()

    result = run_async(main())
    if args.json:
        text = json.dumps(result.to_json(args.records), indent=2)
        if args.json == "-":
            print(text)
        else:
            Path(args.json).write_text(text + "\n")
    if args.json != "-":
        print_summary(result)
    return 0 if result.summary()["failed"] == 0 else 1


def run_async(coro: Any) -> Any:
    """Run on uvloop when it is installed (it roughly doubles what one core can send)."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)
