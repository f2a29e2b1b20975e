"""Request conservation harness: every request sent to a real `kpa up` gets exactly one complete answer.

The invariant (docs/design.md): each request that reaches the stack is answered once, completely, with
the upstream's answer or a documented error (502 pod failure, 503 queue full or removed, 504 timeout;
docs/wire-contracts.md), within the revision timeout plus a margin — through proxy and serve mode, mode
flips, scale changes and SIGKILLed pods. This module counts instead of trusting:

* ``KpaUp`` runs `kpa up` as its own process (ports chosen by the kernel, ``--ready-file``), reads its
  ``/status``, finds each pod's queue-proxy and user container, SIGKILLs either on demand, measures the
  RSS and descriptors of every process, and on exit checks that no pod process it saw survives.
* ``RawClients``: N keep-alive connections on asyncio streams, no pipelining, one request at a time per
  connection. Each response's status line and body framing (Content-Length, chunked, or close-delimited)
  is parsed exactly; a request without a complete answer by its deadline, or whose connection closes
  first, is *lost* and kept with its send time, connection and what was seen. Bytes that arrive after a
  complete answer and before the next request are a second answer to one request: a violation too.
* ``run_hey``: the same count from an off-the-shelf generator (`hey`, Debian package; ``make tools``).
* ``run_pattern``: a stack, load phases (client counts, optional pacing, optional wait-for-a-state) and
  actions at phase starts (kills), with ``/status`` sampled throughout so a caller can check the pattern
  really happened (modes seen, pods peak/low, pods killed) next to the counts.

The short form runs in tests/e2e/test_conservation.py, the long form in benchmarks/bench_conservation.py,
the hour-long soak in benchmarks/bench_soak.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import textwrap
import time
from array import array
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psutil
import yaml

from kpa.load import percentile

DOCUMENTED_ERRORS = frozenset({502, 503, 504})
"""Error answers the data path documents (docs/wire-contracts.md); any other non-2xx is a violation."""

MARGIN = 5.0
"""Seconds past the revision timeout a request may take before it counts as lost."""

Status = dict[str, Any]


# ---- counting ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Lost:
    """A request without exactly one complete answer: when it went out, on which connection, and why."""

    request: int
    connection: int
    sent_at: float  # seconds since the run started
    reason: str

    def __str__(self) -> str:
        if self.connection < 0:
            return f"a request counted by hey (no send time known): {self.reason}"
        where = f"request #{self.request} on connection {self.connection} sent at {self.sent_at:.3f}s"
        return f"{where}: {self.reason}"


@dataclass
class Tally:
    """Requests sent and what came back. Latencies and send times are compact arrays so an hour-long
    soak at a thousand requests a second stays in tens of megabytes."""

    sent: int = 0
    codes: Counter[int] = field(default_factory=Counter)
    lost: list[Lost] = field(default_factory=list)
    connect_errors: list[str] = field(default_factory=list)
    sent_at: array = field(default_factory=lambda: array("d"))  # answered requests only
    latency: array = field(default_factory=lambda: array("d"))
    status: array = field(default_factory=lambda: array("H"))

    @property
    def answered(self) -> int:
        return sum(self.codes.values())

    @property
    def ok(self) -> int:
        return sum(n for code, n in self.codes.items() if 200 <= code < 300)

    def errors(self) -> dict[int, int]:
        return {code: n for code, n in sorted(self.codes.items()) if not 200 <= code < 300}

    def record(self, sent_at: float, latency: float, code: int) -> None:
        self.codes[code] += 1
        self.sent_at.append(sent_at)
        self.latency.append(latency)
        self.status.append(code)

    def violations(self) -> list[str]:
        """Everything that breaks conservation, one line each: lost requests, undocumented codes,
        answers missing from the count, connections the stack refused."""
        found = [str(lost) for lost in self.lost]
        found += [
            f"{n} answers with undocumented status {code}"
            for code, n in self.errors().items()
            if code not in DOCUMENTED_ERRORS
        ]
        if self.sent != self.answered + len(self.lost):
            found.append(f"sent {self.sent} != answered {self.answered} + lost {len(self.lost)}")
        found += [f"connect failed: {error}" for error in self.connect_errors]
        return found

    def percentiles(self) -> tuple[float, float]:
        """p50 and p99 latency in seconds over every answer (NaN when there were none)."""
        if not self.latency:
            return float("nan"), float("nan")
        ordered = sorted(self.latency)
        return percentile(ordered, 50), percentile(ordered, 99)

    def merge(self, other: Tally) -> None:
        self.sent += other.sent
        self.codes.update(other.codes)
        self.lost += other.lost
        self.connect_errors += other.connect_errors
        self.sent_at.extend(other.sent_at)
        self.latency.extend(other.latency)
        self.status.extend(other.status)


# ---- one HTTP/1.1 exchange on a stream, framed exactly -------------------------------------------------


class Unanswered(Exception):
    """The connection ended before a complete answer; the message says how far the answer got."""


@dataclass(frozen=True)
class Answer:
    status: int
    keep_alive: bool


async def read_answer(reader: asyncio.StreamReader) -> Answer:
    """Read one complete response: head, then a body framed by Content-Length, chunked encoding, or the
    connection's end (HTTP/1.0 style). Raises ``Unanswered`` if the stream ends first."""
    while True:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError as exc:
            raise Unanswered(f"connection closed after {len(exc.partial)} bytes of a response head") from None
        lines = head.decode("latin-1").split("\r\n")
        version, _, rest = lines[0].partition(" ")
        try:
            status = int(rest[:3])
        except ValueError:
            raise Unanswered(f"malformed status line {lines[0][:80]!r}") from None
        headers: dict[str, str] = {}
        for line in lines[1:]:
            if line:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
        if 100 <= status < 200:
            continue  # an interim answer (100 Continue, 103): the real one follows
        break
    connection = headers.get("connection", "").lower()
    keep_alive = connection != "close" if version == "HTTP/1.1" else connection == "keep-alive"
    try:
        if status in (204, 304):
            pass
        elif "chunked" in headers.get("transfer-encoding", "").lower():
            await _read_chunked(reader)
        elif "content-length" in headers:
            await reader.readexactly(int(headers["content-length"]))
        else:
            await reader.read()  # delimited by the end of the connection
            if not reader.at_eof():
                raise Unanswered("close-delimited body did not end")
            keep_alive = False
    except asyncio.IncompleteReadError as exc:
        raise Unanswered(f"{status} answer cut off after {len(exc.partial)} body bytes") from None
    return Answer(status, keep_alive)


