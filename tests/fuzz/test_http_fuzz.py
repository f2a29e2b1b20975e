"""HTTP fuzzing of every server we run (a short seeded form of benchmarks/bench_fuzz.py), and the
defects the fuzzer found, each pinned by the case that showed it.

The seeded run sends the same few hundred grammar-built, bent requests to each server over loopback
and requires: no crash, no hang, no unhandled error logged, no malformed response, 400 for every
request-smuggling shape, and a plain request still answered 200 after each batch. Each defect the
fuzzer found has its own test below, built from the case that showed it (all four were in the HTTP
engine, now httpengine/connection.py, and are fixed).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
import uvloop
from fuzz_cases import Case
from fuzz_targets import SERVERS, standard_targets
from http_fuzz import BOUND, exchange, fuzz

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "component"))
from queueproxy_fixtures import UserContainer, run, running_queue_proxy, wait_ready

from httpengine.errors import ClientDisconnected
from httpengine.request import Request
from httpengine.response import Response
from httpengine.server import HttpServer

pytestmark = pytest.mark.timeout(90)

SEED = 20261207
CASES = 240  # per server: every case kind comes up several times


def test_coverage_guided_engine_run_is_clean(tmp_path):
    """A short atheris run (the benchmark runs 10,000 inputs): the harness works, libFuzzer finds new
    coverage from the grammar seeds, and no input hangs the engine, gets a malformed answer or makes
    it log an error."""
    here = Path(__file__).resolve().parent
    findings = tmp_path / "findings.jsonl"
    done = subprocess.run(
        [sys.executable, str(here / "atheris_engine.py"), str(findings), str(tmp_path / "corpus"),
         "-atheris_runs=501", "-seed=1", f"-dict={here / 'http.dict'}", "-max_len=4096", "-len_control=0"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    lines = [json.loads(line) for line in findings.read_text().splitlines()]
    assert [line for line in lines if "finding" in line] == []
    assert lines[-1]["stats"]["inputs"] == 500
    assert "NEW" in done.stderr  # coverage feedback reached libFuzzer


@pytest.mark.parametrize("name", SERVERS)
def test_seeded_fuzz_run_finds_no_crash_hang_unhandled_error_or_smuggling(name, tmp_path):
    target = standard_targets(tmp_path)[name]
    target.start()
    try:
        report = uvloop.run(fuzz(target, cases=CASES, seed=SEED))
    finally:
        target.stop()
    assert report.cases == CASES
    findings = "\n".join(f.describe() for f in report.findings[:10])
    assert not report.findings, f"{len(report.findings)} finding(s) against {name}:\n{findings}"
    assert report.liveness_ok and report.liveness_checks >= CASES // 200
    assert report.verdicts["answered"] > CASES // 2, f"too few answered cases: {dict(report.verdicts)}"


async def _sync_server() -> tuple[HttpServer, int]:
    def handler(
        request: Request, response: Response
    ) -> None:  # answers at once, as probes and the predictor do
        response.send(200, b"ok\n")

    server = HttpServer(handler, name="sync")
    _, port = await server.start("127.0.0.1", 0)
    return server, port


def test_engine_closes_an_upgrade_request_answered_at_once_when_the_client_leaves():
    """Found against the predictor (CONNECT /v2 got 405, then the connection stayed open 75 s after
    the client's EOF): the engine pauses reading on HttpParserUpgrade, a handler that answers at once
    finishes the response before ``keep_alive`` is turned off, and nothing resumes reading."""

    async def body() -> None:
        server, port = await _sync_server()
        try:
            for data in (
                b"GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
                b"CONNECT /v2 HTTP/1.1\r\nHost: localhost\r\n\r\n",
            ):
                outcome = await exchange("127.0.0.1", port, Case(0, "upgrade", data, (b"GET",), 1))
                assert outcome.verdict == "answered", f"{data!r}: {outcome}"
        finally:
            await server.shutdown(grace=0.0)

    run(body, timeout=10)


def test_queue_proxy_answers_an_upgrade_request_that_carries_a_body_and_frees_its_slot():
    """Found against the queue-proxy, the activator and kpa up's entry: llhttp ends an upgrade request
    at its head (the body is the new protocol's), so the request goes upstream declaring
    Content-Length: 16 with no body; the user container waits for 16 bytes, the client's EOF is never
    read (reading is paused) and the breaker slot is held for the whole revision timeout. With
    containerConcurrency such requests the queue-proxy serves nothing else."""
    data = (
        b"PUT /count HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
        b'Content-Length: 16\r\n\r\n{"k": [1, 2, 3]}'
    )

    async def body() -> None:
        async with (
            UserContainer() as user,
            running_queue_proxy(user.port, container_concurrency=1) as (proxy, ports),
        ):
            await wait_ready(proxy)
            outcome = await exchange(
                "127.0.0.1", ports["serving_port"], Case(0, "upgrade-body", data, (b"PUT",), 1)
            )
            assert outcome.verdict == "answered", outcome
            plain = Case(1, "valid", b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n", (b"GET",), 1)
            after = await exchange("127.0.0.1", ports["serving_port"], plain, BOUND)
            assert after.statuses == (200,), f"the slot is still held: {after}"

    run(body, timeout=15)


TRUNCATED_PIPELINE = (  # case 72 of the seeded run against the queue-proxy
    b"GET / HTTP/1.1\r\nX-Empty: \r\nAccept: */*;q=0.8, text/plain\r\nHost: localhost\r\n\r\n"
    b"DELETE /items/7 HTTP/1.1\r\nHost: localhost\r\nAccept: */*;q=0.8, text/plain\r\n"
    b"user-agent: fuzz/1.0 (x; y)\r\n\r\n"
    b"PUT /items/7 HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n"
    b"Content-Type: application/json\r\nuser-agent: fuzz/1.0 (x; y)\r\nX-Empty: \r\n"
    b'Accept: */*;q=0.8, text/plain\r\n\r\na;x=y\r\n{"k": [1, \r\n6\r\n2, 3]}\r\n0'
)


def test_a_pipeline_truncated_inside_a_chunked_body_logs_no_error_behind_the_queue_proxy(tmp_path):
    """Found by the seeded run (case 72): the client sends two requests and half of a chunked PUT,
    then leaves; the queue-proxy drops its upstream connection while the sample app answers the PUT
    without reading its body, and the engine's lingering close called ``write_eof`` on the dropped
    socket: ENOTCONN raised into the handler ("handler failed for PUT" and a traceback, 4 runs in 5).
    Five tries, each must end cleanly with no error logged by either process."""
    target = standard_targets(tmp_path)["queue-proxy"]
    target.start()
    try:
        case = Case(72, "truncated", TRUNCATED_PIPELINE, (b"GET", b"DELETE", b"PUT"), None, truncated=True)

        async def body() -> list[str]:
            errors = []
            for _ in range(5):
                marks = target.marks()
                outcome = await exchange("127.0.0.1", target.port, case)
                assert outcome.verdict in ("answered", "closed", "reset"), outcome
                await asyncio.sleep(0.1)  # let a log line written at the close reach the pipe
                errors.append(target.errors_since(marks))
            return errors

        errors = uvloop.run(body())
    finally:
        target.stop()
    assert not any(errors), "\n".join(e for e in errors if e)[:3000]


def test_engine_ends_a_running_request_whose_chunked_body_turns_malformed():
    """Found against kpa up's entry (case 98 of the seeded run, 1 run in 8: a 5,000-byte chunk
    extension split across two reads). When llhttp rejects bytes inside the body of the request
    already running, the engine queues its 400 behind that request's answer and pauses reading; the
    handler waits for body bytes that will never come and the client's EOF is never read — the
    connection (and a queue-proxy's breaker slot) is held until the 60 s body timeout."""
    head = b"PUT /count HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    data = head + b"5\r\nabcde\r\nzz\r\n"  # the second piece, 0.1 s later, is not a chunk-size line

    async def handler(request: Request, response: Response) -> None:
        total = 0
        with contextlib.suppress(ClientDisconnected):
            while chunk := await request.body.read():
                total += len(chunk)
        if not response.finished:
            response.send(200, b"%d\n" % total)

    async def body() -> None:
        server = HttpServer(handler, name="reader")
        _, port = await server.start("127.0.0.1", 0)
        try:
            case = Case(98, "chunk-size", data, (b"PUT",), None, cuts=(len(head) + 10,), pause=0.1)
            outcome = await exchange("127.0.0.1", port, case)
            assert outcome.verdict in ("answered", "closed", "reset"), outcome
        finally:
            await server.shutdown(grace=0.0)

    run(body, timeout=10)
