"""HTTP/1.1 requests built from a grammar and bent one named way: the fuzzer's cases.

Each case is a connection's worth of client bytes plus what a correct server owes it: the number of
well-formed requests that must be answered (``expect``), or None for a bent case (any well-formed
answer or a clean close will do), and whether it is a request-smuggling shape that must get 400.
``generate(profile, seed, index)`` is deterministic, so a finding is reproduced from its index alone.
"""

from __future__ import annotations

import gzip
import itertools
import random
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Case:
    """One connection's worth of client bytes, and what a correct server must do with them."""

    index: int
    kind: str  # how the case was bent, e.g. "smuggle-cl-te"; "valid-*" kinds are well-formed
    data: bytes
    methods: tuple[bytes, ...]  # of the requests as built (a response to HEAD has no body)
    expect: int | None  # well-formed requests that must be answered (None: bent, any clean end will do)
    smuggle: bool = False  # a request-smuggling shape: the answer must be 400
    cuts: tuple[int, ...] = ()  # the stream is written in pieces split at these offsets
    pause: float = 0.0  # seconds between pieces
    truncated: bool = False  # the stream stops early: the client half-closes at once

    def pieces(self) -> list[bytes]:
        bounds = [0, *self.cuts, len(self.data)]
        return [self.data[a:b] for a, b in itertools.pairwise(bounds) if b > a]

    def repro(self, limit: int = 400) -> str:
        """The case's bytes as a Python literal (elided past ``limit``), for a report or a test."""
        text = repr(self.data)
        if len(text) > limit:
            text = f"{text[: limit - 60]}...<{len(self.data)} bytes in all>...{text[-40:]}"
        return text


@dataclass(frozen=True)
class Profile:
    """What a server serves: the requests that make sense to it and the one that proves it is alive."""

    name: str
    routes: tuple[tuple[bytes, bytes, bytes], ...]  # (method, target, body) it serves
    hosts: tuple[bytes, ...] = (b"localhost",)
    headers: tuple[tuple[bytes, bytes], ...] = ()  # extra fields every built request may carry
    liveness: bytes = b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n"


_TINY = b'{"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]}]}'
GENERIC = Profile(
    "generic",
    routes=(
        (b"GET", b"/", b""),
        (b"GET", b"/a/b?c=d&e=%20f", b""),
        (b"POST", b"/submit", b"field=value&x=1"),
        (b"PUT", b"/items/7", b'{"k": [1, 2, 3]}'),
        (b"DELETE", b"/items/7", b""),
        (b"HEAD", b"/", b""),
        (b"OPTIONS", b"/", b""),
    ),
)
REVISION = Profile(
    "revision",
    routes=GENERIC.routes,
    hosts=(b"hello", b"hello.default", b"hello.default.svc.cluster.local", b"HELLO.default.svc."),
    liveness=b"GET / HTTP/1.1\r\nHost: hello\r\n\r\n",
)
ENTRY = Profile(
    "entry",
    routes=(*GENERIC.routes, (b"GET", b"/r/hello/x?y=1", b""), (b"POST", b"/r/hello.default/", b"abc")),
    hosts=REVISION.hosts,
    liveness=REVISION.liveness,
)
PREDICTOR = Profile(
    "predictor",
    routes=(
        (b"GET", b"/v2/health/live", b""),
        (b"GET", b"/v2/health/ready", b""),
        (b"GET", b"/v2", b""),
        (b"GET", b"/v2/models/tiny", b""),
        (b"GET", b"/v2/models/tiny/versions/1/ready", b""),
        (b"GET", b"/v2/models/tiny/config", b""),
        (b"GET", b"/v2/models/stats", b""),
        (b"POST", b"/v2/models/tiny/infer", _TINY),
        (b"POST", b"/v1/models/tiny:predict", b'{"instances": [[1, 2, 3, 4]]}'),
        (b"POST", b"/v2/repository/index", b"{}"),
        (b"HEAD", b"/v2/health/live", b""),
    ),
    liveness=b"GET /v2/health/live HTTP/1.1\r\nHost: localhost\r\n\r\n",
)

