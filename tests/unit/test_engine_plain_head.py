"""Which upstream response heads the pool passes through unparsed, and which go through the parser."""

import pytest

from httpengine.head import HeadMemo, plain_head

PLAIN = (
    b"HTTP/1.1 200 OK\r\ndate: Sun, 22 Nov 2026 06:00:00 GMT\r\nserver: uvicorn\r\n"
    b"content-type: text/plain\r\ncontent-length: 25\r\n\r\n"
)


@pytest.mark.parametrize(
    ("head", "verdict"),
    [
        (PLAIN, (200, 25)),
        (PLAIN.replace(b"200 OK", b"503 Service Unavailable"), (503, 25)),
        (PLAIN.replace(b"content-length: 25", b"Content-Length:\t7 "), (200, 7)),
        (PLAIN.replace(b"HTTP/1.1", b"HTTP/1.0"), None),  # the client may need other framing
        (PLAIN.replace(b"200 OK", b"101 Switching Protocols"), None),
        (PLAIN.replace(b"content-length: 25\r\n", b""), None),  # no length: close-delimited or chunked
        (PLAIN.replace(b"server: uvicorn", b"content-length: 25"), None),  # two lengths
        (PLAIN.replace(b"server: uvicorn", b"Transfer-Encoding: chunked"), None),
        (PLAIN.replace(b"server: uvicorn", b"Connection: close"), None),
        (PLAIN.replace(b"server: uvicorn", b"keep-alive: timeout=5"), None),
        (PLAIN.replace(b"server: uvicorn", b"Proxy-Authenticate: Basic"), None),
        (PLAIN.replace(b"server: uvicorn", b"TE: trailers"), None),
        (PLAIN.replace(b"server: uvicorn", b"trailer: x-checksum"), None),
        (PLAIN.replace(b"server: uvicorn", b"upgrade: h2c"), None),
        (PLAIN.replace(b"server: uvicorn", b"x-connection: fine"), (200, 25)),  # only whole names block
        (PLAIN.replace(b"\r\nserver", b"\nserver"), None),  # a bare LF
        (PLAIN.replace(b"uvicorn", b"uvi\rcorn"), None),  # a bare CR
        (PLAIN.replace(b"\r\nserver", b"\r\n server"), None),  # a folded line
        (PLAIN.replace(b"\r\nserver", b"\r\n\tserver"), None),
    ],
    ids=[
        "plain-200",
        "plain-503",
        "mixed-case-length-with-tab",
        "http-1.0",
        "101-upgrade",
        "no-length",
        "two-lengths",
        "chunked",
        "connection-close",
        "keep-alive",
        "proxy-authenticate",
        "te",
        "trailer",
        "upgrade",
        "x-connection-is-fine",
        "bare-lf",
        "bare-cr",
        "folded-line",
        "folded-line-tab",
    ],
)
def test_only_plain_fixed_length_heads_skip_the_parser(head, verdict):
    assert plain_head(head) == verdict


def test_the_memo_gives_the_verdict_of_plain_head_whatever_came_before():
    memo = HeadMemo()
    chunked = PLAIN.replace(b"server: uvicorn", b"Transfer-Encoding: chunked")
    other = PLAIN.replace(b"200 OK", b"404 Not Found")
    for head in (PLAIN, PLAIN, chunked, PLAIN, other, chunked, other, PLAIN):
        assert memo.judge(head) == plain_head(head)
