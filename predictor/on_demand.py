"""Many models per pod: load a model on its first request, within a budget, unloading the least
recently used idle models to make room (the policy itself: ``predictor.model_cache``).

``OnDemandLoading`` is part of :class:`predictor.manager.ModelManager`; it is apart only to keep each
module readable. Its entry points for whoever serves requests (REST here, gRPC alike):

* ``hold(name, version)`` — a :class:`~predictor.model_entry.Held` at once when the model is loaded
  (a cache hit, no waiting), else an awaitable that loads it first (a miss);
* ``await acquire(name, version)`` — the same, always awaited.

Either way the caller releases the ``Held`` when its answer is done; until then the model is not
unloaded. Concurrent first requests for one model share one load task. A load reserves its estimated
size (the config's ``size_bytes`` parameter, else the model files' size on disk) before it starts,
and the measured size (parameters and buffers of the loaded module; see ``runners.resident_bytes``)
replaces the estimate once it is warm. Everything here runs on the event loop thread.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable
from typing import TYPE_CHECKING

from predictor.model_cache import Admit, Budget, Refuse, parse_bytes, plan_load
from predictor.model_entry import (
    LOADING,
    SIZE_PARAMETER,
    STANDBY_REASON,
    UNAVAILABLE,
    Held,
    ModelEntry,
    ModelNotFound,
    ModelNotReady,
    NoRoom,
)
from predictor.model_metrics import CacheCounters
from predictor.repository import ModelSource
from predictor.serving import ModelVersion

if TYPE_CHECKING:
    from collections.abc import Iterable

    from predictor.config import ModelConfig
    from predictor.repository import Repository

log = logging.getLogger("predictor")


class OnDemandLoading:
    """The budget half of the model manager (mixed into ``ModelManager``)."""

    budget: Budget
    cache: bool
    room_wait_s: float
    counters: CacheCounters
    _entries: dict[str, ModelEntry]
    _room_freed: asyncio.Event
    _room_waiters: int

    if TYPE_CHECKING:  # what it uses of ModelManager
        repository: Repository

        def entry(self, name: str) -> ModelEntry: ...
        def lookup(self, name: str, version: str | None = None) -> ModelVersion: ...
        def _lock(self, name: str) -> asyncio.Lock: ...
        async def _apply(self, entry: ModelEntry, source: ModelSource) -> None: ...
        def _failed(self, entry: ModelEntry, reason: str, config: ModelConfig | None = None) -> None: ...
        def _retire(self, versions: Iterable[ModelVersion]) -> None: ...
        def _drop(self, name: str) -> None: ...
        def _record_failure(self, entry: ModelEntry, message: str) -> None: ...

    def hold(self, name: str, version: str | None = None) -> Held | Awaitable[Held]:
        """The version that serves a request, held until released: at once when loaded (no waiting, the
        fast path), else an awaitable that loads it first (with a budget; without one a model that is
        not loaded raises ``ModelNotReady`` as ``lookup`` does). Raises ModelNotFound, ModelNotReady."""
        entry = self.entry(name)
        if entry.versions or not self.cache:
            model = self.lookup(name, version)
            if self.cache:
                self.counters.hits[name] += 1
            entry.in_flight += 1
            return self._held(entry, model, None)
        return self._load_then_hold(entry, version)

    async def acquire(self, name: str, version: str | None = None) -> Held:
        """Get or load ``name`` for one request (REST and gRPC alike); release the result when done."""
        held = self.hold(name, version)
        return held if isinstance(held, Held) else await held

    def _held(self, entry: ModelEntry, model: ModelVersion, waited: float | None) -> Held:
        entry.last_used = time.monotonic()

        def release() -> None:
            entry.in_flight -= 1
            entry.last_used = time.monotonic()
            if entry.in_flight == 0:
                self._notify_room()

        return Held(model, waited, release)

    async def _load_then_hold(self, entry: ModelEntry, version: str | None) -> Held:
        started = time.monotonic()
        self.counters.misses[entry.name] += 1
        entry.in_flight += 1  # from now on: its load cannot be undone by another model's
        try:
            await self._ensure_loaded(entry)
            model = self.lookup(entry.name, version)
        except BaseException:
            entry.in_flight -= 1
            self._notify_room()
            raise
        waited = time.monotonic() - started
        self.counters.waited(entry.name, waited)
        return self._held(entry, model, waited)

    async def _ensure_loaded(self, entry: ModelEntry, retry: bool = False) -> None:
        """Load ``entry`` unless it is loaded; every caller meanwhile waits for the same one load."""
        if entry.loading is None:
            task = asyncio.get_running_loop().create_task(self._load_on_demand(entry, retry))
            entry.loading = task
            task.add_done_callback(lambda done: _finished_load(entry, done))
        await asyncio.shield(entry.loading)

    async def _load_on_demand(self, entry: ModelEntry, retry: bool) -> None:
        name = entry.name
        async with self._lock(name):
            if self._entries.get(name) is not entry:
                raise ModelNotFound(f"model {name!r} was removed from the repository")
            if entry.versions:
                return
            source = self.repository.read_model(name)
            if source is None:
                self._drop(name)
                raise ModelNotFound(f"model {name!r} is not in the repository (no {name}/config.pbtxt)")
            if entry.failed and not retry and entry.fingerprint == source.fingerprint():
                raise ModelNotReady(
                    f"model {name!r} failed to load and its files have not changed: {entry.reason}"
                )
            entry.busy += 1
            try:
                entry.size_bytes = self._estimate(entry, source)
                await self._make_room(entry)
                entry.state = LOADING
                self.counters.loads[name] += 1
                await self._apply(entry, source)
            except NoRoom as exc:
                self._record_failure(entry, str(exc))
                entry.state, entry.reason = UNAVAILABLE, f"{STANDBY_REASON} (last try: {exc})"
                raise
            except ModelNotReady as exc:
                self._failed(entry, str(exc), source.config)
                raise
            finally:
                entry.busy -= 1
                entry.reserved = False
            if not entry.versions:
                entry.size_bytes = 0
                self._notify_room()
                raise ModelNotReady(f"model {name!r} failed to load: {entry.reason}")
            self._fit_measured(entry)

    def _estimate(self, entry: ModelEntry, source: ModelSource) -> int:
        """Bytes to reserve before loading: the declared size, else what the same files measured when they
        last loaded, else the model files' size on disk (TorchScript archives run ~2x their weights)."""
        if entry.measured is not None and entry.measured[0] == source.fingerprint():
            return entry.measured[1]
        declared = source.config.parameters.get(SIZE_PARAMETER) if source.config else None
        if declared:
            try:
                return parse_bytes(declared, f"config.pbtxt parameter {SIZE_PARAMETER}")
            except ValueError as exc:
                raise ModelNotReady(f"model {entry.name!r}: {exc}") from None
        return sum(v.model_file.stat().st_size for v in source.versions if v.model_file is not None)

    async def _make_room(self, entry: ModelEntry) -> None:
        """Unload idle models, least recently used first, until ``entry`` fits; wait (bounded) while only
        busy models stand in the way."""
        deadline = time.monotonic() + self.room_wait_s
        while True:
            residents = {n: e.resident() for n, e in self._entries.items() if e.versions or e.reserved}
            plan = plan_load(residents, entry.name, entry.size_bytes, self.budget)
            if isinstance(plan, Admit):
                for victim in plan.evict:
                    self._evict(self._entries[victim])
                entry.reserved = True
                entry.waiting_for_room = False
                return
            left = deadline - time.monotonic()
            if isinstance(plan, Refuse) or left <= 0:
                entry.waiting_for_room = False
                if isinstance(plan, Refuse):
                    raise ModelNotReady(plan.reason)
                raise NoRoom(f"{plan.reason}; waited {self.room_wait_s:g} s")
            entry.waiting_for_room = True
            freed = self._room_freed
            self._room_waiters += 1
            try:
                async with asyncio.timeout(left):
                    await freed.wait()
            except TimeoutError:
                pass
            finally:
                self._room_waiters -= 1

    def _fit_measured(self, entry: ModelEntry) -> None:
        """After a load: the measured (or declared) size replaces the estimate; unload idle models if the
        pod is over budget now (a model alone over the whole budget still serves, with a warning)."""
        measured = [v.info.resident_bytes for v in entry.versions.values()]
        declared = entry.config.parameters.get(SIZE_PARAMETER) if entry.config else None
        entry.size_bytes = parse_bytes(declared) if declared else sum(measured)
        entry.measured = (entry.fingerprint, entry.size_bytes)
        residents = {n: e.resident() for n, e in self._entries.items() if e.versions or e.reserved}
        plan = plan_load(residents, entry.name, entry.size_bytes, self.budget)
        if isinstance(plan, Admit):
            for victim in plan.evict:
                self._evict(self._entries[victim])
        else:
            log.warning("model %s: over budget until models in use are free: %s", entry.name, plan.reason)

    def _evict(self, entry: ModelEntry) -> None:
        self._retire(entry.versions.values())
        entry.versions, entry.failures, entry.size_bytes = {}, {}, 0
        entry.state, entry.reason = UNAVAILABLE, STANDBY_REASON
        self.counters.evictions[entry.name] += 1
        log.info("model %s: unloaded to make room (%s)", entry.name, self.budget.describe())

    def _register(self, name: str, source: ModelSource) -> None:
        """With a budget, the watcher and the first pass only note a model (Standby; FailedToLoad for a
        config that cannot load); changed files clear an earlier failure, so the next request retries."""
        entry = self._entries.get(name)
        if entry is None:
            entry = self._entries[name] = ModelEntry(name, state=UNAVAILABLE, reason=STANDBY_REASON)
        entry.fingerprint = source.fingerprint()
        if source.config is None or not source.versions:
            self._failed(entry, source.problem or "no versions", source.config)
            return
        entry.config, entry.failed = source.config, False
        entry.state, entry.reason = UNAVAILABLE, STANDBY_REASON

    def _notify_room(self) -> None:
        if self._room_waiters:
            self._room_freed.set()
            self._room_freed = asyncio.Event()


def _finished_load(entry: ModelEntry, task: asyncio.Task) -> None:
    if entry.loading is task:
        entry.loading = None
    if not task.cancelled():
        task.exception()  # retrieved: the requests that waited got it
