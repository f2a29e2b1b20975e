"""Bounds, scale-to-zero sequencing and the serve/proxy mode: Knative's PodAutoscaler reconciler, pure.

A model of knative/serving ``pkg/reconciler/autoscaling/kpa`` (``scaler.go`` ``scale`` and
``handleScaleToZero``, ``kpa.go`` ``ReconcileKind`` and ``computeActiveCondition``):

* :func:`scale_target` turns the decider's wish into the replica count to apply: min/max/initial scale,
  and the slow road to zero — an Active revision first shrinks to one pod for the rest of a stable
  window, then turns Inactive, and only once the activator is in the path, the grace period has passed
  (or the activator has been in the path that long) and the last-pod retention is over does zero apply.
* :class:`Lifecycle` keeps the PodAutoscaler's Active condition (Activating / Active / Inactive, each
  with the time it was entered) and the serve/proxy mode across decisions.

Knative reconciles on events and re-queues itself; here the caller runs one :meth:`Lifecycle.step` per
decision and may honour ``requeue_after`` to decide again sooner.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

__all__ = [
    "ACTIVATING",
    "ACTIVATION_TIMEOUT_BUFFER",
    "ACTIVE",
    "AS_DECIDED",
    "INACTIVE",
    "PROXY",
    "SCALE_UNKNOWN",
    "SERVE",
    "Lifecycle",
    "LifecycleSettings",
    "LifecycleStep",
    "PAStatus",
    "ScaleOutcome",
    "scale_bounds",
    "scale_target",
]

ACTIVATING, ACTIVE, INACTIVE = "activating", "active", "inactive"
SERVE, PROXY = "serve", "proxy"
SCALE_UNKNOWN = -1
ACTIVATION_TIMEOUT_BUFFER = 30.0  # added to the progress deadline before a stuck activation gives up
PROXY_REQUEUE = 3.0  # Active and idle while already proxied: look again after this long
NO_TRAFFIC, TIMED_OUT = "NoTraffic", "TimedOut"
AS_DECIDED = "as decided"  # the decider's count, within the bounds


@dataclass(frozen=True, slots=True)
class LifecycleSettings:
    """The knobs of one revision's reconciler; defaults are Knative's."""

    min_scale: int = 0
    max_scale: int = 0  # 0 = no upper bound
    initial_scale: int = 1
    enable_scale_to_zero: bool = True
    scale_to_zero_grace_period: float = 30.0
    scale_to_zero_pod_retention: float = 0.0
    stable_window: float = 60.0
    activation_timeout: float = 600.0 + ACTIVATION_TIMEOUT_BUFFER
    reachable: bool = True
    activator_always_in_path: bool = False  # target-burst-capacity -1: no need to probe for the activator


@dataclass(frozen=True, slots=True)
class PAStatus:
    """The PodAutoscaler's Active condition: its state, since when, and whether the target ever got ready."""

    state: str = ACTIVATING
    since: float = 0.0
    reason: str = ""
    scale_target_initialized: bool = False

    def time_in_state(self, state: str, now: float) -> float:
        """Seconds spent in ``state`` so far, or -1 when in another state (Knative ``inStatusFor``)."""
        return now - self.since if self.state == state else -1.0


class ScaleOutcome(NamedTuple):
    """What to do with the scale target now: set it to ``desired`` if ``apply``.

    (Named tuples rather than dataclasses here: one of each is built per revision per tick.)
    """

    desired: int
    apply: bool
    reason: str
    requeue_after: float | None = None
    probe_activator: bool = False  # the activator is not yet in the path: Knative starts probing for it


def scale_bounds(settings: LifecycleSettings, status: PAStatus) -> tuple[int, int]:
    """``(min, max)`` replicas: min-scale (ignored when unreachable), raised to the initial scale until the
    target has been initialized; max 0 means unbounded."""
    low = settings.min_scale if settings.reachable else 0
    if settings.initial_scale > 1 and not status.scale_target_initialized and settings.reachable:
        low = max(low, settings.initial_scale)
    return low, settings.max_scale


def scale_target(
    settings: LifecycleSettings,
    status: PAStatus,
    now: float,
    desired: int,
    *,
    activator_in_path: bool,
    proxy_since: float | None,
    proxied: bool,
) -> ScaleOutcome:
    """Knative's ``scaler.scale``: bound the decider's ``desired`` and sequence the way down to zero.

    ``activator_in_path`` is the answer to Knative's activator probe; ``proxy_since`` is when the
    activator endpoints were put in front of the revision (None while serving); ``proxied`` whether
    the revision is in proxy mode right now.
    """
    if desired < 0 and status.state != ACTIVATING:
        return ScaleOutcome(desired, False, "no metrics yet")
    low, high = scale_bounds(settings, status)
    reason = AS_DECIDED
    if desired < low:
        desired, reason = low, "raised to the lower bound (min-scale or initial scale)"
    elif high and desired > high:
        desired, reason = high, "capped at max-scale"
    if desired != 0:
        return ScaleOutcome(desired, True, reason)
    if not settings.enable_scale_to_zero:
        return ScaleOutcome(1, True, "scale to zero is disabled")

    if status.state == ACTIVATING:
        if status.time_in_state(ACTIVATING, now) > settings.activation_timeout:
            return ScaleOutcome(0, True, "activation timed out")
        return ScaleOutcome(
            SCALE_UNKNOWN,
            False,
            "activating: waiting for the activation timeout",
            settings.activation_timeout,
        )

    if status.state == ACTIVE:
        active_for = status.time_in_state(ACTIVE, now)
        if active_for >= settings.stable_window:
            return ScaleOutcome(
                0, False, "idle for a stable window: deactivating", PROXY_REQUEUE if proxied else None
            )
        return ScaleOutcome(
            1,
            True,
            "idle: keeping one pod for the rest of the stable window",
            settings.stable_window - active_for,
        )

    # Inactive: zero may only apply once requests have a place to wait.
    if not (settings.activator_always_in_path or activator_in_path):
        return ScaleOutcome(0, False, "waiting for the activator to be in the path", probe_activator=True)
    retention = settings.scale_to_zero_pod_retention if settings.reachable else 0.0
    inactive_for = status.time_in_state(INACTIVE, now)
    if inactive_for >= max(settings.scale_to_zero_grace_period, retention):
        return ScaleOutcome(0, True, "scale to zero after grace period")
    if retention > 0 and inactive_for < retention:
        return ScaleOutcome(
            0, False, "keeping the last pod for the retention period", retention - inactive_for
        )
    proxy_for = now - proxy_since if proxy_since is not None else 0.0
    wait = settings.scale_to_zero_grace_period - proxy_for
    if wait <= 0:
        return ScaleOutcome(0, True, "scale to zero: proxied for the grace period")
    return ScaleOutcome(0, False, "waiting out the grace period behind the activator", wait)