_JUNK_TARGETS = (
    b"*", b"http://localhost/abs?x=1", b"localhost:80", b"//", b"/%", b"/%zz/%00", b"/..%2f..%2fetc",
    b"/\xff\xfe", "/caf\u00e9".encode(), b"/a b", b"/a\tb", b"/r/", b"/r/nosuch/x", b"/r/hello",
    b"/r/hello.default.x/", b"/?" + b"&".join(b"k%d=v" % i for i in range(300)),
)  # fmt: skip
_JUNK_METHODS = (
    b"CONNECT",
    b"TRACE",
    b"PRI",
    b"get",
    b"FOO",
    b"G\x00T",
    b"GET GET",
    b"M" * 300,
    b"",
    b"PROPFIND",
)
_VERSIONS = (
    b"HTTP/1.0",
    b"HTTP/0.9",
    b"HTTP/2.0",
    b"HTTP/1.2",
    b"HTTP/9.9",
    b"http/1.1",
    b"HTTP/1.1 ",
    b"",
    b"HTTP/1",
)
_JUNK_HOSTS = (b"", b"a..b", b"[::1]:80", b"hello:abc", b"x" * 300, b"nosuch", b"hello.other", b"\xffhost")
_CHUNK_SIZES = (
    b"ffffffffffffffffffff", b"-1", b"0x10", b" 5", b"5 ", b"5;ext=1;b", b'5;name="q"', b"5\x00", b"",
    b"FFFFFFFFFFFFFFFF", b"1" * 40, b"+5", b"5;" + b"e" * 5000,
)  # fmt: skip


def _field_lines(fields: Sequence[tuple[bytes, bytes]]) -> bytes:
    return b"".join(b"%s: %s\r\n" % pair for pair in fields)


def _chunked(body: bytes, rng: random.Random) -> bytes:
    out = []
    while body:
        size = rng.randint(1, max(1, len(body)))
        piece, body = body[:size], body[size:]
        ext = b";x=y" if rng.random() < 0.2 else b""
        out.append(b"%x%s\r\n%s\r\n" % (len(piece), ext, piece))
    trailer = b"x-trailer: 1\r\n" if rng.random() < 0.2 else b""
    return b"".join(out) + b"0\r\n" + trailer + b"\r\n"


@dataclass
class _Built:
    method: bytes
    target: bytes
    version: bytes
    fields: list[tuple[bytes, bytes]]
    body: bytes

    def wire(self) -> bytes:
        return b"%s %s %s\r\n%s\r\n%s" % (
            self.method,
            self.target,
            self.version,
            _field_lines(self.fields),
            self.body,
        )


def _request(
    profile: Profile, rng: random.Random, *, framing: str | None = None, close: bool = False
) -> _Built:
    """A well-formed request for one of the profile's routes, with varied (legal) fields and framing."""
    method, target, body = rng.choice(profile.routes)
    fields: list[tuple[bytes, bytes]] = [(b"Host", rng.choice(profile.hosts))]
    if rng.random() < 0.5:
        fields.append((rng.choice((b"User-Agent", b"user-agent", b"USER-AGENT")), b"fuzz/1.0 (x; y)"))
    if rng.random() < 0.3:
        fields.append((b"Accept", b"*/*;q=0.8, text/plain"))
    if rng.random() < 0.2:
        fields.append((b"X-Empty", b""))
    if rng.random() < 0.2:
        fields.append((b"X-Tab", b"\tpadded value\t"))
    if profile.headers and rng.random() < 0.5:
        fields.append(rng.choice(profile.headers))
    if close:
        fields.append((b"Connection", b"close"))
    framing = framing or rng.choice(("length", "length", "chunked", "none"))
    if method in (b"GET", b"HEAD", b"DELETE", b"OPTIONS") and framing != "chunked" and rng.random() < 0.8:
        framing, body = "none", b""
    if body and b"{" in body:
        fields.append((b"Content-Type", b"application/json"))
    if framing == "chunked":
        fields.append((b"Transfer-Encoding", b"chunked"))
        wire_body = _chunked(body, rng)
    elif framing == "length" or body:
        fields.append((b"Content-Length", b"%d" % len(body)))
        wire_body = body
    else:
        wire_body = b""
    rng.shuffle(fields)
    return _Built(method, target, b"HTTP/1.1", fields, wire_body)


def _valid(profile: Profile, rng: random.Random, index: int, kind: str) -> Case:
    if kind == "valid-pipelined":
        built = [_request(profile, rng) for _ in range(rng.randint(2, 6))]
    else:
        built = [_request(profile, rng)]
    if kind == "valid-expect-100":
        built[0] = _request(profile, rng, framing=rng.choice(("length", "chunked")))
        built[0].fields.append((b"Expect", b"100-continue"))
    if kind == "valid-http10":
        built[0].version = b"HTTP/1.0"
        if rng.random() < 0.5:
            built[0].fields.append((b"Connection", b"keep-alive"))
        else:
            built = built[:1]
    if kind == "valid-close":
        built[-1].fields.append((b"Connection", b"close"))
    data = b"".join(b.wire() for b in built)
    cuts: tuple[int, ...] = ()
    pause = 0.0
    if kind in ("valid-fragmented", "valid-expect-100") or rng.random() < 0.2:
        cuts = tuple(sorted(rng.sample(range(1, len(data)), min(len(data) - 1, rng.randint(1, 6)))))
        pause = rng.choice((0.0, 0.001, 0.005))
    return Case(index, kind, data, tuple(b.method for b in built), len(built), cuts=cuts, pause=pause)


