"""Kubernetes' HorizontalPodAutoscaler, as its controller computes it, and Knative's HPA class on it.

A model of kubernetes ``pkg/controller/podautoscaler`` (``horizontal.go``, ``replica_calculator.go``)
following the algorithm the Kubernetes documentation describes:

* **replicas from a ratio** (:func:`replicas_for`): ``ratio = metric / target``; inside the tolerance
  (``|ratio − 1| ≤ 0.1``) nothing changes; else ``ceil(ratio × pods)``. Pods not ready yet count as
  0 % of the target when the ratio says "up" (the documented conservative recount), and if the recount
  lands inside the tolerance or reverses direction, nothing changes.
* **behavior** (:class:`HPAScaler`): the stabilization window (scale-down: the *maximum* of the
  recommendations over the last ``stabilizationWindowSeconds``, default 300 s; scale-up: the minimum,
  default 0 s), then the rate policies — ``Pods``/``Percent`` per ``periodSeconds``, counted from the
  replicas at the start of the period (scale events of the last period undone), combined by
  ``selectPolicy`` ``Max`` (the largest change, default), ``Min`` or ``Disabled`` — and
  ``minReplicas``/``maxReplicas``. Defaults are Kubernetes': up 100 % or 4 pods per 15 s (Max), down
  100 % per 15 s after a 300 s window.

:class:`HPAPolicy` is Knative's ``hpa.autoscaling.knative.dev`` class as a :mod:`autoscaler.policy`:
``minReplicas = max(min-scale, 1)`` (no scale to zero), ``maxReplicas = max-scale`` (0: no bound), the
``target`` annotation as the utilization percentage (default 80), and the metrics pipeline's lag: the
utilization is sampled at each decision, averaged over the metrics-server's window
(``metric_resolution``, 30 s, published on its grid) and read by the controller every ``sync_period``
(15 s). Utilization comes from the queue-proxy's concurrency, the same in the simulator and live:

* ``cpu``: each request in service keeps one core of the pod's one-core request busy — busy cores are
  the requests at the pods, at most ``containerConcurrency`` per pod when it is set (the rest are
  queued, not running); utilization = busy / ready pods;
* ``memory``: each request the pod holds (in service or queued) holds an equal share of the memory
  request: utilization = requests at the pods / (ready pods × ``containerConcurrency`` or 1).

Pure: ``now`` is passed in.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from autoscaler.policy import Observation, PolicyDecision, PolicyError
from autoscaler.revision import RevisionSettings

__all__ = [
    "DEFAULT_SCALE_DOWN",
    "DEFAULT_SCALE_UP",
    "HPAPolicy",
    "HPAScaler",
    "ScalingPolicy",
    "ScalingRules",
    "parse_behavior",
    "replicas_for",
]

TOLERANCE = 0.1
SELECT = ("Max", "Min", "Disabled")


@dataclass(frozen=True, slots=True)
class ScalingPolicy:
    """One ``behavior`` policy: change by ``value`` Pods or Percent within ``period_seconds``."""

    type: str  # "Pods" | "Percent"
    value: int
    period_seconds: float


@dataclass(frozen=True, slots=True)
class ScalingRules:
    """``behavior.scaleUp`` or ``behavior.scaleDown``."""

    stabilization_window_seconds: float
    select_policy: str
    policies: tuple[ScalingPolicy, ...]


DEFAULT_SCALE_UP = ScalingRules(0, "Max", (ScalingPolicy("Percent", 100, 15), ScalingPolicy("Pods", 4, 15)))
DEFAULT_SCALE_DOWN = ScalingRules(300, "Max", (ScalingPolicy("Percent", 100, 15),))


def replicas_for(current: int, ready: int, ratio: float, tolerance: float = TOLERANCE) -> int:
    """The replica calculator: desired pods for ``current`` replicas whose ``ready`` pods measured
    ``ratio`` of the target (the others have started but report no metrics yet).

    Inside the tolerance nothing changes; pods not ready count as 0 % when the ratio says up, and if
    that recount lands inside the tolerance or below 1, nothing changes; scaling down counts only the
    ready pods.
    """
    unready = max(current - ready, 0)
    if ready == 0 or abs(ratio - 1.0) <= tolerance:
        return current
    if ratio > 1.0 and unready > 0:
        recount = ratio * ready / (ready + unready)
        if abs(recount - 1.0) <= tolerance or recount < 1.0:
            return current
        return math.ceil(recount * (ready + unready))
    return math.ceil(ratio * ready)


class HPAScaler:
    """One HPA's controller state: its recommendations and scale events (``normalize`` per sync)."""

    def __init__(
        self,
        min_replicas: int,
        max_replicas: int,
        scale_up: ScalingRules = DEFAULT_SCALE_UP,
        scale_down: ScalingRules = DEFAULT_SCALE_DOWN,
    ) -> None:
        self.min_replicas = min_replicas
        self.max_replicas = max_replicas
        self.up = scale_up
        self.down = scale_down
        self._recommendations: list[tuple[float, int]] = []
        self._events: list[tuple[float, int]] = []  # (time, +added or -removed)

    def sync(self, now: float, current: int, proposed: int) -> int:
        """The replicas after one sync that computed ``proposed`` from the metrics (``current`` now)."""
        if current > self.max_replicas:
            desired = self.max_replicas
        elif current < self.min_replicas:
            desired = self.min_replicas
        else:
            desired = self._rate_limited(now, current, self._stabilized(now, current, proposed))
        if desired != current:
            self._events.append((now, desired - current))
        return desired

    def _stabilized(self, now: float, current: int, proposed: int) -> int:
        up_cut, down_cut = (
            now - self.up.stabilization_window_seconds,
            now - self.down.stabilization_window_seconds,
        )
        up = down = proposed
        for at, recommended in self._recommendations:
            if at > up_cut:
                up = min(up, recommended)
            if at > down_cut:
                down = max(down, recommended)
        keep = max(self.up.stabilization_window_seconds, self.down.stabilization_window_seconds)
        self._recommendations = [(at, r) for at, r in self._recommendations if at > now - keep]
        self._recommendations.append((now, proposed))
        return min(max(current, up), down)

    def _period_start(self, now: float, current: int, period: float) -> int:
        return current - sum(change for at, change in self._events if at > now - period)

    def _rate_limited(self, now: float, current: int, desired: int) -> int:
        if desired > current:
            limit = self._limit(now, current, self.up, up=True)
            return min(desired, max(limit, current), self.max_replicas)
        if desired < current:
            limit = self._limit(now, current, self.down, up=False)
            return max(desired, min(limit, current), self.min_replicas)
        return desired

    def _limit(self, now: float, current: int, rules: ScalingRules, up: bool) -> int:
        if rules.select_policy == "Disabled" or not rules.policies:
            return current
        proposals = []
        for policy in rules.policies:
            start = self._period_start(now, current, policy.period_seconds)
            if policy.type == "Pods":
                proposals.append(start + policy.value if up else start - policy.value)
            elif up:
                proposals.append(math.ceil(start * (1 + policy.value / 100)))
            else:
                proposals.append(int(start * (1 - policy.value / 100)))
        widest = max if up else min  # "Max" picks the largest change
        return (widest if rules.select_policy == "Max" else (min if up else max))(proposals)


