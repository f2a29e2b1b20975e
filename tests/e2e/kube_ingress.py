"""A real nginx as the ingress in front of a Service on the fake cluster, and requests through it.

On a cluster clients come through an L7 ingress or gateway; when the upstream dies while it holds a
request, the ingress answers 502 itself. :class:`Ingress` runs Debian's nginx (unprivileged for the
requests: as root only its master runs as root, its worker drops to ``nobody``) from a temporary
config on ``127.0.0.1:<free port>``, with one upstream: the ``ServiceProxy`` of the revision's
Service (kube-proxy's part), and ``Host`` set to the Service's name. Settings, and why:

* ``proxy_next_upstream off``: a request is never sent a second time, elsewhere or to the same
  upstream (with one upstream server nginx would not retry anyway; the setting says it);
* no upstream keep-alive: each request gets its own connection to the ServiceProxy, so kube-proxy's
  per-connection balancing picks an activator per request, as on a cluster; a pooled connection
  would stay on one activator for its life (after an endpoint flip too), and an idle pooled
  connection to a killed activator would fail a request that no server ever got. One connection
  per request is also what lets the test tell which activator held each request (below);
* ``proxy_read_timeout`` = the revision timeout + 5 s, so the revision's own timeout answers first;
* a 502 nginx makes itself goes to ``@bad_gateway``: header ``X-Kpa-Ingress`` and a plain-text body
  naming the ingress, so it is told at once from any answer of the activators or pods (an upstream's
  own 502 is passed through untouched: ``proxy_intercept_errors`` is off).

Which activator held a request: nginx's connection to the ServiceProxy starts from
``<source_ip>:<trace port>``, where the trace port is a number the client sends in header
``X-Kpa-Trace-Port`` (``proxy_bind``, one port per request, a random 127/8 address per ingress so
earlier runs' TIME_WAIT sockets never meet a new bind), and the ServiceProxy records each connection
by its client port: delivered to which endpoint, or never delivered (no ready endpoint, or a dead
pod's address still listed — the fake kube-proxy accepts before it dials, so nginx then sees a
reset, not "connection refused", and answers 502 to a request that no server got).
"""

from __future__ import annotations

import asyncio
import itertools
import os
import random
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Self

import pytest
from kube_load import ANSWERED, CUT, HUNG, REFUSED, Answer, ClosedLoop, _parse_head

from fakecluster.service_proxy import DELIVERED, ServiceProxy

TRACE_HEADER = "X-Kpa-Trace-Port"
INGRESS_HEADER = "x-kpa-ingress"  # only on a 502 nginx made itself
FIRST_TRACE_PORT, LAST_TRACE_PORT = 20_000, 32_000  # below the ephemeral range: no kernel-picked port

CONF = """
worker_processes 1;
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    map $http_x_kpa_trace_port $trace_source {{
        default "";
        "~^[0-9]+$" "{source_ip}:$http_x_kpa_trace_port";
    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://127.0.0.1:{upstream};
            proxy_bind $trace_source;
            proxy_next_upstream off;
            proxy_connect_timeout 5s;
            proxy_send_timeout {read_timeout}s;
            proxy_read_timeout {read_timeout}s;
            proxy_set_header Host {host};
            proxy_set_header {trace_header} "";
            error_page 502 = @bad_gateway;
        }}
        location @bad_gateway {{
            add_header X-Kpa-Ingress "bad gateway: upstream $upstream_addr" always;
            return 502 "ingress: no complete answer from upstream $upstream_addr\\n";
        }}
    }}
}}
"""


