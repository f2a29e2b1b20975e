"""`kpa load`: an open-loop HTTP load generator for driving a stack through idle, steps and bursts.

Open loop matters for autoscaling: a closed-loop client slows down when the service slows down and
so hides exactly the queueing the autoscaler must react to. Requests here are sent at their
scheduled instants whatever the state of earlier ones, and latency is measured from the scheduled
instant, so time spent waiting for a free connection counts (no coordinated omission).

The client speaks HTTP/1.1 on raw asyncio sockets with httptools parsing: httpx costs ~1.5 ms of CPU
per request here and would become the bottleneck well below the rates the demo uses.

Phase syntax (repeat ``--phase`` or list them under ``phases:`` in a YAML file):

    idle:SECONDS                     send nothing
    rate:RPS:SECONDS                 constant rate
    ramp:FROM:TO:SECONDS             rate changing linearly from FROM to TO req/s
    steps:FROM:TO:COUNT:SECONDS      COUNT constant-rate steps from FROM to TO, SECONDS each
    burst:REQUESTS[:SECONDS]         REQUESTS sent at once, then wait out SECONDS (default 0)
    conc:CLIENTS:SECONDS             closed loop: CLIENTS each send the next request when one ends
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import urlsplit

import httptools
import yaml

# --------------------------------------------------------------------------------------------------
# Phases: parsing and the (pure) send schedule


class PhaseError(ValueError):
    """A phase that cannot be run; the message quotes the phase and shows the accepted forms."""


PHASE_FORMS = (
    "idle:SECONDS, rate:RPS:SECONDS, ramp:FROM:TO:SECONDS, steps:FROM:TO:COUNT:SECONDS, "
    "burst:REQUESTS[:SECONDS], conc:CLIENTS:SECONDS"
)


@dataclass(frozen=True, slots=True)
class Phase:
    """One stretch of traffic. ``rate``/``rate_to`` in req/s; ``requests`` for bursts;
    ``clients`` for closed-loop phases."""

    kind: str
    duration: float
    rate: float = 0.0
    rate_to: float = 0.0
    requests: int = 0
    clients: int = 0

    @property
    def label(self) -> str:
        match self.kind:
            case "idle":
                return f"idle {self.duration:g}s"
            case "rate":
                return f"{self.rate:g} req/s for {self.duration:g}s"
            case "ramp":
                return f"ramp {self.rate:g}→{self.rate_to:g} req/s over {self.duration:g}s"
            case "burst":
                return f"burst of {self.requests}" + (f" then {self.duration:g}s" if self.duration else "")
            case _:
                return f"{self.clients} closed-loop clients for {self.duration:g}s"

    @property
    def planned_requests(self) -> int | None:
        """How many requests the phase sends; None for closed loop (depends on the service)."""
        if self.kind == "conc":
            return None
        return len(send_offsets(self))


def _number(text: str, what: str, phase: str, *, integer: bool = False, positive: bool = True) -> float:
    try:
        value = int(text) if integer else float(text)
    except ValueError:
        kind = "a whole number" if integer else "a number"
        raise PhaseError(f"phase {phase!r}: {what}={text!r} is not {kind}; forms: {PHASE_FORMS}") from None
    if not math.isfinite(value) or value < 0 or (positive and value == 0):
        bound = "> 0" if positive else ">= 0"
        raise PhaseError(f"phase {phase!r}: {what}={text!r} must be {bound}")
    return value


def parse_phase(text: str) -> list[Phase]:
    """Parse one phase; ``steps`` expands into its constant-rate steps, hence the list."""
    kind, *parts = text.strip().split(":")
    arity = {"idle": (1,), "rate": (2,), "ramp": (3,), "steps": (4,), "burst": (1, 2), "conc": (2,)}
    if kind not in arity:
        raise PhaseError(f"phase {text!r}: unknown kind {kind!r}; forms: {PHASE_FORMS}")
    if len(parts) not in arity[kind]:
        raise PhaseError(
            f"phase {text!r}: {kind} takes {' or '.join(map(str, arity[kind]))} value(s); "
            f"forms: {PHASE_FORMS}"
        )
    match kind:
        case "idle":
            return [Phase("idle", _number(parts[0], "SECONDS", text))]
        case "rate":
            return [Phase("rate", _number(parts[1], "SECONDS", text), rate=_number(parts[0], "RPS", text))]
        case "ramp":
            start = _number(parts[0], "FROM", text, positive=False)
            end = _number(parts[1], "TO", text, positive=False)
            if start == end == 0:
                raise PhaseError(f"phase {text!r}: a ramp from 0 to 0 sends nothing; use idle:SECONDS")
            return [Phase("ramp", _number(parts[2], "SECONDS", text), rate=start, rate_to=end)]
        case "steps":
            start = _number(parts[0], "FROM", text)
            end = _number(parts[1], "TO", text)
            count = int(_number(parts[2], "COUNT", text, integer=True))
            each = _number(parts[3], "SECONDS", text)
            rates = [start] if count == 1 else [start + (end - start) * i / (count - 1) for i in range(count)]
            return [Phase("rate", each, rate=r) for r in rates]
        case "burst":
            requests = int(_number(parts[0], "REQUESTS", text, integer=True))
            seconds = _number(parts[1], "SECONDS", text, positive=False) if len(parts) == 2 else 0.0
            return [Phase("burst", seconds, requests=requests)]
        case _:
            clients = int(_number(parts[0], "CLIENTS", text, integer=True))
            return [Phase("conc", _number(parts[1], "SECONDS", text), clients=clients)]


def parse_phases(texts: Iterable[str]) -> list[Phase]:
    phases = [phase for text in texts for phase in parse_phase(text)]
    if not phases:
        raise PhaseError(f"no phases given; add --phase (forms: {PHASE_FORMS})")
    return phases


def send_offsets(phase: Phase) -> list[float]:
    """Seconds after the phase start at which each request is sent (open-loop phases).

    The i-th request goes at the instant the cumulative planned count reaches i, so a ramp's
    spacing tightens smoothly rather than in steps.
    """
    match phase.kind:
        case "rate":
            count = round(phase.rate * phase.duration)
            return [i / phase.rate for i in range(count)]
        case "ramp":
            r0, r1, d = phase.rate, phase.rate_to, phase.duration
            slope = (r1 - r0) / d
            count = round((r0 + r1) / 2 * d)
            if slope == 0:
                return [i / r0 for i in range(count)]
            # solve r0*t + slope*t^2/2 = i for t >= 0
            return [(-r0 + math.sqrt(r0 * r0 + 2 * slope * i)) / slope for i in range(count)]
        case "burst":
            return [0.0] * phase.requests
        case _:
            return []


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


# --------------------------------------------------------------------------------------------------
# The HTTP/1.1 client


@dataclass(frozen=True, slots=True)
class Target:
    host: str
    port: int
    path: str = "/"
    method: str = "GET"
    host_header: str | None = None
    body: bytes = b""
    headers: tuple[tuple[str, str], ...] = ()

    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> Target:
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"URL {url!r}: only http://HOST[:PORT]/PATH is supported")
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        return cls(host=parts.hostname, port=parts.port or 80, path=path, **kwargs)

    def request_bytes(self) -> bytes:
        host = self.host_header or f"{self.host}:{self.port}"
        lines = [f"{self.method} {self.path} HTTP/1.1", f"Host: {host}", f"Content-Length: {len(self.body)}"]
        lines += [f"{name}: {value}" for name, value in self.headers]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + self.body


COLD_START_HEADER = b"x-kpa-cold-start"  # set by the activator: did the request wait for a pod to start?


class Reply(NamedTuple):
    status: int  # 0 when no response came
    error: str = ""
    cold: bool = False


class _Connection(asyncio.Protocol):
    """One keep-alive connection carrying one request at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.waiter: asyncio.Future[int] | None = None
        self.received = False
        self.closed = False
        self.reusable = False
        self.cold = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.received = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(f"bad response: {exc}")

    def on_header(self, name: bytes, value: bytes) -> None:
        if name.lower() == COLD_START_HEADER:
            self.cold = value.strip().lower() == b"true"

    def on_message_complete(self) -> None:
        self.reusable = self.parser.should_keep_alive()
        if self.waiter and not self.waiter.done():
            self.waiter.set_result(self.parser.get_status_code())

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._fail("connection reset" if exc else "connection closed")

    def _fail(self, reason: str) -> None:
        self.reusable = False
        if self.waiter and not self.waiter.done():
            self.waiter.set_exception(ConnectionError(reason))
        if self.transport:
            self.transport.close()

    async def send(self, payload: bytes) -> int:
        self.waiter = asyncio.get_running_loop().create_future()
        self.received = False
        self.reusable = False
        self.cold = False
        self.parser = httptools.HttpResponseParser(self)
        assert self.transport is not None
        self.transport.write(payload)
        return await self.waiter

    def close(self) -> None:
        if self.transport and not self.closed:
            self.transport.close()


