"""One revision's autoscaler: stats in, scaling decisions out — the composition every shell calls.

The live autoscaler service and the simulator both drive :class:`RevisionAutoscaler` the same way:
``record`` each stat as it arrives (and, for a pushed stat, decide at once when it returns True: the
scale-from-zero poke, also for a revision that has not decided yet), and ``decide`` every 2 seconds —
when, exactly, is :mod:`autoscaler.schedule`'s to say. One decision is Knative's whole chain for a
revision:

1. the stable and panic windows are averaged (``collection``),
2. the KPA decides desired pods and excess burst capacity (``scaling``),
3. the multiscaler keeps the last valid result (desired scale starts unknown, -1),
4. the PodAutoscaler reconciler applies bounds and sequences scale-to-zero (``lifecycle``),
5. and picks serve or proxy mode from the EBC.

Example, under simulated time::

    >>> from autoscaler.revision import RevisionAutoscaler, settings_from
    >>> from autoscaler.stat import Stat
    >>> settings = settings_from({"autoscaling.knative.dev/target": "10"})  # target value 10 × 0.7 = 7
    >>> rev = RevisionAutoscaler(settings, now=1000.0, ready_pods=0)
    >>> rev.record(Stat("activator", average_concurrent_requests=25.0), 1000.0)  # poke: decide now
    True
    >>> d = rev.decide(1000.0, ready_pods=0)
    >>> (d.desired_pods, d.apply, d.mode, d.panicking)
    (4, True, 'proxy', True)

Three counts of pods, each with one name (docs/autoscaler.md, "Desired, want, requested"):

* **desired pods** (``desired_pods``): what the autoscaler decided the revision should have —
  :class:`~autoscaler.scaling.ScaleResult`'s is the KPA's (step 2), :class:`ScaleDecision`'s the
  reconciler's, after bounds and scale-to-zero sequencing (step 4; -1 unknown);
* **want**: that reconciler's count under the name Knative's reconciler gives it (``LifecycleStep.want``,
  the status row's ``want``);
* **requested pods**: what the actuator was last told (``Actuator.desired_scale``, the status row's
  ``requested_pods``); it trails the decision when a decision does not apply.

Pure: no I/O, no clock; ``now`` is seconds (unix epoch in the live system, any origin in a simulation).
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from dataclasses import dataclass

from autoscaler.choice import PolicyChoice, class_choice
from autoscaler.collection import MetricCollection, NoDataError
from autoscaler.config import (
    LINEAR,
    AutoscalerConfig,
    AutoscalerConfigError,
    initial_scale,
    panic_window,
    parse_annotations,
    parse_config,
    resolve_metric_target,
)
from autoscaler.lifecycle import (
    ACTIVATION_TIMEOUT_BUFFER,
    AS_DECIDED,
    SCALE_UNKNOWN,
    Lifecycle,
    LifecycleSettings,
)
from autoscaler.scaling import CONCURRENCY, RPS, Autoscaler, DeciderSpec
from autoscaler.schedule import pokes
from autoscaler.stat import Stat

__all__ = ["RevisionAutoscaler", "RevisionSettings", "ScaleDecision", "settings_from"]

CONTAINER_CONCURRENCY_MAX = 1000  # config-defaults container-concurrency-max-limit
ACTIVATOR_PROBE_PERIOD = 1.0  # Knative re-probes for the activator every second
_PANIC_REASON = "panic: sized for the panic window, never scaling down"
_STABLE_REASON = "stable: sized for the stable window"


@dataclass(frozen=True, slots=True)
class RevisionSettings:
    """One revision's knobs, resolved from config-autoscaler, its annotations and containerConcurrency."""

    container_concurrency: int
    spec: DeciderSpec
    panic_window: float
    stable_window: float
    min_scale: int
    max_scale: int
    initial_scale: int
    activation_scale: int
    enable_scale_to_zero: bool
    scale_to_zero_grace_period: float
    scale_to_zero_pod_retention: float
    aggregation: str  # "linear" | "weighted-exponential"
    has_scrape_target: bool  # False when target-burst-capacity is -1: only activator stats arrive
    reachable: bool = True
    activation_timeout: float = 600.0 + ACTIVATION_TIMEOUT_BUFFER
    policy: PolicyChoice | None = None  # None: the KPA; else autoscaler.policy_loader builds it

    @property
    def lifecycle(self) -> LifecycleSettings:
        return LifecycleSettings(
            min_scale=self.min_scale,
            max_scale=self.max_scale,
            initial_scale=self.initial_scale,
            enable_scale_to_zero=self.enable_scale_to_zero,
            scale_to_zero_grace_period=self.scale_to_zero_grace_period,
            scale_to_zero_pod_retention=self.scale_to_zero_pod_retention,
            stable_window=self.stable_window,
            activation_timeout=self.activation_timeout,
            reachable=self.reachable,
            activator_always_in_path=self.spec.target_burst_capacity == -1,
        )

    @property
    def initial_excess_burst_capacity(self) -> int:
        """The EBC a new decider reports before its first decision (Knative's multiscaler)."""
        tbc = self.spec.target_burst_capacity
        if tbc in (-1, 0):
            return int(tbc)
        return int(self.initial_scale * self.spec.total_value - tbc)  # truncated toward zero, like Go


