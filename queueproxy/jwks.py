"""A JWKS (the issuer's public signing keys) fetched off the event loop and cached.

``jwt.PyJWKClient`` does the fetching and parsing, but its fetch is a blocking ``urllib`` call, so it
never runs on the event loop: it runs in a worker thread of a small shared pool. Requests read the
cached keys without any I/O; the keys are refreshed in the background once older than ``lifespan``,
and a token naming an unknown ``kid`` (a key rotation) triggers at most one fetch per
``min_interval`` seconds, which every request waiting on it shares. A request never waits longer
than the fetch timeout plus a second: when the JWKS cannot be fetched it is answered 503 (no keys
yet) or checked against the keys fetched last (stale keys keep working through an outage).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import jwt

log = logging.getLogger(__name__)

FETCH_TIMEOUT = 2.0  # seconds per socket operation of one fetch
LIFESPAN = 300.0  # refresh the keys in the background once they are this old
MIN_REFRESH_INTERVAL = 10.0  # at most one fetch per this many seconds for unknown kids
# Every JWKS of the process shares these threads: fetches cannot pile up without bound.
_FETCHERS = ThreadPoolExecutor(max_workers=2, thread_name_prefix="jwks-fetch")


class JwksCache:
    """The signing keys behind one JWKS URL; call from the event loop's thread only."""

    def __init__(
        self,
        url: str,
        *,
        timeout: float = FETCH_TIMEOUT,
        lifespan: float = LIFESPAN,
        min_interval: float = MIN_REFRESH_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.url = url
        self.timeout = timeout
        self.lifespan = lifespan
        self.min_interval = min_interval
        self.clock = clock
        self._client = jwt.PyJWKClient(url, cache_jwk_set=False, timeout=timeout)
        self.keys: dict[str, Any] | None = None  # kid -> jwt.PyJWK; None until the first fetch succeeds
        self.error: str | None = None  # why the latest fetch failed; None after a success
        self._attempted = float("-inf")
        self._loaded = float("-inf")
        self._fetch: asyncio.Future[None] | None = None

    def current(self) -> dict[str, Any] | None:
        """The keys now, without I/O; starts a background refresh when they are older than ``lifespan``."""
        if self._fetch is None and self.clock() - self._loaded >= self.lifespan and self._may_fetch():
            self._start()
        return self.keys

    def _may_fetch(self) -> bool:
        return self.clock() - self._attempted >= self.min_interval

    def fetch_pending(self) -> bool:
        """Whether waiting on :meth:`refreshed` may still change the keys (a fetch runs or is allowed)."""
        return self._fetch is not None or self._may_fetch()

    async def refreshed(self) -> None:
        """Fetch the keys now (or join the fetch in flight); returns within ``timeout`` + 1 s."""
        fetch = self._fetch if self._fetch is not None else self._start()
        try:
            async with asyncio.timeout(self.timeout + 1.0):
                await asyncio.shield(fetch)
        except TimeoutError:
            self.error = f"no answer within {self.timeout + 1.0:g}s"

    def _start(self) -> asyncio.Future[None]:
        loop = asyncio.get_running_loop()
        self._attempted = self.clock()
        fetch = loop.run_in_executor(_FETCHERS, self._client.get_jwk_set, True)
        done: asyncio.Future[None] = loop.create_future()
        self._fetch = done

        def finished(result: asyncio.Future[Any]) -> None:
            self._fetch = None
            try:
                jwk_set = result.result()
            except Exception as exc:  # PyJWKClientError, PyJWKSetError, OSError: all mean "no keys"
                self.error = str(exc) or type(exc).__name__
                log.warning("JWKS %s: fetch failed: %s", self.url, self.error)
            else:
                # Encryption keys are not for checking signatures.
                self.keys = {k.key_id: k for k in jwk_set.keys if k.public_key_use in (None, "sig")}
                self.error = None
                self._loaded = self.clock()
            done.set_result(None)

        fetch.add_done_callback(finished)
        return done