async def _read_chunked(reader: asyncio.StreamReader) -> None:
    while True:
        size_line = await reader.readuntil(b"\r\n")
        size = int(size_line.split(b";", 1)[0].strip(), 16)
        if size == 0:
            while await reader.readuntil(b"\r\n") != b"\r\n":
                pass  # trailers
            return
        chunk = await reader.readexactly(size + 2)
        if chunk[-2:] != b"\r\n":
            raise Unanswered("chunk not followed by CRLF")


def buffered(reader: asyncio.StreamReader) -> int:
    """Bytes already received and not yet read. StreamReader has no public peek; with one request in
    flight at a time, anything here after a complete answer is a second answer to the same request."""
    return len(reader._buffer)


# ---- load: phases of N keep-alive clients ------------------------------------------------------------


@dataclass(frozen=True)
class Phase:
    """``clients`` connections send back to back (or, with ``rate``, paced to that many requests per
    second in all) for ``seconds``. With ``until``, the phase ends as soon as the sampled /status
    satisfies it, and the pattern fails if ``seconds`` pass first. ``action`` runs when the phase starts
    (e.g. a kill) and returns a line for the report."""

    clients: int
    seconds: float
    rate: float | None = None
    until: Callable[[Status], bool] | None = None
    until_what: str = ""
    action: Callable[[KpaUp], Awaitable[str]] | None = None


class PhaseTimeout(AssertionError):
    """A phase's ``until`` state never came within its seconds."""