def nginx_binary() -> str:
    """nginx's path; the test is skipped, saying why, when there is none (``make tools`` installs it)."""
    found = shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.access(p, os.X_OK)), None
    )
    if found is None:
        pytest.skip("nginx not found (Debian package nginx; `make tools` installs it as root): no ingress")
    return found


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Ingress:
    """nginx on ``127.0.0.1:port`` proxying to ``upstream`` (a ServiceProxy) with ``Host: host``."""

    def __init__(self, upstream: ServiceProxy, host: str, revision_timeout_s: float) -> None:
        self.upstream, self.host = upstream, host
        self.read_timeout_s = int(revision_timeout_s) + 5
        rng = random.Random()
        self.source_ip = f"127.{rng.randint(1, 254)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}"
        self.port = _free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="kube-ingress-"))
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Self:
        binary = nginx_binary()
        os.chmod(self.dir, 0o755)  # as root, nginx's worker runs as nobody and must reach its paths
        conf = self.dir / "nginx.conf"
        conf.write_text(
            CONF.format(
                dir=self.dir,
                port=self.port,
                upstream=self.upstream.port,
                source_ip=self.source_ip,
                read_timeout=self.read_timeout_s,
                host=self.host,
                trace_header=TRACE_HEADER,
            )
        )
        self._proc = subprocess.Popen(
            [binary, "-e", str(self.dir / "error.log"), "-p", str(self.dir), "-c", str(conf)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"nginx exited {self._proc.returncode}: {self.errors()}")
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", self.port)) == 0:
                    return self
            time.sleep(0.05)
        raise RuntimeError(f"nginx did not listen on 127.0.0.1:{self.port} within 10 s: {self.errors()}")

    def errors(self) -> str:
        """nginx's error log (one line per 502 it made, with its cause)."""
        try:
            return (self.dir / "error.log").read_text(errors="replace")
        except OSError:
            return ""

    def close(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()  # SIGTERM: nginx's fast shutdown, workers included
            try:
                self._proc.wait(5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(5)
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


async def request_via(ingress: Ingress, trace_port: int, timeout: float) -> Answer:
    """``GET /`` through ``ingress`` on a new connection. ``answered`` (any complete answer, and
    nothing after it), ``cut`` (the connection to the ingress broke) or ``hung``; an ingress 502
    for a request the ServiceProxy never delivered is ``refused`` (no server got it). ``endpoint``
    is where the ServiceProxy sent nginx's connection for this request."""
    started = time.monotonic()
    request = (
        f"GET / HTTP/1.1\r\nHost: ingress.test\r\n{TRACE_HEADER}: {trace_port}\r\nConnection: close\r\n\r\n"
    ).encode()

    def where() -> tuple[str, str]:
        record = ingress.upstream.connection(trace_port)
        return (record.outcome, record.endpoint) if record else ("", "")

    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection("127.0.0.1", ingress.port, limit=1 << 20)
            try:
                writer.write(request)
                head = await reader.readuntil(b"\r\n\r\n")
                status, headers = _parse_head(head)
                length = int(headers.get("content-length", "-1"))
                body = await reader.readexactly(length) if length >= 0 else await reader.read()
                extra = await reader.read()  # Connection: close: the ingress ends here
            finally:
                writer.close()
    except TimeoutError:
        spent = time.monotonic() - started
        return Answer(HUNG, endpoint=where()[1], error=f"no answer in {timeout:g} s", seconds=spent)
    except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as error:
        spent = time.monotonic() - started
        return Answer(CUT, endpoint=where()[1], error=f"{type(error).__name__}: {error}", seconds=spent)
    outcome, endpoint = where()
    if extra:
        return Answer(CUT, status, body=body, endpoint=endpoint, error=f"{len(extra)} bytes after the answer")
    # An ingress 502 the fake kube-proxy never delivered (no endpoint, or reset unread): no server got it.
    kind = REFUSED if status == 502 and INGRESS_HEADER in headers and outcome != DELIVERED else ANSWERED
    return Answer(
        kind,
        status,
        headers.get("x-kpa-cold-start", "").lower() == "true",
        body,
        endpoint,
        error="" if outcome == DELIVERED else f"not delivered by the ServiceProxy ({outcome or 'no record'})",
        seconds=time.monotonic() - started,
        headers=headers,
    )


class IngressLoop(ClosedLoop):
    """:class:`ClosedLoop` through the ingress: each try gets a trace port of its own."""

    def __init__(self, ingress: Ingress, clients: int = 8, timeout: float = 30.0) -> None:
        super().__init__(ingress.upstream, ingress.host, clients, timeout)
        self.ingress = ingress
        self._ports = itertools.count(FIRST_TRACE_PORT)

    async def attempt(self) -> Answer:
        port = next(self._ports)
        if port > LAST_TRACE_PORT:
            raise RuntimeError("out of trace ports: more requests than one ingress run can tell apart")
        return await request_via(self.ingress, port, self.timeout)
