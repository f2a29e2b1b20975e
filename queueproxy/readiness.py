"""Readiness of the user container, probed by the queue-proxy itself and answered from a cache.

In Knative the kubelet probes the queue-proxy, and the queue-proxy runs the user container's
readiness probe (``SERVING_READINESS_PROBE``). Until the first success it probes aggressively
(every 50 ms, 100 ms timeout) so a cold pod is routable the moment it listens; after that it
probes at the configured period (1 s for aggressive probes) and falls back to aggressive probing
after ``failure_threshold`` consecutive failures. Health checks never wait on a probe: they read
``ready``, so a burst of kubelet/activator probes costs nothing.
"""

from __future__ import annotations

import asyncio
import logging

from httpengine.errors import UpstreamError
from httpengine.upstream import UpstreamPool
from queueproxy.config import ProbeSpec

log = logging.getLogger(__name__)

AGGRESSIVE_INTERVAL = 0.05
AGGRESSIVE_TIMEOUT = 0.1
STEADY_PERIOD_FOR_AGGRESSIVE = 1.0  # how often an aggressive probe re-checks once ready
PROBE_USER_AGENT = b"kube-probe/1.31"  # what the kubelet would send; user apps special-case it


class _Closing(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.close()


async def probe_once(spec: ProbeSpec, timeout: float) -> str | None:
    """Run one probe attempt; None on success, else why it failed."""
    try:
        async with asyncio.timeout(timeout):
            if spec.kind == "tcp":
                loop = asyncio.get_running_loop()
                await loop.create_connection(_Closing, spec.host, spec.port)
                return None
            pool = UpstreamPool(spec.host, spec.port, max_idle=0, forwarded_for=False)
            headers = [(b"user-agent", PROBE_USER_AGENT)]
            headers += [(n.encode(), v.encode()) for n, v in spec.headers]
            status, _, _ = await pool.request(b"GET", spec.path.encode(), headers)
            if 200 <= status < 400:
                return None
            return f"{spec.describe()} answered {status}"
    except TimeoutError:
        return f"{spec.describe()}: no answer within {timeout:g}s"
    except (OSError, UpstreamError) as exc:
        return f"{spec.describe()}: {exc}"


class Readiness:
    """Keeps ``ready`` up to date by probing every spec (all must pass)."""

    def __init__(self, probes: tuple[ProbeSpec, ...]) -> None:
        self.probes = probes
        self.ready = False
        self.last_error = "not probed yet"
        self._changed = asyncio.Event()

    async def _check(self, aggressive: bool) -> str | None:
        for spec in self.probes:
            timeout = AGGRESSIVE_TIMEOUT if aggressive and spec.aggressive else spec.timeout
            error = await probe_once(spec, timeout)
            if error is not None:
                return error
        return None

    def _set(self, ready: bool, error: str | None) -> None:
        self.last_error = error or ""
        if ready != self.ready:
            self.ready = ready
            if ready:
                log.info("user container ready")
            else:
                log.warning("user container not ready: %s", error)
            self._changed.set()
            self._changed = asyncio.Event()

    async def wait_ready(self) -> None:
        while not self.ready:
            await self._changed.wait()

    async def run(self) -> None:
        """Probe forever (cancel to stop)."""
        delay = max((p.initial_delay for p in self.probes), default=0.0)
        if delay:
            await asyncio.sleep(delay)
        success_threshold = max(p.success_threshold for p in self.probes)
        failure_threshold = max(p.failure_threshold for p in self.probes)
        aggressive = all(p.aggressive for p in self.probes)
        steady_period = (
            STEADY_PERIOD_FOR_AGGRESSIVE
            if aggressive
            else min(p.period for p in self.probes if not p.aggressive)
        )
        successes = failures = 0
        while True:
            probing_fast = not self.ready and aggressive
            error = await self._check(probing_fast)
            if error is None:
                successes += 1
                failures = 0
                if successes >= success_threshold:
                    self._set(True, None)
            else:
                successes = 0
                failures += 1
                self.last_error = error
                if not self.ready or failures >= failure_threshold:
                    self._set(False, error)
            await asyncio.sleep(AGGRESSIVE_INTERVAL if not self.ready and aggressive else steady_period)