def _smuggle(profile: Profile, rng: random.Random, index: int) -> Case:
    """CL+TE or two different Content-Lengths, with a second request hidden where a guess would look."""
    hidden = b"GET /smuggled HTTP/1.1\r\nHost: %s\r\n\r\n" % profile.hosts[0]
    body = b"0\r\n\r\n" + hidden
    te = rng.choice(
        (
            b"chunked",
            b"Chunked",
            b" chunked",
            b"chunked ",
            b"gzip, chunked",
            b"\tchunked",
            b"xchunked",
            b"chunked, x",
        )
    )
    variants = {
        "smuggle-cl-te": [(b"Content-Length", b"%d" % len(body)), (b"Transfer-Encoding", te)],
        "smuggle-te-cl": [(b"Transfer-Encoding", te), (b"Content-Length", b"5")],
        "smuggle-dup-cl": [(b"Content-Length", b"5"), (b"Content-Length", b"%d" % len(body))],
        "smuggle-cl-list": [(b"Content-Length", b"5, %d" % len(body))],
        "smuggle-te-dup": [(b"Transfer-Encoding", b"chunked"), (b"Transfer-Encoding", b"identity"),
                           (b"Content-Length", b"5")],
    }  # fmt: skip
    kind = rng.choice(sorted(variants))
    fields = [(b"Host", rng.choice(profile.hosts)), *variants[kind]]
    data = b"POST / HTTP/1.1\r\n" + _field_lines(fields) + b"\r\n" + body
    return Case(index, kind, data, (b"POST", b"GET"), None, smuggle=True)


def _bent_fields(profile: Profile, rng: random.Random) -> tuple[str, list[tuple[bytes, bytes]] | bytes]:
    """One bent header section: field lines that llhttp or our code must reject or survive."""
    value = rng.choice(
        (b"a\x01b", b"a\x00b", b"a\x7fb", b"\xff\xfe\xfd", "\u00e9t\u00e9".encode(), b"a\rb", b"a\nb")
    )
    choices: dict[str, list[tuple[bytes, bytes]] | bytes] = {
        "hdr-ctl-value": [(b"X-Bad", value)],
        "hdr-obs-fold": b"X-Fold: first\r\n second line\r\n",
        "hdr-space-before-colon": b"Host : localhost\r\n",
        "hdr-no-colon": b"NoColonHere\r\n",
        "hdr-empty-name": b": value\r\n",
        "hdr-bad-name": rng.choice((b"X\x00Y: 1\r\n", b"X Y: 1\r\n", b"\xe9: 1\r\n", b"X(Y): 1\r\n")),
        "hdr-bare-lf": b"X-A: 1\nX-B: 2\n",
        "hdr-long-value": [(b"X-Long", b"v" * rng.choice((8000, 70_000, 200_000)))],
        "hdr-many": [(b"X-H%d" % i, b"%d" % i) for i in range(rng.choice((101, 1000, 5000)))],
        "hdr-dup-host": [(b"Host", profile.hosts[0]), (b"Host", b"nosuch")],
        "hdr-junk-host": [(b"Host", rng.choice(_JUNK_HOSTS))],
        "hdr-probe": [(b"K-Network-Probe", rng.choice((b"queue", b"activator", b"junk", b"")))],
        "hdr-kube-probe": [(b"User-Agent", b"kube-probe/1.30")],
        "hdr-revision": [(b"Knative-Serving-Revision", rng.choice((b"hello", b"nosuch", b"\xff", b""))),
                         (b"Knative-Serving-Namespace", rng.choice((b"default", b"x", b"")))],
        "hdr-upgrade": [(b"Connection", b"Upgrade"), (b"Upgrade", rng.choice((b"websocket", b"h2c")))],
        "hdr-expect-junk": [(b"Expect", rng.choice((b"200-ok", b"100-continue, x", b"\xff")))],
        "hdr-connection-junk": [(b"Connection",
                                 rng.choice((b"close, keep-alive", b"x" * 500, b"", b"Keep-Alive")))],
        "hdr-cl-junk": [(b"Content-Length",
                         rng.choice((b"-1", b"abc", b"99999999999999999999999", b"1_0", b" ")))],
        "hdr-te-junk": [(b"Transfer-Encoding",
                         rng.choice((b"gzip", b"identity", b"chunked, chunked", b"x")))],
        "hdr-inference-length": [(b"Inference-Header-Content-Length",
                                  rng.choice((b"-5", b"1_0", b"99999999999", b"abc", b"0", b"9" * 5000)))],
    }  # fmt: skip
    kind = rng.choice(sorted(choices))
    return kind, choices[kind]