class RawClients:
    """Keep-alive HTTP/1.1 clients on asyncio streams that count every request and every answer."""

    def __init__(self, url: str, host: str, timeout: float, path: str = "/") -> None:
        parts = urlsplit(url)
        self.address = (parts.hostname or "127.0.0.1", parts.port or 80)
        self.request = f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: conservation\r\n\r\n".encode()
        self.timeout = timeout
        self.tally = Tally()
        self.started = time.monotonic()
        self._phase: Phase | None = None
        self._phase_changed = asyncio.Event()
        self._next_slot = 0.0

    def set_phase(self, phase: Phase | None) -> None:
        """Switch every client to ``phase`` (None: finish the request in hand, then stop)."""
        self._phase = phase
        self._next_slot = time.monotonic()
        self._phase_changed.set()
        self._phase_changed = asyncio.Event()

    async def run(self, connections: int) -> Tally:
        """Run ``connections`` clients until ``set_phase(None)``; every request sent is in the tally."""
        await asyncio.gather(*(self._client(i) for i in range(connections)))
        return self.tally

    async def _client(self, index: int) -> None:
        reader: asyncio.StreamReader | None = None
        writer: asyncio.StreamWriter | None = None
        try:
            while (phase := self._phase) is not None:
                if index >= phase.clients:
                    if writer is not None:  # idle: let the server's keep-alive timeout never matter
                        writer.close()
                        reader = writer = None
                    await self._phase_changed.wait()
                    continue
                if phase.rate:
                    await self._pace(phase.rate)
                    if self._phase is not phase:
                        continue
                if reader is not None and writer is not None and reader.at_eof():
                    writer.close()  # the server closed it while we were idle: no request went out on it
                    reader = writer = None
                if writer is None:
                    try:
                        reader, writer = await asyncio.open_connection(*self.address)
                    except OSError as exc:
                        self.tally.connect_errors.append(f"connection {index}: {exc}")
                        await asyncio.sleep(0.05)
                        continue
                assert reader is not None
                if not await self._exchange(index, reader, writer):
                    writer.close()
                    reader = writer = None
        finally:
            if writer is not None:
                writer.close()

    async def _pace(self, rate: float) -> None:
        """Take the next send slot of a shared schedule at ``rate`` req/s; if the clients fall behind,
        slots are not saved up (no burst to catch up)."""
        now = time.monotonic()
        slot = max(self._next_slot, now)
        self._next_slot = slot + 1.0 / rate
        if slot > now:
            await asyncio.sleep(slot - now)

    async def _exchange(self, index: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        """Send one request and account for it; True if the connection may carry the next one."""
        tally = self.tally
        tally.sent += 1
        number = tally.sent
        sent = time.monotonic()
        since = sent - self.started
        try:
            writer.write(self.request)
            async with asyncio.timeout(self.timeout):
                answer = await read_answer(reader)
        except TimeoutError:
            tally.lost.append(Lost(number, index, since, f"no complete answer within {self.timeout:g}s"))
            return False
        except Unanswered as exc:
            tally.lost.append(
                Lost(number, index, since, f"{exc} ({time.monotonic() - sent:.3f}s after sending)")
            )
            return False
        except OSError as exc:
            tally.lost.append(Lost(number, index, since, f"{type(exc).__name__}: {exc}"))
            return False
        tally.record(since, time.monotonic() - sent, answer.status)
        if extra := buffered(reader):
            tally.lost.append(
                Lost(number, index, since, f"{extra} bytes after its complete {answer.status} answer")
            )
            tally.codes[answer.status] -= 1  # counted among the violations, not the answers
            return False
        return answer.keep_alive


async def get_json(url: str, timeout: float = 5.0) -> Any:
    """GET a JSON document (the admin port's /status) with the harness's own exact framing."""
    parts = urlsplit(url)
    async with asyncio.timeout(timeout):
        reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
        try:
            writer.write(
                f"GET {parts.path or '/'} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n".encode()
            )
            head = await reader.readuntil(b"\r\n\r\n")
            length = next(
                int(line.split(b":", 1)[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            )
            body = await reader.readexactly(length)
        finally:
            writer.close()
    if not head.startswith(b"HTTP/1.1 200"):
        first_line = head.split(b"\r\n", 1)[0].decode(errors="replace")
        raise RuntimeError(f"GET {url}: {first_line}: {body[:200]!r}")
    return json.loads(body)


# ---- hey: an off-the-shelf count ----------------------------------------------------------------------


def hey_command(url: str, host: str, requests: int, connections: int, timeout: float) -> list[str]:
    return ["hey", "-n", str(requests), "-c", str(connections), "-t", str(max(1, round(timeout))),
            "-host", host, "-disable-compression", url]  # fmt: skip


def parse_hey(output: str, requests: int) -> Tally:
    """Counts from hey's report: each line of "Status code distribution" is answers with that code,
    each of "Error distribution" requests with no answer (timeouts, resets). hey prints no per-request
    send times, so a lost request here is known only by its error text.

    Note: Go's HTTP client silently resends a GET whose reused keep-alive connection was closed before
    any answer byte, so hey can hide a loss that the raw clients see."""
    tally = Tally(sent=requests)
    section = ""
    for line in output.splitlines():
        stripped = line.strip()
        if stripped.endswith("distribution:"):
            section = stripped
            continue
        if not stripped.startswith("[") or "]" not in stripped:
            continue
        key, _, rest = stripped[1:].partition("]")
        if section.startswith("Status code"):  # "[200]	990 responses"
            tally.codes[int(key)] += int(rest.split()[0])
        elif section.startswith("Error"):  # "[3]	Get "http://...": context deadline exceeded"
            tally.lost += [Lost(0, -1, float("nan"), f"hey: {rest.strip()}")] * int(key)
    return tally


def hey_percentiles(output: str) -> tuple[float, float]:
    """p50 and p99 in seconds from hey's latency distribution (NaN when it printed none)."""
    found: dict[str, float] = {}
    for line in output.splitlines():
        parts = line.split()
        if len(parts) >= 4 and parts[0].endswith("%") and parts[1] == "in":
            found[parts[0]] = float(parts[2])
    return found.get("50%", float("nan")), found.get("99%", float("nan"))


async def run_hey(url: str, host: str, requests: int, connections: int, timeout: float) -> tuple[Tally, str]:
    """Run hey to completion; the tally of its report and the report itself."""
    proc = await asyncio.create_subprocess_exec(
        *hey_command(url, host, requests, connections, timeout),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await proc.communicate()
    text = out.decode(errors="replace")
    if proc.returncode != 0:
        raise RuntimeError(f"hey exited {proc.returncode}: {text[-500:]}")
    return parse_hey(text, requests), text


# ---- kpa up as its own process -----------------------------------------------------------------------


@dataclass(frozen=True)
class PodProcesses:
    """One pod's two processes, paired by the user container's port (the queue-proxy's USER_PORT)."""

    queue_proxy: int
    user: int
    user_port: int


@dataclass(frozen=True)
class Usage:
    rss: int  # bytes
    fds: int


def usage(pid: int) -> Usage:
    process = psutil.Process(pid)
    return Usage(process.memory_info().rss, process.num_fds())


def _environ(pid: int) -> dict[str, str]:
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return {}
    return dict(item.split("=", 1) for item in raw.decode(errors="replace").split("\0") if "=" in item)


class KpaUp:
    """`kpa up STACK --port 0 --admin-port 0 --no-live --ready-file ...` as a child process."""

    def __init__(self, stack_text: str, workdir: Path, *, revision: str) -> None:
        self.stack_text = textwrap.dedent(stack_text)
        self.workdir = workdir
        self.revision = revision
        self.pid = 0
        self.entry = ""
        self.admin = ""
        self.seen_pids: set[int] = set()
        self.killed: list[str] = []
        self._proc: asyncio.subprocess.Process | None = None

    async def __aenter__(self) -> KpaUp:
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = self.workdir / "stack.yaml"
        config.write_text(self.stack_text)
        ready = self.workdir / "ready.json"
        ready.unlink(missing_ok=True)
        with (self.workdir / "kpa-up.log").open("ab") as log:
            self._proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "kpa", "up", str(config), "--port", "0", "--admin-port", "0",
                "--no-live", "--ready-file", str(ready), "--log-dir", str(self.workdir / "pods"),
                stdin=asyncio.subprocess.DEVNULL, stdout=log, stderr=log,
            )  # fmt: skip
        self.pid = self._proc.pid
        deadline = time.monotonic() + 30
        while not ready.exists() or not ready.read_text().endswith("\n"):
            if self._proc.returncode is not None or time.monotonic() > deadline:
                await self._stop()
                raise RuntimeError(f"kpa up did not start: {self.log_tail()}")
            await asyncio.sleep(0.05)
        doc = json.loads(ready.read_text())
        self.entry, self.admin = doc["entry"], doc["admin"]
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._stop()

    async def _stop(self) -> None:
        """SIGTERM kpa up (by its pid), SIGKILL after 20 s; then no pod process it ran may survive."""
        proc = self._proc
        if proc is None:
            return
        with contextlib.suppress(Exception):
            self.seen_pids.update((await self.status())["pod_pids"])
        if proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 20)
            except TimeoutError:
                proc.kill()
                await proc.wait()
                raise AssertionError(f"kpa up ignored SIGTERM for 20 s: {self.log_tail()}") from None
        deadline = time.monotonic() + 5
        while survivors := [pid for pid in self.seen_pids if _alive(pid)]:
            if time.monotonic() > deadline:
                for pid in survivors:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                raise AssertionError(f"pod processes left running after kpa up stopped: {survivors}")
            await asyncio.sleep(0.05)

    def log_tail(self, lines: int = 20) -> str:
        with contextlib.suppress(OSError):
            return "\n".join((self.workdir / "kpa-up.log").read_text(errors="replace").splitlines()[-lines:])
        return ""

    async def status(self) -> Status:
        doc = await get_json(self.admin + "/status")
        self.seen_pids.update(doc.get("pod_pids", []))
        return doc

    def row(self, status: Status) -> Status:
        return next(r for r in status["revisions"] if r["name"] == self.revision)

    async def pods(self) -> list[PodProcesses]:
        """The live pods' processes, from /status's pod pids and each process's environment."""
        pids = (await self.status())["pod_pids"]
        proxies: dict[int, int] = {}
        users: dict[int, int] = {}
        for pid in pids:
            env = _environ(pid)
            if "USER_PORT" in env and "SERVING_POD" in env:
                proxies[int(env["USER_PORT"])] = pid
            elif env.get("PORT", "").isdigit():
                users[int(env["PORT"])] = pid
        return [PodProcesses(proxies[port], users[port], port) for port in sorted(proxies) if port in users]

    def usage(self) -> Usage:
        return usage(self.pid)

    async def kill(self, which: str, choose: Callable[[Sequence[PodProcesses]], PodProcesses]) -> str:
        """SIGKILL one pod's ``"user"`` container or ``"queue-proxy"`` (picked by ``choose``)."""
        pods = await self.pods()
        if not pods:
            raise AssertionError(f"no pod to kill the {which} of")
        pod = choose(pods)
        pid = pod.user if which == "user" else pod.queue_proxy
        os.kill(pid, signal.SIGKILL)
        line = f"SIGKILL {which} pid {pid} (pod with user port {pod.user_port})"
        self.killed.append(line)
        return line


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def kill_action(which: str) -> Callable[[KpaUp], Awaitable[str]]:
    """A phase action: SIGKILL the ``which`` process of the first pod (lowest user port)."""

    async def action(up: KpaUp) -> str:
        return await up.kill(which, lambda pods: pods[0])

    return action


# ---- a pattern: stack + phases + what must be seen ------------------------------------------------------


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


# ---- the patterns ---------------------------------------------------------------------------------------

TIMEOUT_SECONDS = 10
"""The patterns' revision timeout: a lost request is declared after TIMEOUT_SECONDS + MARGIN."""

HTTP_SERVER = ["sh", "-c", "exec python3 -m http.server $PORT --bind 127.0.0.1"]


def sample_app(delay: float) -> list[str]:
    return ["python", "-m", "kpa.sample_app", "--delay", str(delay)]


def stack_yaml(
    name: str, command: list[str], cc: int, annotations: dict[str, str], config: dict[str, str] | None = None
) -> str:
    """A one-revision stack file with short windows (6 s stable, 3 s panic, 1 s grace) so scale changes
    happen within seconds, and the patterns' revision timeout."""
    doc = {
        "config": {"stable-window": "6s", "scale-to-zero-grace-period": "1s", "panic-window-percentage": "50"}
        | (config or {}),
        "revisions": [
            {
                "name": name,
                "command": command,
                "containerConcurrency": cc,
                "timeoutSeconds": TIMEOUT_SECONDS,
                "annotations": {f"autoscaling.knative.dev/{k}": v for k, v in annotations.items()},
            }
        ],
    }
    return yaml.safe_dump(doc, sort_keys=False)


@dataclass(frozen=True)
class Pattern:
    """A named way of loading `kpa up`: its stack, the state to wait for before the load, the phases at
    a duration ``scale`` (1 = the test's short form), and ``check``: what must have been seen for the
    pattern to have really happened (a list of problems, empty when it did)."""

    name: str
    what: str
    stack: str
    ready: Callable[[Status], bool]
    ready_what: str
    phases: Callable[[float], list[Phase]]
    check: Callable[[PatternResult], list[str]]
    client: str = "raw"  # or "hey": one constant phase sent by hey -n
    host: str = "web"


def _ready_at_least(pods: int) -> Callable[[Status], bool]:
    return lambda row: row["ready_pods"] >= pods


def _expect(condition: bool, problem: str) -> list[str]:
    return [] if condition else [problem]


def _modes(result: PatternResult, expected: set[str]) -> list[str]:
    return _expect(
        expected <= result.modes(), f"modes seen {sorted(result.modes())}, expected {sorted(expected)}"
    )


def _kills(result: PatternResult, count: int) -> list[str]:
    kills = [e for e in result.events if "SIGKILL" in e]
    return _expect(len(kills) == count, f"{len(kills)} kills done, expected {count}: {result.events}")


def _scaled_up_and_down(result: PatternResult) -> list[str]:
    ready = result.ready_pods()
    peak = max(ready, default=0)
    after_peak = ready[ready.index(peak) :] if ready else []
    return _expect(peak >= 3, f"never scaled up: ready pods {ready}") + _expect(
        min(after_peak, default=peak) < peak, f"never scaled down under load: ready pods {ready}"
    )


def _to_zero_and_back(result: PatternResult) -> list[str]:
    ready = result.ready_pods()
    zero = ready.index(0) if 0 in ready else None
    return _expect(zero is not None, f"never at zero pods: {ready}") + _expect(
        zero is not None and max(ready[zero:], default=0) >= 1, f"never back from zero: {ready}"
    )


def _served(result: PatternResult, key: str) -> list[str]:
    return _expect(result.served().get(key, 0) > 0, f"no request served {key}: {result.served()}")


def patterns() -> list[Pattern]:
    """Every pattern the conservation test and benchmark run."""
    at_zero = {"initial-scale": "0", "min-scale": "0", "max-scale": "4", "target": "1"}
    two = {"min-scale": "2", "max-scale": "2"}
    return [
        Pattern(
            "proxy",
            "issue 11 item 1: http.server, cc 4, min-scale 2, max-scale 4, activator in the path, 16 clients",
            stack_yaml("web", HTTP_SERVER, 4, {"min-scale": "2", "max-scale": "4"}),
            _ready_at_least(2),
            "2 ready pods",
            lambda s: [Phase(16, 4 * s)],
            lambda r: _modes(r, {"proxy"}) + _served(r, "via_activator"),
        ),
        Pattern(
            "proxy-hey",
            "the same stack and 16 connections, counted by hey",
            stack_yaml("web", HTTP_SERVER, 4, {"min-scale": "2", "max-scale": "4"}),
            _ready_at_least(2),
            "2 ready pods",
            lambda s: [Phase(16, 4 * s)],
            lambda r: _served(r, "via_activator"),
            client="hey",
        ),
        Pattern(
            "zero-and-back",
            "cc 1, target 1, starts at zero: held, scaled from zero, idle to zero, back from zero",
            stack_yaml("web", sample_app(0.02), 1, at_zero, {"allow-zero-initial-scale": "true"}),
            lambda row: row["pods"] == 0,
            "zero pods",
            lambda s: [
                Phase(8, 3 * s),
                Phase(0, 25, until=lambda row: row["pods"] == 0, until_what="scaled to zero"),
                Phase(8, 3 * s),
            ],
            lambda r: _to_zero_and_back(r) + _modes(r, {"proxy"}),
        ),
        Pattern(
            "serve",
            "min-scale 2, target-burst-capacity 0: straight to the queue-proxies, 16 clients",
            stack_yaml("web", HTTP_SERVER, 4, two | {"target-burst-capacity": "0"}),
            lambda row: row["ready_pods"] >= 2 and row["mode"] == "serve",
            "2 ready pods in serve mode",
            lambda s: [Phase(16, 4 * s)],
            lambda r: _modes(r, {"serve"}) + _served(r, "direct"),
        ),
        Pattern(
            "mode-flip",
            "2 pods of cc 4, burst capacity 4: 2 → 10 → 2 clients of 50 ms work cross EBC = 0 both ways",
            stack_yaml("web", sample_app(0.05), 4, two | {"target-burst-capacity": "4"}),
            lambda row: row["ready_pods"] >= 2 and row["mode"] == "serve",
            "2 ready pods in serve mode",
            lambda s: [
                Phase(2, 2 * s),
                Phase(10, 30, until=lambda row: row["mode"] == "proxy", until_what="flipped to proxy"),
                Phase(10, 2 * s),
                Phase(2, 30, until=lambda row: row["mode"] == "serve", until_what="flipped to serve"),
                Phase(2, 1 * s),
            ],
            lambda r: _served(r, "direct") + _served(r, "via_activator"),
        ),
        Pattern(
            "scale-up-down",
            "cc 2, target 1, serve mode: 1 → 8 → 1 clients of 50 ms work; pods drained while load goes on",
            stack_yaml(
                "web",
                sample_app(0.05),
                2,
                {"target": "1", "min-scale": "1", "max-scale": "6", "target-burst-capacity": "0"},
                {"panic-threshold-percentage": "1000"},
            ),
            _ready_at_least(1),
            "1 ready pod",
            lambda s: [
                Phase(1, 1 * s),
                Phase(8, 30, until=lambda row: row["ready_pods"] >= 3, until_what="scaled to 3+ pods"),
                Phase(8, 2 * s),
                Phase(1, 30, until=lambda row: row["ready_pods"] <= 2, until_what="scaled down to 2 pods"),
                Phase(1, 1 * s),
            ],
            _scaled_up_and_down,
        ),
        Pattern(
            "kill-proxy-mode",
            "2 pods, activator in the path, 16 clients: SIGKILL one pod's user container, then a queue-proxy",
            stack_yaml("web", sample_app(0.005), 4, two),
            _ready_at_least(2),
            "2 ready pods",
            lambda s: [
                Phase(16, 1.5 * s),
                Phase(16, 2 * s, action=kill_action("user")),
                Phase(16, 2 * s, action=kill_action("queue-proxy")),
            ],
            lambda r: _kills(r, 2) + _modes(r, {"proxy"}),
        ),
        Pattern(
            "kill-serve-mode",
            "2 pods, serve mode, 16 clients: SIGKILL one pod's user container, then a queue-proxy",
            stack_yaml("web", sample_app(0.005), 4, two | {"target-burst-capacity": "0"}),
            lambda row: row["ready_pods"] >= 2 and row["mode"] == "serve",
            "2 ready pods in serve mode",
            lambda s: [
                Phase(16, 1.5 * s),
                Phase(16, 2 * s, action=kill_action("user")),
                Phase(16, 2 * s, action=kill_action("queue-proxy")),
            ],
            lambda r: _kills(r, 2) + _served(r, "direct"),
        ),
    ]


HEY_RATE_GUESS = 1500
"""Requests per second hey is asked for (it sends a count, not a duration): about what kpa up's proxy
mode serves on a shared 2-core machine, so a hey phase lasts roughly its nominal seconds."""


async def run_named(pattern: Pattern, workdir: Path, scale: float = 1.0) -> PatternResult:
    """Start `kpa up` with the pattern's stack, wait for its ready state, drive its phases (raw clients
    or hey), and stop `kpa up` (which must leave no pod process)."""
    timeout = TIMEOUT_SECONDS + MARGIN
    async with KpaUp(pattern.stack, workdir, revision=pattern.host) as up:
        await wait_for(up, pattern.ready, 30, pattern.ready_what)
        if pattern.client == "raw":
            return await run_pattern(
                pattern.name, up, pattern.phases(scale), host=pattern.host, timeout=timeout
            )
        (phase,) = pattern.phases(scale)
        before, started = up.usage(), time.monotonic()
        # hey sends requests // connections per connection: ask for a multiple, or the rest never goes out.
        requests = max(1, round(phase.seconds * HEY_RATE_GUESS / phase.clients)) * phase.clients
        tally, report = await run_hey(up.entry, pattern.host, requests, phase.clients, timeout)
        seconds = time.monotonic() - started
        status = await up.status()
        row = dict(up.row(status), served=status.get("served", {}))
        samples = [(seconds, row)]
        return PatternResult(
            pattern.name, tally, seconds, samples, before, up.usage(), [], hey_percentiles(report)
        )
