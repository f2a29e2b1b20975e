"""`kpa status`: the per-revision scaling table of a running `kpa up` (read from its admin port) or,
with ``--controller URL``, of `kpa controller` (its status API).

The same table is `kpa up`'s live view, so what you see in either place means the same thing:
desired and ready pods, pods pending (desired but not started: beyond the local capacity cap,
waiting for the spawn limit or a crash-loop backoff), serve/proxy mode, panic, the stable and
panic concurrency the KPA is acting on, excess burst capacity, the PodAutoscaler's Active state
with the reason for it, and why the revision's last pod failed.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import JustifyMethod

DEFAULT_ADMIN_URL = "http://127.0.0.1:8081"


def status_table(doc: Mapping[str, Any], width: int | None = None):
    """A rich Table of the revisions in a `/status` document; narrow consoles get the core columns."""
    from rich.table import Table

    wide = width is None or width >= 120
    columns: list[tuple[str, JustifyMethod, Callable[[Mapping[str, Any]], str]]] = [
        (
            "revision",
            "left",
            lambda r: r["name"] if r["namespace"] == "default" else f"{r['namespace']}/{r['name']}",
        ),
        ("desired", "right", lambda r: str(r["desired_pods"])),
        ("ready", "right", lambda r: f"{r['ready_pods']}/{r['pods']}"),
        ("pending", "right", _pending),
        (
            "mode",
            "left",
            lambda r: f"[cyan]{r['mode']}[/]" if r["mode"] == "proxy" else f"[green]{r['mode']}[/]",
        ),
        ("panic", "left", lambda r: "[bold red]PANIC[/]" if r["panicking"] else "-"),
        ("stable c", "right", lambda r: f"{r['stable_concurrency']:.2f}"),
        ("panic c", "right", lambda r: f"{r['panic_concurrency']:.2f}"),
        ("target/pod", "right", lambda r: f"{r['target']:g}"),
        ("EBC", "right", lambda r: str(r["excess_burst_capacity"])),
        ("state", "left", lambda r: r["state"]),
        ("why", "left", _why),
    ]
    if not wide:
        columns = [c for c in columns if c[0] not in ("target/pod", "why")]
    table = Table(title=_title(doc), title_justify="left", expand=False)
    for name, justify, _ in columns:
        table.add_column(name, justify=justify, no_wrap=name != "why")
    for row in doc.get("revisions", []):
        table.add_row(*(cell(row) for _, _, cell in columns))
    if not wide:  # no "why" column: pod failures go under the table
        failures = [f"{row['name']}: pod {row['pod_failure']}" for row in doc.get("revisions", [])
                    if row.get("pod_failure")]  # fmt: skip
        if failures:
            table.caption = "\n".join(failures)
            table.caption_justify = "left"
    return table


def _pending(row: Mapping[str, Any]) -> str:
    pending = row.get("pending_pods", 0)
    return f"[yellow]{pending}[/]" if pending else "-"


def _title(doc: Mapping[str, Any]) -> str:
    entry = doc.get("entry")
    uptime = doc.get("uptime_s")
    parts = ["kpa up"]
    if "controller" in doc:  # `kpa controller`'s /status: which replica, and whether it leads
        parts = [f"kpa controller {doc['controller']}", "leader" if doc.get("leader") else "standby"]
        if doc.get("refused"):
            parts.append(f"{len(doc['refused'])} workload(s) refused (--json says why)")
    if entry:
        parts.append(f"entry {entry}")
    if uptime is not None:
        parts.append(f"up {uptime:.0f}s")
    capacity = doc.get("capacity")
    if capacity:
        parts.append(f"pods {capacity['pods']}/{capacity['max_pods']} (cap)")
    return " · ".join(parts)


def _why(row: Mapping[str, Any]) -> str:
    notes = [row["reason"]]
    if row.get("scrape_error"):
        notes.append(f"[yellow]scrape: {row['scrape_error']}[/]")
    if row.get("pod_failure"):
        notes.append(f"[red]pod {row['pod_failure']}[/]")
    return "\n".join(notes)


def fetch_status(url: str, timeout: float = 3.0) -> dict[str, Any]:
    import httpx

    answer = httpx.get(url.rstrip("/") + "/status", timeout=timeout)
    answer.raise_for_status()
    return answer.json()


def configure(parser: argparse.ArgumentParser) -> None:
    where = parser.add_mutually_exclusive_group()
    where.add_argument(
        "--url", default=DEFAULT_ADMIN_URL, help=f"admin address of `kpa up` (default {DEFAULT_ADMIN_URL})"
    )
    where.add_argument(
        "--controller",
        metavar="URL",
        help="status address of `kpa controller` instead (e.g. http://HOST:8080)",
    )
    parser.add_argument("--json", action="store_true", help="print the raw status document")
    parser.add_argument("--watch", type=float, metavar="SECONDS", help="refresh every SECONDS until Ctrl-C")


def run(args: argparse.Namespace) -> int:
    import httpx
    from rich.console import Console
    from rich.live import Live

    console = Console()
    if args.controller:
        args.url = args.controller

    def get() -> dict[str, Any] | None:
        try:
            return fetch_status(args.url)
        except (httpx.HTTPError, ValueError) as exc:
            running = "kpa controller" if args.controller else "kpa up"
            message = f"kpa status: cannot read {args.url}/status: {exc} (is `{running}` running?)"
            print(message, file=sys.stderr)
            return None

    doc = get()
    if doc is None:
        return 1
    if args.json:
        print(json.dumps(doc, indent=2))
        return 0
    if not args.watch:
        console.print(status_table(doc, console.width))
        return 0
    try:
        with Live(status_table(doc, console.width), console=console, refresh_per_second=4) as live:
            while True:
                time.sleep(args.watch)
                doc = get()
                if doc is None:
                    return 1
                live.update(status_table(doc, console.width))
    except KeyboardInterrupt:
        return 0


def summarize_rows(rows: Sequence[Mapping[str, Any]]) -> str:
    """One log line per revision, for `kpa up --no-live`."""
    return "; ".join(
        f"{r['name']}: {r['ready_pods']}/{r['desired_pods']} ready, {r['mode']}, "
        f"c={r['stable_concurrency']:.1f}/{r['panic_concurrency']:.1f}{' PANIC' if r['panicking'] else ''}"
        + (f", {r['pending_pods']} pending" if r.get("pending_pods") else "")
        for r in rows
    )