def _bent(profile: Profile, rng: random.Random, index: int) -> Case:
    built = _request(profile, rng, framing=rng.choice(("length", "chunked", "none")))
    family = rng.choice(("fields", "fields", "line", "chunk", "gzip", "bytes", "truncate", "upgrade"))
    truncated = False
    kind = family
    if family == "fields":
        kind, bent = _bent_fields(profile, rng)
        if isinstance(bent, bytes):
            head = b"%s %s %s\r\n%s%s\r\n" % (
                built.method,
                built.target,
                built.version,
                _field_lines(built.fields),
                bent,
            )
            data = head + built.body
        else:
            built.fields[rng.randint(0, len(built.fields)) : 0] = bent
            data = built.wire()
    elif family == "line":
        part = rng.choice(("method", "target", "version", "spacing"))
        kind = f"line-{part}"
        if part == "method":
            built.method = rng.choice(_JUNK_METHODS)
        elif part == "target":
            built.target = (
                rng.choice(_JUNK_TARGETS) if rng.random() < 0.8 else b"/" + b"a" * rng.choice((9000, 100_000))
            )
        elif part == "version":
            built.version = rng.choice(_VERSIONS)
        data = built.wire()
        if part == "spacing":
            data = data.replace(b" ", rng.choice((b"  ", b"\t", b" \x00 ")), 1)
    elif family == "chunk":
        kind = "chunk-size"
        built = _request(profile, rng, framing="chunked")
        if not built.body.startswith(b"0\r\n"):
            size_end = built.body.index(b"\r\n")
            built.body = rng.choice(_CHUNK_SIZES) + built.body[size_end:]
        else:
            built.body = rng.choice(_CHUNK_SIZES) + b"\r\nabcde\r\n0\r\n\r\n"
        data = built.wire()
    elif family == "gzip":
        payload = rng.choice(
            (
                gzip.compress(_TINY),
                b"\x1f\x8b\x08\x00garbage",
                gzip.compress(b"\0" * (16 << 20), compresslevel=9),  # 16 MiB inflated from ~16 KiB
                gzip.compress(_TINY)[:-6],
            )
        )
        kind = "gzip-body"
        built.method, built.body = b"POST", payload
        built.fields = [
            f for f in built.fields if f[0].lower() not in (b"content-length", b"transfer-encoding")
        ]
        built.fields += [(b"Content-Encoding", rng.choice((b"gzip", b"deflate", b"br", b"GZIP"))),
                         (b"Content-Length", b"%d" % len(payload))]  # fmt: skip
        data = built.wire()
    elif family == "bytes":
        kind = "byte-mutation"
        buf = bytearray(built.wire())
        for _ in range(rng.randint(1, 8)):
            at = rng.randrange(len(buf))
            op = rng.randrange(5)
            if op == 0:
                buf[at] = rng.randrange(256)
            elif op == 1:
                buf[at:at] = bytes([rng.choice((0, 9, 10, 13, 32, 0x7F, 0xFF, ord(":"), ord(";")))])
            elif op == 2:
                del buf[at : at + rng.randint(1, 8)]
            elif op == 3:
                buf[at:at] = buf[at : at + rng.randint(1, 64)] * rng.randint(1, 4)
            else:
                buf[at : at + 1] = b"\r\n"
        data = bytes(buf)
    elif family == "truncate":
        kind = "truncated"
        requests = [_request(profile, rng) for _ in range(rng.randint(1, 3))]
        whole = b"".join(r.wire() for r in requests)
        data = whole[: rng.randint(1, len(whole) - 1)]
        truncated = True
        methods = tuple(r.method for r in requests)
    else:
        kind = "upgrade-then-bytes"
        built.fields += [(b"Connection", b"Upgrade"), (b"Upgrade", b"websocket")]
        data = built.wire() + bytes(rng.randrange(256) for _ in range(rng.randint(1, 64)))
    cuts: tuple[int, ...] = ()
    if kind != "truncated":
        methods = (built.method,)
    if len(data) > 1 and rng.random() < 0.3:
        cuts = tuple(sorted(rng.sample(range(1, len(data)), min(len(data) - 1, rng.randint(1, 4)))))
    return Case(index, kind, data, methods, None, cuts=cuts, truncated=truncated)


def generate(profile: Profile, seed: int, index: int) -> Case:
    """Case ``index`` of the run seeded ``seed``: the same bytes every time (given the profile)."""
    rng = random.Random(seed * 1_000_003 + index)
    roll = rng.random()
    if roll < 0.40:
        kind = rng.choice(
            (
                "valid",
                "valid",
                "valid-pipelined",
                "valid-fragmented",
                "valid-expect-100",
                "valid-http10",
                "valid-close",
            )
        )
        return _valid(profile, rng, index, kind)
    if roll < 0.48:
        return _smuggle(profile, rng, index)
    return _bent(profile, rng, index)
