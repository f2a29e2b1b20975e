"""The KPA decision: how many pods a revision wants, given what its windows observed.

A model of knative/serving ``pkg/autoscaler/scaling/autoscaler.go`` (``Scale``): rate-limited stable and
panic pod counts, the panic state machine that never scales down while panicking, activation scale,
the scale-down delay window, and excess burst capacity (EBC). Min/max bounds and scale-to-zero are not
decided here; :mod:`autoscaler.lifecycle` applies them afterwards, as Knative's PodAutoscaler reconciler
does.

Pure: the caller passes ``now`` (seconds), the ready pod count and the observed revision-wide values.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from autoscaler.aggregation import MaxWindow

__all__ = ["CONCURRENCY", "RPS", "TICK_INTERVAL", "Autoscaler", "DeciderSpec", "ScaleResult"]

CONCURRENCY = "concurrency"
RPS = "rps"
TICK_INTERVAL = 2.0  # seconds between decisions; also the scale-down delay window's bucket width


@dataclass(frozen=True, slots=True)
class DeciderSpec:
    """Everything one decision needs to know about its revision (Knative's ``DeciderSpec``).

    Defaults are Knative's for a revision with containerConcurrency 0. ``panic_threshold`` is a ratio
    (2.0 = 200 %); ``stable_window`` and ``scale_down_delay`` are seconds.

    Only values that would break the arithmetic are rejected (a zero target or scale-down rate divides
    by zero). ``total_value`` and ``stable_window`` may be 0, as in Knative, whose own decider tests
    leave them unset: zero total capacity just makes the EBC ``-TBC - panic``, and a zero stable window
    ends a panic at the first decision below the threshold. Configuration and annotations keep their
    own, stricter ranges (:mod:`autoscaler.config`).
    """

    scaling_metric: str = CONCURRENCY
    target_value: float = 70.0
    total_value: float = 100.0
    target_burst_capacity: float = 211.0
    panic_threshold: float = 2.0
    max_scale_up_rate: float = 1000.0
    max_scale_down_rate: float = 2.0
    activator_capacity: float = 100.0
    stable_window: float = 60.0
    scale_down_delay: float = 0.0
    activation_scale: int = 0
    reachable: bool = True

    def __post_init__(self) -> None:
        checks = (
            ("target_value", self.target_value > 0, "must be > 0"),
            ("total_value", self.total_value >= 0, "must be >= 0"),
            ("max_scale_up_rate", self.max_scale_up_rate > 0, "must be > 0"),
            ("max_scale_down_rate", self.max_scale_down_rate > 0, "must be > 0"),
            ("stable_window", self.stable_window >= 0, "must be >= 0"),
            ("scale_down_delay", self.scale_down_delay >= 0, "must be >= 0"),
            (
                "target_burst_capacity",
                self.target_burst_capacity >= 0 or self.target_burst_capacity == -1,
                "must be >= 0 or exactly -1",
            ),
        )
        for name, ok, allowed in checks:
            if not ok:
                raise ValueError(f"DeciderSpec.{name}={getattr(self, name)!r}: {allowed}")


@dataclass(frozen=True, slots=True)
class ScaleResult:
    """One decision. ``valid`` False means "no opinion": keep the previous desired scale."""

    desired_pods: int
    excess_burst_capacity: int
    valid: bool


INVALID = ScaleResult(desired_pods=0, excess_burst_capacity=0, valid=False)


class Autoscaler:
    """One revision's decider: the panic state and the scale-down delay window live here.

    Created with the ready count at hand: if more than one pod is ready it **starts in panic**, so an
    autoscaler restart (which loses all metric history) cannot scale a busy revision down for a stable
    window. ``ready_pods=None`` (count unknown) counts as 0, as Knative treats a lister error.
    """

    __slots__ = ("_delay_window", "_max_panic_pods", "_panic_time", "_spec")

    def __init__(self, spec: DeciderSpec, now: float, ready_pods: int | None) -> None:
        ready = ready_pods or 0
        self._spec = spec
        self._panic_time: float | None = now if ready > 1 else None
        self._max_panic_pods = ready
        # Only a delay configured at creation makes a window; Update never adds or resizes it.
        self._delay_window = (
            MaxWindow(spec.scale_down_delay, TICK_INTERVAL) if spec.scale_down_delay > 0 else None
        )

    @property
    def spec(self) -> DeciderSpec:
        return self._spec

    @property
    def panicking(self) -> bool:
        return self._panic_time is not None

    def update(self, spec: DeciderSpec) -> None:
        """Replace the spec; the panic state and the delay window stay as they are."""
        self._spec = spec

    def scale(
        self, now: float, ready_pods: int | None, observed_stable: float | None, observed_panic: float | None
    ) -> ScaleResult:
        """Decide at ``now``; any unavailable input (None) gives an invalid result and changes nothing."""
        if ready_pods is None or observed_stable is None or observed_panic is None:
            return INVALID
        desired, ebc = self.decide(now, ready_pods, observed_stable, observed_panic)
        return ScaleResult(desired_pods=desired, excess_burst_capacity=ebc, valid=True)

    def decide(
        self, now: float, ready_pods: int, observed_stable: float, observed_panic: float
    ) -> tuple[int, int]:
        """:meth:`scale` on known inputs, without the result object: ``(desired_pods, ebc)``."""
        spec = self._spec
        ready = ready_pods if ready_pods > 1 else 1  # rates and the panic ratio use at least one pod
        max_up = math.ceil(spec.max_scale_up_rate * ready)
        max_down = math.floor(ready / spec.max_scale_down_rate) if spec.reachable else 0

        stable_pods = math.ceil(observed_stable / spec.target_value)
        panic_pods = math.ceil(observed_panic / spec.target_value)
        # min(max(pods, max_down), max_up), spelled out: this runs for every revision on every tick.
        desired_stable = stable_pods if stable_pods > max_down else max_down
        if desired_stable > max_up:
            desired_stable = max_up
        desired_panic = panic_pods if panic_pods > max_down else max_down
        if desired_panic > max_up:
            desired_panic = max_up

        activation = spec.activation_scale
        if activation > 1:
            # Judged on the unclamped counts: a revision that wants no pods stays at zero.
            if stable_pods > 0 and desired_stable < activation:
                desired_stable = activation
            if panic_pods > 0 and desired_panic < activation:
                desired_panic = activation

        # The panic test uses the unclamped panic count: a rate-limited burst still panics.
        over_threshold = panic_pods / ready >= spec.panic_threshold
        if over_threshold:
            self._panic_time = now  # start panicking, or extend the panic
        elif self._panic_time is not None and self._panic_time + spec.stable_window < now:
            self._panic_time = None
            self._max_panic_pods = 0

        if self._panic_time is None:
            desired = desired_stable
        else:
            # Provision for the larger of the two, and never scale down while panicking.
            wanted = desired_stable if desired_stable > desired_panic else desired_panic
            if wanted > self._max_panic_pods:
                self._max_panic_pods = wanted
            desired = self._max_panic_pods

        if self._delay_window is not None and spec.reachable:
            self._delay_window.record(now, desired)
            desired = self._delay_window.current

        tbc = spec.target_burst_capacity
        if tbc == 0:
            ebc = 0
        elif tbc > 0:
            ebc = math.floor(ready_pods * spec.total_value - tbc - observed_panic)
        else:
            ebc = -1
        return desired, ebc