class Client:
    """A keep-alive pool to one target, capped at ``max_connections`` (excess requests wait)."""

    def __init__(self, target: Target, max_connections: int = 512, timeout: float = 30.0) -> None:
        self.target = target
        self.payload = target.request_bytes()
        self.timeout = timeout
        self.idle: list[_Connection] = []
        self.slots = asyncio.Semaphore(max_connections)

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        _, conn = await loop.create_connection(_Connection, self.target.host, self.target.port)
        return conn

    async def request(self) -> Reply:
        """Send the target request once; a failure is a Reply with status 0 and the error's name."""
        async with self.slots:
            try:
                return await asyncio.wait_for(self._exchange(), self.timeout)
            except TimeoutError:
                return Reply(0, "timeout")
            except OSError as exc:
                return Reply(0, _error_name(exc))

    async def _exchange(self) -> Reply:
        while self.idle:
            conn = self.idle.pop()
            if conn.closed:
                continue
            try:
                status = await conn.send(self.payload)
            except ConnectionError:
                if conn.received:
                    raise
                continue  # the server closed an idle pooled socket: retry on another
            self._give_back(conn)
            return Reply(status, "", conn.cold)
        conn = await self._connect()
        try:
            status = await conn.send(self.payload)
        except BaseException:
            conn.close()
            raise
        self._give_back(conn)
        return Reply(status, "", conn.cold)

    def _give_back(self, conn: _Connection) -> None:
        if conn.reusable and not conn.closed:
            self.idle.append(conn)
        else:
            conn.close()

    def close(self) -> None:
        for conn in self.idle:
            conn.close()
        self.idle.clear()


