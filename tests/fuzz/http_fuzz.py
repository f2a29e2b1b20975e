"""A grammar-based HTTP/1.1 fuzzer for every server we run, over real loopback sockets.

Why grammar-based and over sockets: our servers' parsers are httptools (llhttp) plus our own callback
code and handlers; the bugs that matter live in how those react to what llhttp lets through, split
across reads, pipelined, truncated or answered slowly — none of which a fuzzer feeding the parser in
memory sees. Each case is built from an HTTP/1.1 grammar (methods, request-targets, header fields,
Content-Length and chunked bodies, gzip) and then bent in one named way (CTL/NUL/obs-fold in fields,
duplicate Content-Length, CL+TE, chunk-size overflow, pipelining, truncation, ``Expect:
100-continue``, non-ASCII, byte flips, ...). A case is reproducible from ``(seed, index)`` alone.

The oracle, per case: the server answers with well-formed HTTP responses or closes cleanly, and once
the client has sent everything and half-closed, the connection ends within ``BOUND`` seconds (else a
*hang*); a case built well-formed must get at least one answer (else *unanswered*); a
request-smuggling shape (CL+TE, two different Content-Lengths) must get 400, never a guess. Per
batch: the server process is alive (else a *crash*), it logged no traceback or ERROR line (else an
*unhandled* error, replayed case by case to name the one that caused it), and a plain request still
gets 200 (*liveness*). Responses are read by our own strict framing parser, not httptools, so the
oracle does not share the parser under test.

    targets = fuzz_targets.standard_targets(workdir)   # queue-proxy, activator, entry, predictor, sample app
    report = asyncio.run(fuzz(targets["queue-proxy"], cases=300, seed=1))
    report.findings  # each with the case's bytes, ready to paste into a regression test
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from fuzz_cases import Case, generate
from fuzz_responses import MalformedResponse, ResponseReader
from fuzz_targets import Target

BOUND = 2.0  # seconds a server may take to end a connection after the client finished (else: a hang)
QUIET = 0.05  # after a response to a bent case: this long without bytes and the client half-closes
FIRST_WAIT = 0.25  # a bent case with no answer yet: the server may wait for more bytes; then half-close
MAX_ATTRIBUTIONS = 4  # replays (case by case) of batches that made a server log an error or crash

Verdict = str  # "answered", "closed", "reset" are fine; every other verdict is a finding
FINE = frozenset({"answered", "closed", "reset"})


@dataclass(frozen=True)
class Outcome:
    verdict: Verdict  # answered | closed | reset (fine) | hang | unanswered | malformed | smuggled | refused
    statuses: tuple[int, ...]
    seconds: float
    detail: str = ""


async def exchange(host: str, port: int, case: Case, bound: float = BOUND) -> Outcome:
    """Send ``case`` on a fresh connection and judge what comes back (see the module docstring)."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), bound)
    except (OSError, TimeoutError) as exc:
        return Outcome("refused", (), loop.time() - start, f"connect failed: {exc!r}")
    responses = ResponseReader(case.methods)
    half_closed = False
    try:
        try:
            for i, piece in enumerate(case.pieces()):
                if i and case.pause:
                    await asyncio.sleep(case.pause)
                if writer.transport.is_closing():
                    break  # the server closed already (uvloop refuses writes to a closed transport)
                writer.write(piece)
                await writer.drain()
        except ConnectionError:
            pass  # the server may reject and close before reading it all: judged by what it wrote
        deadline = loop.time() + bound
        while True:
            done = case.expect is not None and len(responses.statuses) >= case.expect and responses.between
            if not half_closed and (case.truncated or done):
                half_closed = True
                _half_close(writer)
                deadline = loop.time() + bound
            if half_closed or case.expect is not None:
                wait = deadline - loop.time()
            else:
                wait = QUIET if responses.statuses and responses.between else FIRST_WAIT
            try:
                data = await asyncio.wait_for(reader.read(65536), max(wait, 0.0))
            except TimeoutError:
                if half_closed:
                    return _judge(
                        case, responses, "hang", start, loop, f"open {bound:g}s after the client's EOF"
                    )
                if case.expect is not None:
                    return _judge(case, responses, "unanswered", start, loop, f"no answer within {bound:g}s")
                half_closed = True
                _half_close(writer)
                deadline = loop.time() + bound
                continue
            except ConnectionError:  # reset by the server, or our write hit its closed socket
                return _judge(case, responses, "reset", start, loop)
            if not data:
                responses.eof()
                return _judge(case, responses, "closed", start, loop)
            responses.feed(data)
    except MalformedResponse as exc:
        return Outcome("malformed", tuple(responses.statuses), loop.time() - start, str(exc))
    finally:
        writer.transport.abort()
        with contextlib.suppress(Exception):  # retrieve a reset's error: no "never retrieved" noise
            await asyncio.wait_for(writer.wait_closed(), 1.0)


def _half_close(writer: asyncio.StreamWriter) -> None:
    """Send our EOF, unless the server closed first (uvloop raises RuntimeError on a closed transport)."""
    if not writer.transport.is_closing():
        with contextlib.suppress(OSError, RuntimeError):
            writer.write_eof()


