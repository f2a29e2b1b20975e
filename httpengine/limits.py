"""The HTTP limits every server of ours applies, and the descriptor budget behind its connection cap."""

from __future__ import annotations

import logging
import resource
from dataclasses import dataclass

log = logging.getLogger(__name__)

CONTROL_CONNECTIONS = 64  # connections at once on an admin, stats or metrics port


@dataclass(frozen=True, slots=True)
class Limits:
    """The HTTP limits of every server we run, with the answer a client sees past each one.

    One set, defined here only, so a hostile or broken client meets the same bounds at the
    queue-proxy, the activator, ``kpa up`` and the predictor; docs/wire-contracts.md ("HTTP limits")
    tabulates them. Defaults follow nginx and Go/Knative servers: nginx's 8 KiB request line, 60 s
    header and body timeouts and 75 s keep-alive; Knative's one-minute ReadHeaderTimeout.
    """

    max_url_bytes: int = 8 * 1024  # the request line's target; longer: 414
    max_head_bytes: int = 64 * 1024  # request line + headers; beyond it: 431
    max_headers: int = 100  # header fields; more: 431
    # A declared Content-Length above it: 413 before a body byte is read; a chunked body or a
    # decompressed one (``inflate``) growing past it: 413 when it does.
    max_body_bytes: int = 256 * 1024 * 1024
    body_buffer: int = 256 * 1024  # stop reading from the client past this many unread body bytes
    head_timeout: float = 60.0  # a request head (or a new connection's first one) taking longer: 408
    body_timeout: float = 60.0  # no body bytes for this long while the request waits for them: 408
    keepalive_timeout: float = 75.0  # close a connection idle between requests this long
    # Connections served at once; one more is answered 503 and closed. None: derived from the
    # process's descriptor limit when the server is made (``default_max_connections``).
    max_connections: int | None = None
    # Treat a client's half-close (EOF) as the client leaving and cancel its request, as Go's net/http
    # does; the activator needs it so a request held for capacity is let go when its client gives up.
    cancel_on_client_eof: bool = False

    @classmethod
    def control(cls) -> Limits:
        """Limits for an admin, stats or metrics port: a few connections, so a flood there cannot take
        the descriptors that the serving port's reserve keeps for health checks and probes."""
        return cls(max_connections=CONTROL_CONNECTIONS)


def raise_fd_limit() -> int:
    """Raise this process's soft limit on open descriptors to its hard limit; returns the soft limit now.

    Every server process calls it first: the soft limit is often 1,024 while the hard one allows far
    more, and every client connection (and a proxy's upstream connection) is a descriptor.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        try:
            with open("/proc/sys/fs/nr_open") as nr_open:  # Linux refuses more than this
                hard = int(nr_open.read())
        except (OSError, ValueError):
            hard = 1 << 20
    if soft != resource.RLIM_INFINITY and soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
            soft = hard
        except (OSError, ValueError) as exc:
            log.warning("cannot raise the open-file limit from %d to %d: %s", soft, hard, exc)
    return soft


def default_max_connections(fd_limit: int | None = None) -> int:
    """The connection cap for a server in a process allowed ``fd_limit`` open descriptors (default: the
    process's soft limit).

    A reserve (a quarter of the limit, at most 1,024) stays free for what must keep working while a
    serving port is full: health and stats ports, readiness probes, log files. Half of the rest is
    the cap, since a proxied connection may hold an upstream connection as well.
    """
    if fd_limit is None:
        fd_limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        if fd_limit == resource.RLIM_INFINITY:
            fd_limit = 1 << 20
    reserve = min(1024, max(32, fd_limit // 4))
    return max(8, (fd_limit - reserve) // 2)