def _rules(doc: Any, where: str, default: ScalingRules) -> ScalingRules:
    if doc is None:
        return default
    if not isinstance(doc, Mapping) or not set(doc) <= {
        "stabilizationWindowSeconds",
        "selectPolicy",
        "policies",
    }:
        raise PolicyError(
            f"{where}: expected a mapping of stabilizationWindowSeconds, selectPolicy, policies"
        )
    window = doc.get("stabilizationWindowSeconds", default.stabilization_window_seconds)
    if isinstance(window, bool) or not isinstance(window, int | float) or not 0 <= window <= 3600:
        raise PolicyError(f"{where}.stabilizationWindowSeconds={window!r}: must be seconds in [0, 3600]")
    select = doc.get("selectPolicy", "Max")
    if select not in SELECT:
        raise PolicyError(f"{where}.selectPolicy={select!r}: must be one of {', '.join(SELECT)}")
    policies = []
    given = doc.get("policies")
    if given is None:
        return ScalingRules(float(window), select, default.policies)
    if not isinstance(given, list):
        raise PolicyError(f"{where}.policies={given!r}: expected a list")
    for i, item in enumerate(given):
        at = f"{where}.policies[{i}]"
        if not isinstance(item, Mapping) or item.get("type") not in ("Pods", "Percent"):
            raise PolicyError(f"{at}: needs type Pods or Percent, value and periodSeconds")
        value, period = item.get("value"), item.get("periodSeconds")
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise PolicyError(f"{at}.value={value!r}: must be an integer > 0")
        if isinstance(period, bool) or not isinstance(period, int | float) or not 0 < period <= 1800:
            raise PolicyError(f"{at}.periodSeconds={period!r}: must be in (0, 1800]")
        policies.append(ScalingPolicy(item["type"], value, float(period)))
    return ScalingRules(float(window), select, tuple(policies))