def _judge(
    case: Case, responses: ResponseReader, ending: str, start: float, loop, detail: str = ""
) -> Outcome:
    statuses = tuple(responses.statuses)
    seconds = loop.time() - start
    if ending in ("hang", "unanswered"):
        return Outcome(ending, statuses, seconds, detail)
    if case.smuggle and statuses != (400,):
        shown = ", ".join(map(str, statuses)) or "no response"
        return Outcome("smuggled", statuses, seconds, f"answered {shown} instead of one 400")
    if case.expect is not None and not statuses:
        return Outcome("unanswered", statuses, seconds, f"connection {ending} without an answer")
    return Outcome("answered" if statuses else ending, statuses, seconds, detail)


@dataclass(frozen=True)
class Finding:
    category: str  # crash | hang | unanswered | unhandled | malformed | smuggled | refused | liveness
    case: Case | None
    detail: str

    def describe(self) -> str:
        if self.case is None:
            return f"{self.category}: {self.detail}"
        case = self.case
        return f"{self.category} [case {case.index}, {case.kind}]: {self.detail}\n    {case.repro()}"


@dataclass
class Report:
    target: str
    cases: int = 0
    seconds: float = 0.0
    verdicts: Counter = field(default_factory=Counter)
    findings: list[Finding] = field(default_factory=list)
    liveness_checks: int = 0
    liveness_ok: bool = True  # the final check, after the last batch

    def count(self, *categories: str) -> int:
        return sum(1 for f in self.findings if f.category in categories)

    @property
    def crashes(self) -> int:
        return self.count("crash")

    @property
    def hangs(self) -> int:
        return self.count("hang", "unanswered")

    @property
    def unhandled(self) -> int:
        return self.count("unhandled")

    @property
    def rate(self) -> float:
        return self.cases / self.seconds if self.seconds else 0.0


async def liveness(target: Target, timeout: float = BOUND) -> str | None:
    """None if a plain request gets 200 on a fresh connection within ``timeout``; else why not."""
    case = Case(-1, "liveness", target.profile.liveness, (b"GET",), 1)
    outcome = await exchange("127.0.0.1", target.port, case, timeout)
    if outcome.verdict == "answered" and outcome.statuses[:1] == (200,):
        return None
    return f"liveness request got {outcome.verdict} {outcome.statuses} {outcome.detail}".strip()


async def _settled_errors(target: Target, marks: Sequence[int], settle: float = 0.05) -> str:
    await asyncio.sleep(settle)  # a log line written as the connection closed may still be in the pipe
    return target.errors_since(marks)


async def _attribute(target: Target, cases: Sequence[Case], report: Report, why: str) -> None:
    """Replay a batch one case at a time to name the case behind an error log line or a crash."""
    for case in cases:
        if target.dead():
            target.stop()
            target.start()
        marks = target.marks()
        await exchange("127.0.0.1", target.port, case)
        errors = await _settled_errors(target, marks)
        died = target.dead()
        if errors or died:
            report.findings.append(Finding("crash" if died else "unhandled", case, died or errors))
            return
    report.findings.append(Finding(why, None, "not reproduced by replaying the batch case by case"))


async def fuzz(
    target: Target,
    *,
    cases: int,
    seed: int,
    concurrency: int = 16,
    batch: int = 200,
    first: int = 0,
    progress: Callable[[int], None] | None = None,
) -> Report:
    """Run ``cases`` cases (indices ``first``...) against a started ``target``; see the module docstring."""
    report = Report(target.name)
    started = time.monotonic()
    attributions = 0
    for batch_start in range(first, first + cases, batch):
        indices = range(batch_start, min(batch_start + batch, first + cases))
        batch_cases = [generate(target.profile, seed, i) for i in indices]
        marks = target.marks()
        queue = list(reversed(batch_cases))
        found: list[Finding] = []

        async def worker(queue: list[Case], found: list[Finding]) -> None:
            while queue:
                case = queue.pop()
                outcome = await exchange("127.0.0.1", target.port, case)
                report.verdicts[outcome.verdict] += 1
                if outcome.verdict not in FINE:
                    detail = f"{outcome.detail} (statuses {list(outcome.statuses)}, {outcome.seconds:.2f}s)"
                    found.append(Finding(outcome.verdict, case, detail))

        await asyncio.gather(*(worker(queue, found) for _ in range(concurrency)))
        report.cases += len(batch_cases)
        died = target.dead()
        # After a crash, cases refused by the dead server are its consequence, not findings of their own.
        report.findings += [f for f in found if not (died and f.category == "refused")]
        new_errors = await _settled_errors(target, marks)
        if died or new_errors:
            if attributions < MAX_ATTRIBUTIONS:
                attributions += 1
                if died:
                    target.stop()
                    target.start()
                await _attribute(target, batch_cases, report, "crash" if died else "unhandled")
            else:
                report.findings.append(Finding("crash" if died else "unhandled", None, died or new_errors))
            if target.dead():
                target.stop()
                target.start()
        problem = await liveness(target)
        report.liveness_checks += 1
        report.liveness_ok = problem is None
        if problem is not None:
            report.findings.append(Finding("liveness", None, f"after case {indices[-1]}: {problem}"))
        if progress is not None:
            progress(len(indices))
    report.seconds = time.monotonic() - started
    return report