class LifecycleStep(NamedTuple):
    """One reconcile: the replica count to apply (if ``apply``), the mode, and the new Active state."""

    want: int
    apply: bool
    mode: str
    state: str
    requeue_after: float | None
    probe_activator: bool
    reason: str


class Lifecycle:
    """The PodAutoscaler of one revision: its Active condition, mode and the times they changed.

    A new revision starts Activating and proxied (no pod is ready yet); a shell that restarts with a
    known condition passes it as ``status``.
    """

    __slots__ = ("_mode", "_proxy_since", "_settings", "_status")

    def __init__(self, settings: LifecycleSettings, now: float, status: PAStatus | None = None) -> None:
        self._settings = settings
        self._status = status or PAStatus(ACTIVATING, now)
        self._mode = PROXY
        self._proxy_since: float | None = now

    @property
    def status(self) -> PAStatus:
        return self._status

    @property
    def mode(self) -> str:
        return self._mode

    @property
    def settings(self) -> LifecycleSettings:
        return self._settings

    def update(self, settings: LifecycleSettings) -> None:
        self._settings = settings

    def step(
        self, now: float, desired: int, excess_burst_capacity: int, ready: int, activator_in_path: bool = True
    ) -> LifecycleStep:
        """Reconcile at ``now`` with the decider's stored desired scale and EBC and the ready pod count."""
        status = self._status
        outcome = scale_target(
            self._settings,
            status,
            now,
            desired,
            activator_in_path=activator_in_path,
            proxy_since=self._proxy_since,
            proxied=self._mode == PROXY,
        )
        want = outcome.desired
        # The activator stays in the path at zero, while burst capacity is short, and when the decider
        # knows nothing yet about a revision that was already inactive; with no ready pod the
        # ServerlessService has nowhere else to send requests.
        proxy = (
            want == 0
            or excess_burst_capacity < 0
            or (want == SCALE_UNKNOWN and status.state == INACTIVE)
            or ready == 0
        )
        mode = PROXY if proxy else SERVE
        if mode != self._mode:
            self._mode = mode
            self._proxy_since = now if proxy else None
        self._status = self._next_status(now, want, ready)
        return LifecycleStep(
            want=want,
            apply=outcome.apply,
            mode=mode,
            state=self._status.state,
            requeue_after=outcome.requeue_after,
            probe_activator=outcome.probe_activator,
            reason=outcome.reason,
        )

    def settled_at_zero(self, now: float, desired: int) -> bool:
        """True when the revision is Inactive behind the activator and stays so for good: with the
        decider's ``desired`` scale 0 (or still unknown, -1) and no ready pod, every ``step`` from ``now``
        on returns the same want, asks for no requeue and changes no state (the times it compares only
        grow past their bounds: zero has applied, or nothing is known to apply).
        """
        if desired > 0 or self._status.state != INACTIVE or self._mode != PROXY:
            return False
        outcome = scale_target(
            self._settings,
            self._status,
            now,
            desired,
            activator_in_path=True,
            proxy_since=self._proxy_since,
            proxied=True,
        )
        return outcome.desired == desired and outcome.requeue_after is None and not outcome.probe_activator

    def _next_status(self, now: float, want: int, ready: int) -> PAStatus:
        """Knative's ``computeActiveCondition``."""
        status = self._status
        low, _ = scale_bounds(self._settings, status)
        min_ready = max(low, 1) if status.scale_target_initialized else max(low, self._settings.initial_scale)
        initialized = status.scale_target_initialized or ready >= min_ready
        state, reason = status.state, status.reason
        if want == 0 or min_ready == 0:
            state = INACTIVE
            reason = TIMED_OUT if status.state == ACTIVATING and min_ready > 0 else NO_TRAFFIC
        elif ready < min_ready:
            if want > 0 or status.state != INACTIVE:
                state, reason = ACTIVATING, ""
            else:
                state, reason = INACTIVE, NO_TRAFFIC
        elif want > 0 or status.state != INACTIVE:
            state, reason = ACTIVE, ""
        if (state, reason) != (status.state, status.reason):
            return PAStatus(state, now, reason, initialized)
        if initialized != status.scale_target_initialized:
            return PAStatus(state, status.since, reason, initialized)
        return status