def _error_name(exc: OSError) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    return str(exc) or type(exc).__name__


# --------------------------------------------------------------------------------------------------
# Running phases and reporting


@dataclass(slots=True)
class Record:
    sent_at: float  # seconds since the run started (scheduled instant)
    latency: float  # seconds from the scheduled instant to the response (or failure)
    status: int  # 0 when no response
    error: str
    phase: int
    cold: bool = False  # the activator held it while a pod started


@dataclass
class LoadResult:
    phases: list[Phase]
    records: list[Record] = field(default_factory=list)
    duration: float = 0.0

    def summary(self) -> dict[str, Any]:
        latencies = sorted(r.latency for r in self.records if 200 <= r.status < 300)
        outcomes = Counter(str(r.status) if r.status else r.error for r in self.records)
        ok = sum(1 for r in self.records if 200 <= r.status < 300)
        return {
            "requests": len(self.records),
            "ok": ok,
            "failed": len(self.records) - ok,
            "outcomes": dict(sorted(outcomes.items())),
            "cold_start_requests": sum(1 for r in self.records if r.cold),
            "duration_s": round(self.duration, 3),
            "throughput_rps": round(len(self.records) / self.duration, 2) if self.duration else 0.0,
            "latency_ms": {
                name: round(percentile(latencies, q) * 1000, 2) if latencies else None
                for name, q in (("p50", 50), ("p90", 90), ("p99", 99), ("max", 100))
            },
        }

    def to_json(self, with_records: bool = False) -> dict[str, Any]:
        doc: dict[str, Any] = {"phases": [p.label for p in self.phases], "summary": self.summary()}
        if with_records:
            doc["records"] = [
                {
                    "sent_at": round(r.sent_at, 4),
                    "latency": round(r.latency, 5),
                    "status": r.status,
                    "error": r.error,
                    "phase": r.phase,
                    "cold": r.cold,
                }
                for r in self.records
            ]
        return doc


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of an ascending sequence (q in [0, 100])."""
    if not sorted_values:
        raise ValueError("percentile of no values")
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


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


# --------------------------------------------------------------------------------------------------
# CLI


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
        target = Target(
            target.host,
            target.port,
            str(plan_options["path"]),
            target.method,
            target.host_header,
            target.body,
            target.headers,
        )
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