def settings_from(
    annotations: Mapping[str, str] | None = None,
    config: Mapping[str, str] | AutoscalerConfig | None = None,
    container_concurrency: int = 0,
    *,
    reachable: bool = True,
    strict_config: bool = False,
) -> RevisionSettings:
    """Resolve a revision's settings; raises :class:`AutoscalerConfigError` naming any bad key or value.

    ``config`` is config-autoscaler's data (or an already parsed :class:`AutoscalerConfig`);
    ``reachable`` is False for a revision no route sends traffic to (min-scale and retention are ignored);
    ``strict_config`` rejects unknown config keys (see :func:`parse_config`).
    """
    if isinstance(container_concurrency, bool) or not isinstance(container_concurrency, int):
        raise AutoscalerConfigError(f"containerConcurrency={container_concurrency!r}: must be an integer")
    if not 0 <= container_concurrency <= CONTAINER_CONCURRENCY_MAX:
        raise AutoscalerConfigError(
            f"containerConcurrency={container_concurrency}: must be in [0, {CONTAINER_CONCURRENCY_MAX}]"
            " (0 means no limit)"
        )
    policy, annotations = class_choice(annotations)  # the HPA class: its keys are not the KPA's
    cfg = config if isinstance(config, AutoscalerConfig) else parse_config(config, strict=strict_config)
    ann = parse_annotations(annotations, cfg)
    target_value, total_value = resolve_metric_target(cfg, ann, container_concurrency)
    stable = ann.window if ann.window is not None else cfg.stable_window
    tbc = ann.target_burst_capacity if ann.target_burst_capacity is not None else cfg.target_burst_capacity
    threshold = (
        ann.panic_threshold_percentage
        if ann.panic_threshold_percentage is not None
        else cfg.panic_threshold_percentage
    )
    panic_percentage = (
        ann.panic_window_percentage
        if ann.panic_window_percentage is not None
        else cfg.panic_window_percentage
    )
    delay = ann.scale_down_delay if ann.scale_down_delay is not None else cfg.scale_down_delay
    activation_scale = ann.activation_scale or 0
    spec = DeciderSpec(
        scaling_metric=ann.metric or CONCURRENCY,
        target_value=target_value,
        total_value=total_value,
        target_burst_capacity=tbc,
        panic_threshold=threshold / 100.0,
        max_scale_up_rate=cfg.max_scale_up_rate,
        max_scale_down_rate=cfg.max_scale_down_rate,
        activator_capacity=cfg.activator_capacity,
        stable_window=stable,
        scale_down_delay=delay,
        activation_scale=activation_scale,
        reachable=reachable,
    )
    retention = (
        ann.scale_to_zero_pod_retention_period
        if ann.scale_to_zero_pod_retention_period is not None
        else cfg.scale_to_zero_pod_retention_period
    )
    deadline = ann.progress_deadline if ann.progress_deadline is not None else cfg.progress_deadline
    return RevisionSettings(
        container_concurrency=container_concurrency,
        spec=spec,
        panic_window=panic_window(stable, panic_percentage),
        stable_window=stable,
        min_scale=ann.min_scale if ann.min_scale is not None else cfg.min_scale,
        max_scale=ann.max_scale if ann.max_scale is not None else cfg.max_scale,
        initial_scale=initial_scale(cfg, ann),
        activation_scale=activation_scale,
        enable_scale_to_zero=cfg.enable_scale_to_zero,
        scale_to_zero_grace_period=cfg.scale_to_zero_grace_period,
        scale_to_zero_pod_retention=retention,
        aggregation=ann.metric_aggregation_algorithm or LINEAR,
        has_scrape_target=tbc != -1,
        reachable=reachable,
        activation_timeout=deadline + ACTIVATION_TIMEOUT_BUFFER,
        policy=policy,
    )


