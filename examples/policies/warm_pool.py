"""An example scaling policy: a fixed pool of warm pods kept above the current demand.

Demand is the revision's concurrency over the panic window (the KPA's fast window, 6 s by default):
``desired = ceil(panic / per_pod) + pool``. With ``pool`` >= 1 no request ever waits for a cold start
unless a burst outruns the pool; the price is ``pool`` idle pods around the clock.

Use it by ``file.py:Class`` (relative to the scenario or stack file) or ``module:Class``::

    policy: {name: ../policies/warm_pool.py:WarmPool, pool: 2}

A policy is any class built as ``Policy(settings, now, **options)`` with a ``decide(observation)``
that returns desired pods (see docs/experiments.md, "Policies").
"""

from __future__ import annotations

import math

from autoscaler.policy import Observation, PolicyDecision
from autoscaler.revision import RevisionSettings


class WarmPool:
    """``pool`` idle pods on top of what the panic window's concurrency needs at ``per_pod`` each."""

    def __init__(
        self, settings: RevisionSettings, now: float, *, pool: int = 1, per_pod: float | None = None
    ):
        if not isinstance(pool, int) or pool < 0:
            raise ValueError(f"pool={pool!r}: must be an integer >= 0")
        self.pool = pool
        self.per_pod = per_pod or settings.spec.target_value  # the KPA's target per pod by default

    def decide(self, seen: Observation) -> PolicyDecision:
        demand = math.ceil((seen.panic or 0.0) / self.per_pod)
        desired = demand + self.pool
        return PolicyDecision(desired, reason=f"warm pool: {demand} busy + {self.pool} warm")