def parse_behavior(doc: Any) -> tuple[ScalingRules, ScalingRules]:
    """An HPA ``behavior`` mapping (Kubernetes' field names) as (scaleUp, scaleDown) rules."""
    if doc is None:
        return DEFAULT_SCALE_UP, DEFAULT_SCALE_DOWN
    if not isinstance(doc, Mapping) or not set(doc) <= {"scaleUp", "scaleDown"}:
        raise PolicyError(f"behavior={doc!r}: expected a mapping with scaleUp and/or scaleDown")
    return (
        _rules(doc.get("scaleUp"), "behavior.scaleUp", DEFAULT_SCALE_UP),
        _rules(doc.get("scaleDown"), "behavior.scaleDown", DEFAULT_SCALE_DOWN),
    )


def _seconds(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= 3600:
        raise PolicyError(f"{name}={value!r}: must be seconds in (0, 3600]")
    return float(value)


class HPAPolicy:
    """Knative's HPA class: Kubernetes' HPA on CPU or memory utilization, never below one pod."""

    def __init__(
        self,
        settings: RevisionSettings,
        now: float,
        *,
        metric: str = "cpu",
        target: float = 80.0,
        sync_period: float = 15.0,
        metric_resolution: float = 30.0,
        tolerance: float = TOLERANCE,
        behavior: Mapping[str, Any] | None = None,
    ) -> None:
        if metric not in ("cpu", "memory"):
            raise PolicyError(f"metric={metric!r}: must be cpu or memory")
        if isinstance(target, bool) or not isinstance(target, int | float) or not target > 0:
            raise PolicyError(f"target={target!r}: a utilization percentage > 0")
        if isinstance(tolerance, bool) or not isinstance(tolerance, int | float) or not 0 <= tolerance < 1:
            raise PolicyError(f"tolerance={tolerance!r}: must be in [0, 1)")
        up, down = parse_behavior(behavior)
        top = settings.max_scale if settings.max_scale > 0 else 2**31 - 1
        self.scaler = HPAScaler(max(settings.min_scale, 1), top, up, down)
        self.metric, self.target, self.tolerance = metric, float(target), float(tolerance)
        self.sync_period = _seconds("sync_period", sync_period)
        self.resolution = _seconds("metric_resolution", metric_resolution)
        self._origin = now
        self._next_sync = now  # the controller's first sync runs at once
        self._window_end = now + self.resolution
        self._sum = 0.0
        self._samples = 0
        self._published: float | None = None  # the metrics-server's latest utilization (%)
        self._desired: int | None = None
        self._reason = ""

    def utilization(self, seen: Observation) -> float | None:
        """This instant's utilization (%) of the ready pods, from the pods' concurrency."""
        if seen.ready_pods == 0 or seen.pod_concurrency is None:
            return None
        cc = seen.settings.container_concurrency
        held = seen.pod_concurrency
        if self.metric == "cpu":
            busy = min(held, seen.ready_pods * cc) if cc > 0 else held
            return 100.0 * busy / seen.ready_pods
        return 100.0 * held / (seen.ready_pods * (cc or 1))

    def decide(self, seen: Observation) -> PolicyDecision:
        now = seen.now
        sample = self.utilization(seen)
        if sample is not None:
            self._sum += sample
            self._samples += 1
        if now >= self._window_end:  # the metrics-server publishes its window's average
            self._published = self._sum / self._samples if self._samples else None
            self._sum, self._samples = 0.0, 0
            self._window_end += self.resolution * (1 + (now - self._window_end) // self.resolution)
        current = seen.requested_pods
        if self._desired is None or now >= self._next_sync:
            self._next_sync += self.sync_period * (1 + (now - self._next_sync) // self.sync_period)
            ratio = None if self._published is None else self._published / self.target
            proposed = (
                current if ratio is None else replicas_for(current, seen.ready_pods, ratio, self.tolerance)
            )
            self._desired = self.scaler.sync(now, current, proposed)
            shown = "no metrics yet" if self._published is None else f"{self.metric} {self._published:.0f}%"
            self._reason = f"hpa: {shown} of target {self.target:g}% -> {self._desired} pods"
        return PolicyDecision(self._desired, reason=self._reason)