@dataclass(frozen=True, slots=True)
class ScaleDecision:
    """One decision for one revision.

    Set the scale target to ``desired_pods`` when ``apply`` is True (-1 means "unknown, leave it");
    route through the activator when ``mode`` is "proxy". ``valid`` is False when the windows had no
    data (or the ready count was unknown): the decider kept its previous opinion.
    """

    valid: bool
    desired_pods: int
    apply: bool
    mode: str
    panicking: bool
    stable: float
    panic: float
    excess_burst_capacity: int
    state: str
    requeue_after: float | None
    reason: str
    changed: bool = False  # desired scale or the sign of EBC changed: Knative would reconcile at once


class RevisionAutoscaler:
    """The autoscaler of one revision: collection, KPA decider, and PodAutoscaler life cycle.

    ``ready_pods`` at creation decides the start-in-panic rule (None = unknown, counted as 0).
    """

    __slots__ = ("_autoscaler", "_collection", "_desired", "_ebc", "_lifecycle", "_rps", "_settings", "_want")

    def __init__(self, settings: RevisionSettings, now: float, ready_pods: int | None = 0) -> None:
        self._settings = settings
        self._collection = MetricCollection(
            settings.stable_window, settings.panic_window, settings.aggregation, settings.has_scrape_target
        )
        self._autoscaler = Autoscaler(settings.spec, now, ready_pods)
        self._lifecycle = Lifecycle(settings.lifecycle, now)
        self._rps = settings.spec.scaling_metric == RPS
        self._desired = SCALE_UNKNOWN  # the decider's last valid desired scale
        self._ebc = settings.initial_excess_burst_capacity
        self._want = SCALE_UNKNOWN  # the last scale the reconciler settled on

    @property
    def settings(self) -> RevisionSettings:
        return self._settings

    @property
    def desired_scale(self) -> int:
        """The decider's last valid desired pod count; -1 until the first valid decision."""
        return self._desired

    @property
    def excess_burst_capacity(self) -> int:
        return self._ebc

    @property
    def mode(self) -> str:
        return self._lifecycle.mode

    @property
    def state(self) -> str:
        return self._lifecycle.status.state

    @property
    def panicking(self) -> bool:
        return self._autoscaler.panicking

    def record(self, stat: Stat, now: float) -> bool:
        """Add a stat to the windows; True means a pushed stat should decide now (the poke).

        :func:`autoscaler.schedule.pokes` says when: the last desired scale is 0 or still unknown (-1)
        and the stat carries concurrency. Scraped stats are recorded the same way, but never poke.
        """
        self._collection.record(stat, now)
        return pokes(self._desired, stat)

    def observe(self, now: float) -> tuple[float, float]:
        """The revision-wide (stable, panic) values of the scaling metric; raises NoDataError when empty."""
        if self._rps:
            return self._collection.stable_and_panic_rps(now)
        return self._collection.stable_and_panic_concurrency(now)

    def at_rest(self, now: float) -> bool:
        """True when nothing this revision decides can change until a stat arrives or a pod is ready.

        The windows hold no data (so ``decide`` leaves the decider alone: no data, no decision), the
        decider's last desired scale is 0 (or still unknown), and the reconciler has settled at zero
        behind the activator (:meth:`Lifecycle.settled_at_zero`). Every ``decide``/``reconcile`` from
        ``now`` on, with no pod ready and the activator in the path, then returns the same decision
        and changes no state — which lets a simulator of many revisions skip an idle one's ticks
        (``simulation.many``).
        """
        try:
            self.observe(now)
        except NoDataError:
            return self._lifecycle.settled_at_zero(now, self._desired)
        return False

    def decide(self, now: float, ready_pods: int | None, activator_in_path: bool = True) -> ScaleDecision:
        """Decide at ``now``; ``activator_in_path`` answers Knative's probe before scaling to zero."""
        lifecycle = self._lifecycle
        if ready_pods is None:
            return ScaleDecision(
                valid=False,
                desired_pods=self._want,
                apply=False,
                mode=lifecycle.mode,
                panicking=self._autoscaler.panicking,
                stable=0.0,
                panic=0.0,
                excess_burst_capacity=self._ebc,
                state=lifecycle.status.state,
                requeue_after=None,
                reason="ready pod count unknown: no change",
            )
        try:
            stable, panic = self.observe(now)
        except NoDataError:
            valid, stable, panic, changed = False, 0.0, 0.0, False
        else:
            desired, ebc = self._autoscaler.decide(now, ready_pods, stable, panic)
            changed = desired != self._desired or (ebc < 0) != (self._ebc < 0)
            valid, self._desired, self._ebc = True, desired, ebc
        return self._reconcile(now, ready_pods, activator_in_path, valid, stable, panic, changed)

    def reconcile(self, now: float, ready_pods: int, activator_in_path: bool = True) -> ScaleDecision:
        """Re-apply bounds, scale-to-zero sequencing and the mode to the last KPA result.

        What Knative's PodAutoscaler reconciler does when endpoints change or a requeue fires: it
        reads the decider's stored status and does not run ``Scale`` again, so the scale-down rate
        limit still applies once per 2 s decision, not once per pod that goes away.
        """
        stable = panic = 0.0
        with contextlib.suppress(NoDataError):
            stable, panic = self.observe(now)
        return self._reconcile(now, ready_pods, activator_in_path, self._desired >= 0, stable, panic, False)

    def _reconcile(
        self,
        now: float,
        ready_pods: int,
        activator_in_path: bool,
        valid: bool,
        stable: float,
        panic: float,
        changed: bool,
    ) -> ScaleDecision:
        lifecycle = self._lifecycle
        step = lifecycle.step(now, self._desired, self._ebc, ready_pods, activator_in_path)
        self._want = step.want
        requeue = ACTIVATOR_PROBE_PERIOD if step.probe_activator else step.requeue_after
        panicking = self._autoscaler.panicking
        reason = step.reason
        if reason == AS_DECIDED:
            reason = _PANIC_REASON if panicking else _STABLE_REASON
        if not valid:
            reason = f"no data yet; {reason}"
        return ScaleDecision(
            valid=valid,
            desired_pods=step.want,
            apply=step.apply,
            mode=step.mode,
            panicking=panicking,
            stable=stable,
            panic=panic,
            excess_burst_capacity=self._ebc,
            state=step.state,
            requeue_after=requeue,
            reason=reason,
            changed=changed,
        )

    def update(self, settings: RevisionSettings, now: float) -> None:
        """Apply changed settings: windows resized in place, panic state and delay window kept."""
        self._settings = settings
        self._collection.update(
            settings.stable_window,
            settings.panic_window,
            settings.aggregation,
            settings.has_scrape_target,
            now,
        )
        self._autoscaler.update(settings.spec)
        self._lifecycle.update(settings.lifecycle)
        self._rps = settings.spec.scaling_metric == RPS
