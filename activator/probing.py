"""Which of a revision's pods are healthy, and which to probe next.

The activator does not wait for anyone to declare a pod ready: it is given every pod address of a
revision, ready or not, and probes the ones it does not yet trust (GET /healthz with
``K-Network-Probe: queue``) every ``frequency`` seconds until they answer ``200 queue``. A pod joins
the healthy set — and the throttler's capacity — the moment one probe passes; a pod that later
refuses a connection is taken out and probed again (Knative's revision_backends.go).

Pure: the shell asks ``due(now)`` for the pods to probe, runs the probes with a timeout, and feeds
each result back with ``record``. A new endpoint is due at once, not at the next tick.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

DEFAULT_PROBE_FREQUENCY = 0.2  # seconds between probes of a pod not yet healthy (Knative: 200 ms)
DEFAULT_PROBE_TIMEOUT = 0.3  # seconds one probe may take (Knative: 300 ms)
# A pod whose queue-proxy is not listening yet refuses the connection at once, and that costs next to
# nothing to ask again; re-asking sooner than the probe period is what keeps a cold start's detection
# delay below the period while the pod's processes are still starting.
REFUSED_RETRY = 0.025


@dataclass(slots=True)
class _PodState:
    healthy: bool = False
    probing: bool = False  # a probe is in flight; don't start another
    next_probe: float = 0.0


@dataclass
class PodHealth:
    frequency: float = DEFAULT_PROBE_FREQUENCY
    _pods: dict[str, _PodState] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        if not self.frequency > 0:
            raise ValueError(f"probe frequency={self.frequency!r}: must be > 0 seconds")

    @property
    def healthy(self) -> frozenset[str]:
        return frozenset(address for address, pod in self._pods.items() if pod.healthy)

    @property
    def endpoints(self) -> frozenset[str]:
        return frozenset(self._pods)

    def set_endpoints(self, addresses: Iterable[str], now: float) -> bool:
        """Replace the pod list; new pods are due for a probe at once. True if the healthy set changed."""
        wanted = set(addresses)
        before = self.healthy
        for address in list(self._pods):
            if address not in wanted:
                del self._pods[address]
        for address in wanted:
            self._pods.setdefault(address, _PodState(next_probe=now))
        return self.healthy != before

    def due(self, now: float) -> list[str]:
        """Pods to probe now; they count as being probed until ``record`` is called for them."""
        ready = sorted(
            address
            for address, pod in self._pods.items()
            if not pod.healthy and not pod.probing and pod.next_probe <= now
        )
        for address in ready:
            self._pods[address].probing = True
        return ready

    def next_due(self) -> float | None:
        """The earliest time a pod will be due, or None when nothing needs probing."""
        times = [pod.next_probe for pod in self._pods.values() if not pod.healthy and not pod.probing]
        return min(times) if times else None

    def record(self, address: str, ok: bool, now: float, refused: bool = False) -> bool:
        """A probe of ``address`` finished. True if this made the pod healthy.

        ``refused``: the connection was refused (nothing listens yet), so the pod is asked again
        after ``REFUSED_RETRY`` rather than a whole period."""
        pod = self._pods.get(address)
        if pod is None:  # removed while its probe was in flight
            return False
        pod.probing = False
        if ok:
            became = not pod.healthy
            pod.healthy = True
            return became
        pod.next_probe = now + (min(REFUSED_RETRY, self.frequency) if refused else self.frequency)
        return False

    def mark_failed(self, address: str, now: float) -> bool:
        """Traffic to a healthy pod failed (connection refused): distrust it, probe it at once.

        True if the pod was healthy (so the throttler's capacity must shrink)."""
        pod = self._pods.get(address)
        if pod is None or not pod.healthy:
            return False
        pod.healthy = False
        pod.next_probe = now
        return True
