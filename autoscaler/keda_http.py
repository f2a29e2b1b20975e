"""KEDA's HTTP add-on, as a policy: pending requests at the entry, scale to zero after a cooldown.

What the add-on does (keda.sh ScaledObject spec; kedacore/http-add-on, peers-and-protocols.md §1): its
interceptor is a proxy in every request's path that counts the requests in flight per route (queued
while the target has no ready pod, or proxied); the scaler sums that count over the interceptors and
hands it to KEDA as an external metric; the operator's ScaledObject (``pollingInterval`` 15 s for the
add-on's push scaler, ``cooldownPeriod`` = the HTTPScaledObject's ``scaledownPeriod``, default 300 s)
does the 0 ↔ 1 steps itself and leaves 1 ↔ N to an HPA whose target is
``AverageValue = targetValue`` (``scalingMetric.concurrency.targetValue``, formerly
``targetPendingRequests``, default 100). What this policy implements:

* **activation**: at zero, the first pending request scales to one pod at once (the push scaler
  reports activity as it happens; here the activator's first stat pokes the decision);
* **1 ↔ N**: on the HPA's 15 s sync, ``desired = ceil(pending / targetValue)`` — the HPA's
  ``AverageValue`` formula, ``ratio = pending / (targetValue × replicas)`` with the 0.1 tolerance
  (no change inside it) — then the HPA's default behavior (300 s scale-down stabilization, the
  rate policies), between ``max(min-scale, 1)`` and ``max-scale`` (KEDA's default maximum, 100,
  when none is set), all through :class:`autoscaler.hpa.HPAScaler`;
* **to zero**: when no request has been pending for ``scaledownPeriod`` seconds, checked every
  ``pollingInterval``, and ``min-scale`` is 0;
* the interceptor stays in the path always, as KEDA's does: the activator fronts every request.

``pending`` is :attr:`Observation.in_flight`, the revision's requests in flight averaged over the last
second (the interceptor's count is instantaneous; at 1 s it is the closest this path measures).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from autoscaler.hpa import TOLERANCE, HPAScaler, parse_behavior, replicas_for
from autoscaler.policy import Observation, PolicyDecision, PolicyError
from autoscaler.revision import RevisionSettings

__all__ = ["DEFAULT_MAX_REPLICAS", "KedaHttpPolicy"]

DEFAULT_MAX_REPLICAS = 100  # HTTPScaledObject replicas.max


def _positive(name: str, value: Any, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= high:
        raise PolicyError(f"{name}={value!r}: must be a number in (0, {high:g}]")
    return float(value)


class KedaHttpPolicy:
    """Pending-request scaling with a cooldown to zero (KEDA HTTP add-on); see the module docstring."""

    def __init__(
        self,
        settings: RevisionSettings,
        now: float,
        *,
        targetValue: float = 100,  # the HTTPScaledObject's own field names
        targetPendingRequests: float | None = None,
        scaledownPeriod: float = 300,
        pollingInterval: float = 15,
        sync_period: float = 15,
        behavior: Mapping[str, Any] | None = None,
    ) -> None:
        if targetPendingRequests is not None:  # the pre-0.8 name of the same target
            targetValue = targetPendingRequests
        self.target = _positive("targetValue", targetValue, 1e9)
        self.cooldown = _positive("scaledownPeriod", scaledownPeriod, 86400)
        self.polling = _positive("pollingInterval", pollingInterval, 3600)
        self.sync_period = _positive("sync_period", sync_period, 3600)
        top = settings.max_scale if settings.max_scale > 0 else DEFAULT_MAX_REPLICAS
        self.scaler = HPAScaler(max(settings.min_scale, 1), top, *parse_behavior(behavior))
        self.min_scale = settings.min_scale
        self._last_active = now
        self._next_poll = now
        self._next_sync = now
        self._desired: int | None = None

    def decide(self, seen: Observation) -> PolicyDecision:
        now, pending, current = seen.now, seen.in_flight, seen.requested_pods
        if pending > 0:
            self._last_active = now
        desired, reason = self._desired if self._desired is not None else current, ""
        if current == 0:  # the operator's activation step; the HPA does not act at zero
            desired = self.scaler.min_replicas if pending > 0 else 0
            reason = f"keda-http: {pending:g} pending at zero -> {desired}"
        elif now >= self._next_poll and self.min_scale == 0 and now - self._last_active >= self.cooldown:
            desired, reason = 0, f"keda-http: nothing pending for {self.cooldown:g} s -> 0"
        elif now >= self._next_sync:
            ratio = pending / (self.target * current)
            proposed = replicas_for(current, current, ratio, TOLERANCE)
            if proposed != current:
                proposed = max(math.ceil(pending / self.target), 1)  # AverageValue: ceil(total / target)
            desired = self.scaler.sync(now, current, proposed)
            reason = f"keda-http: {pending:g} pending, target {self.target:g} per pod -> {desired}"
        if now >= self._next_poll:
            self._next_poll += self.polling * (1 + (now - self._next_poll) // self.polling)
        if now >= self._next_sync and current > 0:
            self._next_sync += self.sync_period * (1 + (now - self._next_sync) // self.sync_period)
        self._desired = desired
        return PolicyDecision(desired, activator_in_path=True, reason=reason or f"keda-http: {desired} pods")
