"""The plain-head check: may an upstream's response head go to the client as it came?

A proxy's fast path (``UpstreamConnection``) passes a plain fixed-length head through unparsed,
saving the parse of each header and their re-serialization. ``plain_head`` says which heads qualify;
``HeadMemo`` remembers the last verdict, since an upstream sends the same head again and again (only
its Date changes, once a second), so a repeat costs one bytes comparison.
"""

from __future__ import annotations

import re

MAX_RAW_HEAD = 16 * 1024  # a longer head goes through the parser

# Checks on the lower-cased head.
_STATUS_LINE = re.compile(rb"HTTP/1\.1 ([2-5]\d\d) [^\r\n]*\r\n")
_RAW_BLOCKER = re.compile(
    rb"\r\n(?:transfer-encoding|connection|keep-alive|proxy-[a-z-]*|te|trailer|upgrade)[ \t]*:"
)
_FOLDED = re.compile(rb"\n[ \t]")  # one regex each: an alternation of the two scans 2-3x slower
_CONTENT_LENGTH = re.compile(rb"\r\ncontent-length:[ \t]*(\d+)[ \t]*\r\n")


def plain_head(head: bytes) -> tuple[int, int] | None:
    """(status, content length) of a head the fast path may pass through as is, else None.

    Only ``HTTP/1.1 2xx-5xx`` heads with exactly one Content-Length, no hop-by-hop or framing
    headers and no oddities (bare CR/LF, folded lines) qualify; anything else goes through the
    full parser.
    """
    status_line = _STATUS_LINE.match(head)
    if status_line is None:
        return None
    lower = head.lower()
    line_ends = lower.count(b"\r\n")
    if lower.count(b"\n") != line_ends or lower.count(b"\r") != line_ends:
        return None  # a bare CR or LF
    if _FOLDED.search(lower) or _RAW_BLOCKER.search(lower):
        return None  # a folded line, or a header that needs the parser
    lengths = _CONTENT_LENGTH.findall(lower)
    if len(lengths) != 1:
        return None
    return int(status_line.group(1)), int(lengths[0])


class HeadMemo:
    """``plain_head`` with the last plain head and its verdict remembered (one per upstream)."""

    __slots__ = ("_head", "_verdict")

    def __init__(self) -> None:
        self._head = b""
        self._verdict: tuple[int, int] | None = None

    def judge(self, head: bytes) -> tuple[int, int] | None:
        if head == self._head:
            return self._verdict
        verdict = plain_head(head)
        if verdict is not None:
            self._head, self._verdict = head, verdict
        return verdict
