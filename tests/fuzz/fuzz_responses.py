"""The fuzzer's oracle for what a server writes back: a strict HTTP/1.x response-stream framer.

Why our own and not httptools: the servers under test parse with httptools (llhttp); an oracle built on
the same parser would accept whatever that parser gets wrong. This one knows only RFC 9112 framing —
status line, field lines, Content-Length, chunked and close-delimited bodies, 1xx interim answers, and
no body for HEAD, 204 and 304 — and says plainly what it found malformed.
"""

from __future__ import annotations

import re
from collections.abc import Sequence


class MalformedResponse(Exception):
    """The server wrote bytes that are not a well-framed HTTP/1.x response stream."""


_TOKEN = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_STATUS_LINE = re.compile(rb"HTTP/1\.([01]) ([1-5][0-9][0-9])(?: [^\x00-\x08\x0a-\x1f\x7f]*)?")
_BAD_VALUE = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")


class ResponseReader:
    """Frames a response stream: heads, Content-Length/chunked/close-delimited bodies, 1xx, HEAD."""

    def __init__(self, methods: Sequence[bytes]) -> None:
        self.methods = list(methods)  # request methods in order: a response to HEAD has no body
        self.statuses: list[int] = []  # final (>= 200) responses
        self.closing = False  # the last final response said the connection ends after it
        self._buf = bytearray()
        self._state = "head"
        self._remaining = 0
        self._head_error_body = False

    @property
    def between(self) -> bool:
        """No response is partly received."""
        return self._state == "head" and not self._buf

    def feed(self, data: bytes) -> None:
        if self.closing and self.between and data:
            raise MalformedResponse(f"bytes after a response that closes the connection: {data[:80]!r}")
        self._buf += data
        while self._step():
            pass

    def eof(self) -> None:
        if self._state == "fixed" and self._head_error_body:
            return  # it was a HEAD's error answer without a body after all
        if self._state in ("fixed", "chunk-size", "chunk-data", "trailers"):
            raise MalformedResponse(f"connection closed inside a response body ({self._state})")
        if self._state == "head" and self._buf:
            raise MalformedResponse(f"connection closed inside a response head: {bytes(self._buf[:80])!r}")

    def _step(self) -> bool:
        buf = self._buf
        state = self._state
        if state in ("close", "switched"):
            buf.clear()
            return False
        if state == "head":
            if not buf:
                return False
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if len(buf) > 1 << 20 or not b"HTTP/1."[: len(buf)].startswith(bytes(buf[:7])):
                    raise MalformedResponse(f"not a response head: {bytes(buf[:80])!r}")
                return False
            self._head(bytes(buf[:end]))
            del buf[: end + 4]
            return True
        if state == "fixed":
            take = min(len(buf), self._remaining)
            del buf[:take]
            self._remaining -= take
            if self._remaining == 0:
                self._state = "head"
                return True
            return False
        line_end = buf.find(b"\r\n")
        if state == "chunk-data":
            if len(buf) < self._remaining + 2:
                return False
            if buf[self._remaining : self._remaining + 2] != b"\r\n":
                raise MalformedResponse("chunk data not followed by CRLF")
            del buf[: self._remaining + 2]
            self._state = "chunk-size"
            return True
        if line_end < 0:
            if len(buf) > 4096:
                raise MalformedResponse(f"unterminated chunk line: {bytes(buf[:80])!r}")
            return False
        line = bytes(buf[:line_end])
        del buf[: line_end + 2]
        if state == "chunk-size":
            size = line.split(b";", 1)[0].strip()
            if not re.fullmatch(rb"[0-9a-fA-F]{1,15}", size):
                raise MalformedResponse(f"bad chunk size line {line[:80]!r}")
            self._remaining = int(size, 16)
            self._state = "chunk-data" if self._remaining else "trailers"
            return True
        if line == b"":  # trailers end
            self._state = "head"
        return True

    def _head(self, head: bytes) -> None:
        lines = head.split(b"\r\n")
        match = _STATUS_LINE.fullmatch(lines[0])
        if match is None:
            raise MalformedResponse(f"bad status line {lines[0][:80]!r}")
        minor, status = match.group(1), int(match.group(2))
        fields: dict[bytes, list[bytes]] = {}
        for line in lines[1:]:
            name, colon, value = line.partition(b":")
            if not colon or not _TOKEN.fullmatch(name) or _BAD_VALUE.search(value):
                raise MalformedResponse(f"bad header line {line[:80]!r}")
            fields.setdefault(name.lower(), []).append(value.strip(b" \t"))
        if status < 200:
            if status == 101:
                self._state = "switched"
            return
        method = self.methods[len(self.statuses)] if len(self.statuses) < len(self.methods) else b"GET"
        self.statuses.append(status)
        connection = b",".join(fields.get(b"connection", [])).lower()
        self.closing = b"close" in connection or (minor == b"0" and b"keep-alive" not in connection)
        lengths = set(fields.get(b"content-length", []))
        encodings = b",".join(fields.get(b"transfer-encoding", [])).lower()
        if len(lengths) > 1 or (lengths and not next(iter(lengths)).isdigit()):
            raise MalformedResponse(f"bad Content-Length {sorted(lengths)!r}")
        if encodings and lengths:
            raise MalformedResponse("response has both Content-Length and Transfer-Encoding")
        # A server that rejects a request it could not parse may not know it was HEAD: an error answer
        # that closes the connection may then carry its Content-Length body (curl reads it the same way).
        self._head_error_body = method == b"HEAD" and status >= 400 and self.closing and bool(lengths)
        if (method == b"HEAD" and not self._head_error_body) or status in (204, 304):
            self._state = "head"
        elif encodings:
            self._state = "chunk-size" if encodings.rsplit(b",", 1)[-1].strip() == b"chunked" else "close"
        elif lengths:
            self._remaining = int(next(iter(lengths)))
            self._state = "fixed" if self._remaining else "head"
        else:
            self._state = "close"
