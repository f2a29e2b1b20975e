"""The scaling-policy interface: observations in, desired pods out — the KPA's place, open to others.

A **policy** is a class built as ``Policy(settings, now, **options)`` whose ``decide(observation)``
returns the desired pod count (an ``int``) or a :class:`PolicyDecision` (desired pods, and whether the
activator must stay in the request path). It sees what the KPA sees (:class:`Observation`: the stable
and panic window values of the revision's metric, ready pods, the revision's settings, whether the
activator is in the path) plus two per-second counts (requests in flight at the revision, requests at
the pods), with ``now`` passed in: no clock, no I/O, so one class runs unchanged under the simulator's
time and live on ``kpa up``.

:class:`PolicyAutoscaler` gives any policy the face the shells drive — the simulator's engine and the
live service call ``record``/``decide``/``reconcile`` on it exactly as on
:class:`~autoscaler.revision.RevisionAutoscaler`, which is the KPA's implementation of the same face
(its pokes, requeues and reconcile-only steps are part of Knative's behaviour, so it is used as it is).
The adapter keeps the same stable/panic windows, applies ``min-scale``/``max-scale`` and turns the
policy's answer into a :class:`~autoscaler.revision.ScaleDecision`. A policy that raises or returns
garbage is named in a :class:`PolicyError` (``strict``, the simulator: the run stops with it) or, live,
leaves the previous decision in force with the error as the decision's reason (``kpa status`` shows it).
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Any, Protocol

from autoscaler.collection import SCRAPER_POD_NAME, MetricCollection, NoDataError
from autoscaler.revision import RevisionSettings, ScaleDecision
from autoscaler.scaling import RPS
from autoscaler.schedule import pokes
from autoscaler.stat import Stat

__all__ = ["Observation", "Policy", "PolicyAutoscaler", "PolicyDecision", "PolicyError"]


class PolicyError(ValueError):
    """A policy cannot be loaded or built, or it failed or answered garbage; the message names it."""


@dataclass(frozen=True, slots=True)
class Observation:
    """What a policy sees at one decision. Counts are revision-wide; ``now`` is seconds.

    ``stable``/``panic``: the revision's scaling metric (concurrency, or requests per second with
    ``metric: rps``) averaged over the stable and the panic window, exactly the KPA's inputs; None
    before any data. ``in_flight``: requests at the revision — held or proxied by the activator plus
    those at the pods — averaged over the last complete second (what an entry proxy such as KEDA's
    interceptor counts). ``pod_concurrency``: requests inside the pods' queue-proxies (in service or
    queued there) from the latest scrape, None before the first. ``requested_pods``: the scale the
    policy last asked for (the Deployment's replicas; the initial scale before the first decision);
    pods asked for but not yet ready are ``requested_pods - ready_pods`` while scaling up.
    """

    now: float
    ready_pods: int
    requested_pods: int
    stable: float | None
    panic: float | None
    in_flight: float
    pod_concurrency: float | None
    activator_in_path: bool
    settings: RevisionSettings


@dataclass(frozen=True, slots=True)
class PolicyDecision:
    """A policy's answer. ``activator_in_path`` None: in the path exactly when no pod can serve (the
    desired or the ready count is 0); True keeps it in front always (an entry proxy's behaviour)."""

    desired_pods: int
    activator_in_path: bool | None = None
    reason: str = ""
    requeue_after: float | None = None


class Policy(Protocol):
    """What ``kpa`` needs of a policy class; build it as ``cls(settings, now, **options)``."""

    def decide(self, observation: Observation) -> PolicyDecision | int: ...


def _checked(name: str, answer: object) -> PolicyDecision:
    if isinstance(answer, PolicyDecision):
        pods: object = answer.desired_pods
    elif isinstance(answer, int) and not isinstance(answer, bool):
        pods, answer = answer, PolicyDecision(answer)
    else:
        pods = None
    if (
        not isinstance(answer, PolicyDecision)
        or not isinstance(pods, int)
        or isinstance(pods, bool)
        or pods < 0
    ):
        raise PolicyError(
            f"policy {name} returned {answer!r}: expected desired pods as an int >= 0 or a PolicyDecision"
        )
    return answer


class PolicyAutoscaler:
    """Any :class:`Policy` behind the interface the simulator and the live service drive."""

    def __init__(
        self,
        name: str,
        policy: Policy,
        settings: RevisionSettings,
        now: float,
        ready_pods: int | None = 0,
        *,
        strict: bool = True,
    ) -> None:
        self.name = name
        self._policy = policy
        self._settings = settings
        self._strict = strict
        self._collection = MetricCollection(
            settings.stable_window, settings.panic_window, settings.aggregation, settings.has_scrape_target
        )
        self._rps = settings.spec.scaling_metric == RPS
        self._requested = settings.initial_scale
        self._desired = -1  # the last applied decision; -1 before the first (a pushed stat pokes then)
        self._in_path = True
        self._asked_in_path: bool | None = None
        self._seconds: dict[int, float] = {}  # second -> in-flight requests recorded in it
        self._pod_concurrency: float | None = None
        self._last: ScaleDecision | None = None

    @property
    def settings(self) -> RevisionSettings:
        return self._settings

    @property
    def desired_scale(self) -> int:
        return self._desired

    @property
    def excess_burst_capacity(self) -> int:
        return -1 if self._in_path else 0

    @property
    def mode(self) -> str:
        return "proxy" if self._in_path else "serve"

    @property
    def state(self) -> str:
        return "inactive" if self._desired == 0 else "active"

    @property
    def panicking(self) -> bool:
        return False

    def at_rest(self, now: float) -> bool:
        """Never: a policy may act on time alone (a cooldown), so its ticks are never skipped."""
        return False

    def record(self, stat: Stat, now: float) -> bool:
        """Into the windows, the per-second in-flight count and (a scrape) the pods' concurrency;
        True when a pushed stat should decide now (the revision is at zero or has not decided)."""
        self._collection.record(stat, now)
        second = math.floor(now)
        concurrency = stat.average_concurrent_requests - stat.average_proxied_concurrent_requests
        self._seconds[second] = self._seconds.get(second, 0.0) + concurrency
        for old in [s for s in self._seconds if s < second - 2]:
            del self._seconds[old]
        if stat.pod_name == SCRAPER_POD_NAME:
            self._pod_concurrency = stat.average_concurrent_requests
        return pokes(self._desired, stat)

    def observe(self, now: float) -> tuple[float, float]:
        if self._rps:
            return self._collection.stable_and_panic_rps(now)
        return self._collection.stable_and_panic_concurrency(now)

    def decide(self, now: float, ready_pods: int | None, activator_in_path: bool = True) -> ScaleDecision:
        if ready_pods is None:
            return self._decision(self._desired, "ready pod count unknown: no change", 0.0, 0.0, None, False)
        stable: float | None = None
        panic: float | None = None
        with contextlib.suppress(NoDataError):
            stable, panic = self.observe(now)
        seen = Observation(
            now=now,
            ready_pods=ready_pods,
            requested_pods=self._requested,
            stable=stable,
            panic=panic,
            in_flight=self._seconds.get(math.floor(now) - 1, 0.0),
            pod_concurrency=self._pod_concurrency,
            activator_in_path=activator_in_path,
            settings=self._settings,
        )
        try:
            answer = _checked(self.name, self._policy.decide(seen))
        except Exception as exc:
            error = (
                exc
                if isinstance(exc, PolicyError)
                else PolicyError(f"policy {self.name} failed at t={now:g}: {type(exc).__name__}: {exc}")
            )
            if self._strict:
                raise error from exc
            keep = self._last.desired_pods if self._last is not None else self._desired
            reason = f"{error}; keeping {keep} pods"
            return self._decision(keep, reason, stable or 0.0, panic or 0.0, None, False)
        desired = self._bounded(answer.desired_pods)
        self._asked_in_path = answer.activator_in_path
        self._in_path = self._path(desired, ready_pods)
        changed = desired != self._desired
        self._desired = self._requested = desired
        reason = answer.reason or f"{self.name}: {desired} pods"
        self._last = self._decision(
            desired, reason, stable or 0.0, panic or 0.0, answer.requeue_after, changed
        )
        return self._last

    def reconcile(self, now: float, ready_pods: int, activator_in_path: bool = True) -> ScaleDecision:
        """Re-apply the last answer (pods came or went, a requeue fired): the mode follows the ready
        pods; the policy is asked again only at its next decision."""
        last = self._last
        if last is None:
            return self.decide(now, ready_pods, activator_in_path)
        self._in_path = self._path(last.desired_pods, ready_pods)
        return self._decision(last.desired_pods, last.reason, last.stable, last.panic, None, False)

    def _path(self, desired: int, ready_pods: int) -> bool:
        """The activator stays in the path when the policy asks, and whenever no pod can serve."""
        asked = self._asked_in_path
        return ready_pods == 0 or desired == 0 or bool(asked)

    def update(self, settings: RevisionSettings, now: float) -> None:
        """New settings: windows resized in place; the policy sees them in its next observation."""
        self._settings = settings
        self._collection.update(
            settings.stable_window,
            settings.panic_window,
            settings.aggregation,
            settings.has_scrape_target,
            now,
        )
        self._rps = settings.spec.scaling_metric == RPS

    def _bounded(self, desired: int) -> int:
        s = self._settings
        if s.max_scale > 0:
            desired = min(desired, s.max_scale)
        floor = max(s.min_scale, 0 if s.enable_scale_to_zero else 1)
        return max(desired, floor)

    def _decision(
        self,
        desired: int,
        reason: str,
        stable: float,
        panic: float,
        requeue_after: float | None,
        changed: bool,
    ) -> ScaleDecision:
        return ScaleDecision(
            valid=desired >= 0,
            desired_pods=desired,
            apply=desired >= 0,
            mode=self.mode,
            panicking=False,
            stable=stable,
            panic=panic,
            excess_burst_capacity=self.excess_burst_capacity,
            state=self.state,
            requeue_after=requeue_after,
            reason=reason,
            changed=changed,
        )


def built(name: str, factory: Any, settings: RevisionSettings, now: float, options: dict[str, Any]) -> Policy:
    """``factory(settings, now, **options)``, or a :class:`PolicyError` naming the policy and the cause."""
    try:
        policy: Policy = factory(settings, now, **options)
    except PolicyError:
        raise
    except Exception as exc:
        raise PolicyError(f"policy {name}: cannot build it: {type(exc).__name__}: {exc}") from exc
    if not callable(getattr(policy, "decide", None)):
        raise PolicyError(f"policy {name}: {type(policy).__name__} has no decide(observation) method")
    return policy
