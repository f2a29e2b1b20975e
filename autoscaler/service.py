"""The autoscaler service: the asyncio shell that feeds the pure core and carries out its decisions.

For each revision it runs Knative's two clocks (pkg/autoscaler/metrics/collector.go and
scaling/multiscaler.go):

* every second it scrapes a sample of the ready pods' queue-proxy ``/stats`` in parallel (sample
  size, old pods first, 3 s timeout), extrapolates the sample to the whole revision and records it;
  stats the activator pushes are recorded as they come;
* every 2 seconds — and at once when a pushed stat pokes a revision at zero or not yet decided — it
  runs ``RevisionAutoscaler.decide``, sets the desired scale on the actuator when the decision says to
  apply it, and tells its listeners when the revision flips between serve and proxy mode. When to
  decide and when only to reconcile (tick, poke, requeue, pods changed) is
  :class:`autoscaler.schedule.DecisionSchedule`'s to say, the same policy the simulator follows.

Nothing here decides anything: sampling, extrapolation, windows, the KPA and scale-to-zero
sequencing are all the core's. What the shell adds is failure handling — a failed scrape records
nothing (the revision keeps its last good decision, as in Knative), an exception in one revision's
loop is logged and the loop goes on — and the Prometheus view of it all.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import httpx

from autoscaler.actuator import Actuator, PodInfo, ready_pods
from autoscaler.collection import ScrapePod, extrapolate, sample_size, scrape_order
from autoscaler.lifecycle import PROXY
from autoscaler.policy_loader import make_autoscaler
from autoscaler.revision import RevisionSettings, ScaleDecision
from autoscaler.scaling import TICK_INTERVAL
from autoscaler.schedule import DecisionSchedule
from autoscaler.stat import RevisionKey, Stat, StatError
from autoscaler.status import AutoscalerMetrics, RevisionStatus

log = logging.getLogger("kpa.autoscaler")

SCRAPE_INTERVAL = 1.0  # Knative's scrapeTickInterval
DECIDE_INTERVAL = TICK_INTERVAL  # Knative's tickInterval
SCRAPE_TIMEOUT = 3.0  # Knative's scraper HTTP timeout

ModeListener = Callable[[RevisionKey, str], None]


class ScrapeError(Exception):
    """No revision-wide stat this tick; the message says which pods failed and how."""


def parse_stat_push(doc: Any) -> list[tuple[RevisionKey, Stat]]:
    """Read the activator's push body, ``[{namespace, revision, stat}, ...]``; raises StatError."""
    if not isinstance(doc, list):
        raise StatError(
            f"stat push must be a JSON list of {{namespace, revision, stat}}, got {type(doc).__name__}"
        )
    entries = []
    for index, item in enumerate(doc):
        if not isinstance(item, dict) or set(item) != {"namespace", "revision", "stat"}:
            raise StatError(f"stat push [{index}]: must be an object with exactly namespace, revision, stat")
        namespace, revision = item["namespace"], item["revision"]
        if not isinstance(namespace, str) or not isinstance(revision, str) or not revision:
            raise StatError(f"stat push [{index}]: namespace and revision must be strings")
        try:
            stat = Stat.from_json(item["stat"])
        except StatError as exc:
            raise StatError(f"stat push [{index}]: {exc}") from None
        entries.append((RevisionKey(namespace, revision), stat))
    return entries


class _ScaledRevision:
    """One revision the service scales: its decision core, the state its loops share, and the loops."""

    def __init__(self, ref: RevisionKey, settings: RevisionSettings, now: float, ready: int) -> None:
        self.ref = ref
        self.settings = settings
        self.core = make_autoscaler(settings, now, ready, strict=False)  # a failing policy keeps the last
        self.mode = self.core.mode
        self.poke = asyncio.Event()  # wakes the decision loop
        self.scale_now = False  # a pushed stat poked: run the decider, not just the reconciler
        self.last: ScaleDecision | None = None
        self.scrape_error: str | None = None
        self.scrape_failures = 0
        self.scale_events = {"up": 0, "down": 0}  # changes of the requested pods, for /metrics
        self.tasks: list[asyncio.Task[None]] = []


