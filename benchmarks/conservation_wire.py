"""One HTTP/1.1 exchange on an asyncio stream, framed exactly: the harness's own reading of answers.

The harness counts instead of trusting, so it does not read answers with the engine it checks: each
response's status line and body framing (Content-Length, chunked, or close-delimited) is parsed
here, and anything short of a complete answer is ``Unanswered``, saying how far the answer got.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit


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
