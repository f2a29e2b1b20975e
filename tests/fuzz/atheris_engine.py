"""Coverage-guided fuzzing of our HTTP engine (httpengine/) with atheris (libFuzzer).

    .venv/bin/python tests/fuzz/atheris_engine.py FINDINGS.jsonl CORPUS_DIR -atheris_runs=10001 -seed=1 \
        -dict=tests/fuzz/http.dict -max_len=4096 -len_control=0

An empty CORPUS_DIR is first seeded with 64 grammar-built cases (fuzz_cases.generate), so mutation
starts from real requests rather than from nothing.

Why besides the grammar fuzzer (http_fuzz.py): libFuzzer mutates bytes toward inputs that reach new
branches of our own code — the engine's parser callbacks, limits, pipelining, body streaming and
lingering close are instrumented (``atheris.instrument_imports``) — and so finds shapes no grammar
lists. Every server we run is on this engine, so its bugs are everybody's.

Each input is sent over a real loopback connection, in pieces chosen by its first bytes, to an
``HttpServer`` running in this process on its own thread and event loop, whose handler reads the
request body as it streams in and sends it back chunked. Oracle, as the grammar fuzzer's: the
connection ends within ``BOUND`` seconds of the client's EOF (else a hang), the answer is well framed
(``fuzz_responses``), and the engine logs no ERROR record. Findings are appended to FINDINGS.jsonl
(one JSON object a line, with the input's bytes as a Python literal) instead of stopping the run, so
one known defect does not hide the next; ``{"stats": ...}`` lines every 500 inputs say how far it got.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import socket
import sys
import threading
import time
from pathlib import Path

import atheris

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

with atheris.instrument_imports(include=["httpengine"]):
    from httpengine.errors import ClientDisconnected
    from httpengine.request import Request
    from httpengine.response import Response
    from httpengine.server import HttpServer

from fuzz_cases import GENERIC, generate
from fuzz_responses import MalformedResponse, ResponseReader

BOUND = 2.0


class _Errors(logging.Handler):
    """Collects the engine's ERROR records (a handler that failed, a parser callback that raised)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(self.format(record))


async def _echo(request: Request, response: Response) -> None:
    """Reads the body as it streams in, then sends it back chunked in two parts. (Echoing while still
    reading would cut the answer off whenever a client leaves mid-body, which is correct and would
    drown real findings.)"""
    try:
        body = await request.body.read_all(1 << 20)
    except ClientDisconnected:
        return
    except ValueError:
        response.send(413, b"too large for the echo\n")
        return
    response.start(200, [(b"content-type", b"application/octet-stream")])
    response.write(body[: len(body) // 2])
    await response.drain()
    response.end(body[len(body) // 2 :])


class _Server:
    """The engine on its own thread and event loop, so a hang in it cannot stop the fuzzer's clock."""

    def __init__(self) -> None:
        self.port = 0
        self.loop = asyncio.new_event_loop()
        ready = threading.Event()

        async def start() -> None:
            _, self.port = await HttpServer(_echo, name="atheris").start("127.0.0.1", 0)
            ready.set()

        threading.Thread(target=self._run, args=(start,), daemon=True).start()
        ready.wait(10)

    def _run(self, start) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.create_task(start())
        self.loop.run_forever()


def _pieces(data: bytes) -> list[bytes]:
    """The first byte picks up to 3 cut points from the next bytes; the rest is the request stream."""
    if len(data) < 2:
        return [data]
    count = data[0] % 4
    cuts_raw, stream = data[1 : 1 + count], data[1 + count :]
    cuts = sorted({c * max(1, len(stream)) // 256 for c in cuts_raw} - {0})
    bounds = [0, *cuts, len(stream)]
    return [stream[a:b] for a, b in itertools.pairwise(bounds) if b > a]


def exchange(port: int, pieces: list[bytes]) -> tuple[str, str]:
    """(verdict, detail): send the pieces, half-close, read until the server closes."""
    methods = [line.split(b" ", 1)[0] for line in b"".join(pieces).split(b"\r\n") if b" HTTP/" in line]
    reader = ResponseReader(methods or [b"GET"])
    with socket.create_connection(("127.0.0.1", port), timeout=BOUND) as conn:
        try:
            for piece in pieces:
                conn.sendall(piece)
                time.sleep(0.001 if len(pieces) > 1 else 0)
            conn.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # the server refused and closed first: judged by what it wrote
        deadline = time.monotonic() + BOUND
        try:
            while True:
                conn.settimeout(max(0.001, deadline - time.monotonic()))
                data = conn.recv(65536)
                if not data:
                    reader.eof()
                    return "closed", ""
                reader.feed(data)
        except TimeoutError:
            return "hang", f"open {BOUND:g}s after the client's EOF; statuses {reader.statuses}"
        except ConnectionError:
            return "reset", ""
        except MalformedResponse as exc:
            return "malformed", str(exc)


def seed_corpus(corpus: Path, count: int = 64) -> None:
    """Write ``count`` grammar-built cases into an empty corpus directory (one piece each: byte 0)."""
    corpus.mkdir(parents=True, exist_ok=True)
    if not any(corpus.iterdir()):
        for index in range(count):
            (corpus / f"grammar-{index}").write_bytes(b"\0" + generate(GENERIC, 1, index).data[:4000])


def main() -> None:
    findings_path = Path(sys.argv.pop(1))
    seed_corpus(Path(sys.argv[1]))
    errors = _Errors()
    logging.getLogger("httpengine").addHandler(errors)
    server = _Server()
    stats = {"inputs": 0, "hang": 0, "malformed": 0, "unhandled": 0}
    started = time.monotonic()
    out = findings_path.open("a")

    def record(kind: str, data: bytes, detail: str) -> None:
        stats[kind] += 1
        out.write(json.dumps({"finding": kind, "input": repr(data)[:2000], "detail": detail[:2000]}) + "\n")
        out.flush()

    def test_one_input(data: bytes) -> None:
        stats["inputs"] += 1
        before = len(errors.records)
        pieces = _pieces(data)
        verdict, detail = exchange(server.port, pieces)
        if verdict in ("hang", "malformed"):
            record(verdict, b"".join(pieces), detail)
        time.sleep(0.001)  # let a log record written at the close land
        if len(errors.records) > before:
            record("unhandled", b"".join(pieces), " | ".join(errors.records[before:]))
        if stats["inputs"] % 500 == 0:
            rate = stats["inputs"] / (time.monotonic() - started)
            out.write(json.dumps({"stats": {**stats, "inputs_per_s": round(rate, 1)}}) + "\n")
            out.flush()

    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