class AutoscalerService:
    """Scrape, record, decide and actuate for a set of revisions; see the module docstring."""

    def __init__(
        self,
        actuator: Actuator,
        *,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
        scrape_interval: float = SCRAPE_INTERVAL,
        decide_interval: float = DECIDE_INTERVAL,
        scrape_timeout: float = SCRAPE_TIMEOUT,
    ) -> None:
        self.actuator = actuator
        self.clock = clock
        self.rng = rng or random.Random()
        self.scrape_interval = scrape_interval
        self.decide_interval = decide_interval
        self.scrape_timeout = scrape_timeout
        self._revisions: dict[RevisionKey, _ScaledRevision] = {}
        self._mode_listeners: list[ModeListener] = []
        self._http: httpx.AsyncClient | None = None
        self._running = False
        self._closed = False  # closed once: the next start begins every revision afresh
        self.stats_received = 0
        self.stats_rejected = 0
        self.metrics = AutoscalerMetrics(self)
        actuator.subscribe(self._pods_changed)

    # ---- configuration ----------------------------------------------------------------------------

    def add_revision(self, ref: RevisionKey, settings: RevisionSettings) -> None:
        """Scale ``ref``; for a revision already scaled, new settings apply in place (windows kept).

        A new revision's decider starts from the actuator's ready pods now: more than one starts it
        in panic, Knative's rule for an autoscaler (re)started over running pods, so a history it
        never saw cannot scale it down for a stable window. Add revisions once the actuator knows
        their pods (the Kubernetes controller's informers have synced), or that rule cannot apply.
        """
        if ref in self._revisions:
            self._revisions[ref].core.update(settings, self.clock())
            self._revisions[ref].settings = settings
            return
        ready = len(ready_pods(self.actuator.pods(ref)))
        revision = self._revisions[ref] = _ScaledRevision(ref, settings, self.clock(), ready)
        if self._running:
            self._start_loops(revision)

    def remove_revision(self, ref: RevisionKey) -> None:
        """Stop scaling ``ref`` (its workload went away): its loops end, stats pushed for it from now
        on count as rejected, and adding it again starts it afresh."""
        revision = self._revisions.pop(ref, None)
        for task in revision.tasks if revision is not None else ():
            task.cancel()

    def settings(self, ref: RevisionKey) -> RevisionSettings:
        return self._revisions[ref].settings

    def on_mode_change(self, listener: ModeListener) -> None:
        """``listener(revision, "serve" | "proxy")`` after each flip (and once per revision at start)."""
        self._mode_listeners.append(listener)

    def mode(self, ref: RevisionKey) -> str:
        return self._revisions[ref].mode

    def revisions(self) -> list[RevisionKey]:
        return sorted(self._revisions)

    # ---- stats in ---------------------------------------------------------------------------------

    def record_pushed(self, entries: Iterable[tuple[RevisionKey, Stat]]) -> None:
        """Record stats the activator pushed; unknown revisions are counted and skipped."""
        now = self.clock()
        for ref, stat in entries:
            revision = self._revisions.get(ref)
            if revision is None:
                self.stats_rejected += 1
                continue
            self.stats_received += 1
            at = stat.timestamp or now
            if revision.core.record(stat.with_timestamp(at), at):
                revision.scale_now = True
                revision.poke.set()

    # ---- lifecycle --------------------------------------------------------------------------------

    async def start(self) -> None:
        """Start every revision's loops. Started again after :meth:`close` (a controller that lost
        leadership and won it back), the service starts each revision afresh, as a restarted Knative
        autoscaler: empty windows, since a window with a gap reads as idle, and in panic where more
        than one pod is ready (see :meth:`add_revision`)."""
        self._http = httpx.AsyncClient(timeout=self.scrape_timeout)
        if self._closed:
            now = self.clock()
            for ref, old in self._revisions.items():
                ready = len(ready_pods(self.actuator.pods(ref)))
                self._revisions[ref] = _ScaledRevision(ref, old.settings, now, ready)
        self._running = True
        for revision in self._revisions.values():
            self._start_loops(revision)

    async def close(self) -> None:
        self._running = False
        self._closed = True
        tasks = [t for r in self._revisions.values() for t in r.tasks]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._http is not None:
            await self._http.aclose()

    def _start_loops(self, revision: _ScaledRevision) -> None:
        for listener in self._mode_listeners:
            listener(revision.ref, revision.mode)
        revision.tasks = [
            asyncio.create_task(self._scrape_loop(revision), name=f"scrape {revision.ref}"),
            asyncio.create_task(self._decide_loop(revision), name=f"decide {revision.ref}"),
        ]

    def _pods_changed(self, ref: RevisionKey, pods: Sequence[PodInfo]) -> None:
        # Knative reconciles the PodAutoscaler when endpoints change: serve mode can begin as soon
        # as a pod is ready, not at the next tick.
        revision = self._revisions.get(ref)
        if revision is not None:
            revision.poke.set()

    # ---- scraping ---------------------------------------------------------------------------------

    async def _scrape_loop(self, revision: _ScaledRevision) -> None:
        loop = asyncio.get_running_loop()
        next_tick = loop.time()
        while True:
            next_tick += self.scrape_interval
            await asyncio.sleep(max(0.0, next_tick - loop.time()))
            try:
                await self._scrape_once(revision)
            except ScrapeError as exc:
                revision.scrape_failures += 1
                if revision.scrape_error != str(exc):
                    log.warning("%s: scrape failed, nothing recorded this tick: %s", revision.ref, exc)
                revision.scrape_error = str(exc)
            except Exception:
                log.exception("%s: scrape tick failed", revision.ref)

    async def _scrape_once(self, revision: _ScaledRevision) -> None:
        if not revision.settings.has_scrape_target:
            return  # target-burst-capacity -1: only the activator's stats count
        pods = ready_pods(self.actuator.pods(revision.ref))
        if not pods:
            revision.scrape_error = None
            return
        stat = await self.scrape(pods, revision.settings.stable_window)
        now = self.clock()
        revision.scrape_error = None
        # The scraper records without poking: only pushed stats wake the decider early (as in Knative).
        revision.core.record(stat.with_timestamp(now), now)

    async def scrape(self, pods: Sequence[PodInfo], stable_window: float) -> Stat:
        """One revision-wide stat from a sample of ``pods``, as Knative's stats scraper makes it.

        ``sample_size`` workers run in parallel, each taking the next pod in ``scrape_order`` until
        one answers; if any worker runs out of pods there is no stat (errPodsExhausted).
        """
        now = self.clock()
        by_name = {p.name: p for p in pods}
        order = iter(
            scrape_order([ScrapePod(p.name, p.started_at) for p in pods], stable_window, now, self.rng)
        )
        errors: list[str] = []

        async def worker() -> Stat | None:
            for name in order:
                try:
                    return await self._fetch(by_name[name])
                except (httpx.HTTPError, StatError, ValueError) as exc:
                    errors.append(f"{name}: {_describe(exc)}")
            return None

        results = await asyncio.gather(*(worker() for _ in range(sample_size(len(pods)))))
        stats = [s for s in results if s is not None]
        if len(stats) < len(results):
            raise ScrapeError(f"{len(stats)} of {len(results)} sampled pods answered ({'; '.join(errors)})")
        return extrapolate(stats, len(pods))

    async def _fetch(self, pod: PodInfo) -> Stat:
        assert self._http is not None
        answer = await self._http.get(pod.stats_url)
        if answer.status_code != 200:
            raise ValueError(f"HTTP {answer.status_code}")
        return Stat.from_json(answer.json())

    # ---- deciding ---------------------------------------------------------------------------------

    async def _decide_loop(self, revision: _ScaledRevision) -> None:
        """The decider on its ticks and on pushed-stat pokes; the reconciler alone on anything else.

        As in Knative, a pod coming or going, or a requeue for scale-to-zero sequencing, re-applies
        bounds and the mode to the last decision without running the decider again: otherwise each
        pod that leaves would allow another halving within one tick.
        """
        loop = asyncio.get_running_loop()
        schedule = DecisionSchedule(loop.time(), self.decide_interval)
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, schedule.wake_at() - loop.time())):
                    await revision.poke.wait()
            revision.poke.clear()
            now = loop.time()
            tick = schedule.tick_due(now)
            schedule.requeue_due(now)  # clears a due requeue: any wake but a tick or a poke reconciles
            scale = revision.scale_now or tick
            revision.scale_now = False
            try:
                decision = self.decide_now(revision.ref, scale=scale)
            except Exception:
                log.exception("%s: decision failed; keeping the previous one", revision.ref)
                continue
            schedule.requeue(now, decision.requeue_after)

    def decide_now(self, ref: RevisionKey, *, scale: bool = True) -> ScaleDecision:
        """One decision for ``ref`` (``scale=False``: reconcile only); actuate and flip the mode."""
        revision = self._revisions[ref]
        now = self.clock()
        ready = len(ready_pods(self.actuator.pods(ref)))
        in_path = revision.mode == PROXY
        decision = (
            revision.core.decide(now, ready, activator_in_path=in_path)
            if scale
            else revision.core.reconcile(now, ready, activator_in_path=in_path)
        )
        previous = revision.last
        revision.last = decision
        if decision.apply and decision.desired_pods >= 0:
            requested = self.actuator.desired_scale(ref)
            if decision.desired_pods != requested:
                revision.scale_events["up" if decision.desired_pods > requested else "down"] += 1
            self.actuator.set_desired_scale(ref, decision.desired_pods)
        if previous is None or (previous.state, previous.reason) != (decision.state, decision.reason):
            log.info(
                "%s: %s, want %d, ready %d, %s (%s)",
                ref,
                decision.state,
                decision.desired_pods,
                ready,
                decision.mode,
                decision.reason,
            )
        if decision.mode != revision.mode:
            revision.mode = decision.mode
            log.info("%s: mode -> %s", ref, decision.mode)
            for listener in self._mode_listeners:
                try:
                    listener(ref, decision.mode)
                except Exception:
                    log.exception("mode listener failed")
        return decision

    # ---- views ------------------------------------------------------------------------------------

    def status(self) -> list[RevisionStatus]:
        rows = []
        for ref in self.revisions():
            revision = self._revisions[ref]
            pods = self.actuator.pods(ref)
            last = revision.last
            failure = getattr(self.actuator, "last_failure", lambda _ref: None)(ref)
            pending = getattr(self.actuator, "pending", lambda _ref: 0)(ref)
            rows.append(
                RevisionStatus(
                    namespace=ref.namespace,
                    name=ref.name,
                    requested_pods=self.actuator.desired_scale(ref),
                    want=last.desired_pods if last else -1,
                    ready_pods=len(ready_pods(pods)),
                    pods=len(pods),
                    mode=revision.mode,
                    state=revision.core.state,
                    panicking=revision.core.panicking,
                    stable_concurrency=round(last.stable, 3) if last else 0.0,
                    panic_concurrency=round(last.panic, 3) if last else 0.0,
                    excess_burst_capacity=revision.core.excess_burst_capacity,
                    target=revision.settings.spec.target_value,
                    reason=last.reason if last else "starting",
                    scrape_error=revision.scrape_error,
                    pod_failure=f"{failure.pod} {failure.reason}" if failure else None,
                    metric=revision.settings.spec.scaling_metric,
                    pending_pods=pending,
                    terminating_pods=sum(p.terminating for p in pods),
                )
            )
        return rows

    def scrape_failures(self, ref: RevisionKey) -> int:
        """Scrape ticks of ``ref`` that recorded nothing (a counter, for /metrics)."""
        return self._revisions[ref].scrape_failures

    def scale_events(self, ref: RevisionKey) -> dict[str, int]:
        """Changes of ``ref``'s requested pods by direction ("up", "down"; counters, for /metrics)."""
        return self._revisions[ref].scale_events


def _describe(exc: Exception) -> str:
    if isinstance(exc, httpx.TimeoutException):
        return "timed out"
    if isinstance(exc, httpx.ConnectError):
        return "connection refused"
    return str(exc) or type(exc).__name__
