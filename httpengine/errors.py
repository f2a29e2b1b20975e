"""What the engine reports as failed, and what each failure lets the caller still do.

The exceptions are the engine's contract with its handlers: a server's handler learns that its client
left (``ClientDisconnected``), the engine refuses what breaks a limit (``RequestRefused``), and a proxy
learns whether an upstream failure left the request retryable (``UpstreamConnectError``) or not
(``UpstreamError``).
"""

from __future__ import annotations


class ClientDisconnected(ConnectionError):
    """The client closed the connection before its request body was complete."""


class RequestRefused(Exception):
    """A request broke one of the ``Limits`` (or could not be decoded): answered with ``status``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class UpstreamError(ConnectionError):
    """The upstream failed this request after it was (at least partly) sent."""


class UpstreamConnectError(UpstreamError):
    """No connection to the upstream: nothing was sent, the request may be retried elsewhere."""


class StaleConnection(UpstreamError):
    """A pooled connection closed without a byte of response: the pool replays the request once on a
    fresh connection; callers see ``UpstreamError`` instead, never this."""
