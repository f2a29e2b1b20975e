"""The set of served models: loading, swapping, unloading, and answering "which version serves this?".

All state lives on the event loop thread; loads and compiles run on worker threads. A model's served
versions are swapped in one assignment once every new version is warm, so a request either finds the
old set or the new one, never a half-loaded model. A reload that fails leaves the old versions
serving and says why; a model that never loaded is UNAVAILABLE with its reason, and other models are
untouched either way.

With a budget (``--memory-budget`` bytes and/or ``--max-models``) the pod holds many models but keeps
only some loaded: a model loads on its first request (``hold``/``acquire``) or on the repository API's
load, concurrent first requests share that one load, and the least recently used idle models are
unloaded to make room (the policy: ``predictor.model_cache``). A model with requests in flight is never
unloaded; a load that finds only such models in the way waits up to ``room_wait_s`` for one to free,
then fails with 503 naming the budget. The watcher then only registers models (Standby) and reloads
the ones loaded now.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from predictor.config import ModelConfig
from predictor.loader import PendingCompile, VersionLoader
from predictor.model_cache import Budget
from predictor.model_entry import (
    LOADING,
    READY,
    UNAVAILABLE,
    Held,
    ModelEntry,
    ModelNotFound,
    ModelNotReady,
)
from predictor.model_metrics import CacheCounters
from predictor.model_status import Failure, model_status
from predictor.on_demand import OnDemandLoading
from predictor.repository import ModelSource, Repository, check_model_name, parse_version
from predictor.serving import ModelVersion

__all__ = [
    "LOADING", "READY", "UNAVAILABLE", "Held", "ModelEntry", "ModelManager", "ModelNotFound", "ModelNotReady",
]  # fmt: skip

log = logging.getLogger("predictor")


class ModelManager(OnDemandLoading):
    def __init__(
        self,
        repository: Repository,
        loader: VersionLoader,
        budget: Budget | None = None,
        room_wait_s: float = 30.0,
    ):
        self.repository = repository
        self.loader = loader
        self.budget = budget or Budget()
        self.cache = self.budget.limited  # many models, loaded on demand within the budget
        self.room_wait_s = room_wait_s
        self.counters = CacheCounters()
        self._room_freed = asyncio.Event()
        self._room_waiters = 0
        self.location = f"{os.environ.get('HOSTNAME') or socket.gethostname()}/pid {os.getpid()}"
        self.started = False  # the first pass over the repository has finished
        self._entries: dict[str, ModelEntry] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._queued: set[str] = set()
        self._load_pool = ThreadPoolExecutor(1, thread_name_prefix="model-load")
        self._compile_pool = ThreadPoolExecutor(1, thread_name_prefix="model-compile")
        self._background: set[asyncio.Task] = set()

    # --- changes ---------------------------------------------------------------------------------

    async def load_repository(self) -> None:
        """First pass: load every model of the repository (concurrently; the load pool serializes work)."""
        await self.sync(self.repository.model_names())
        self.started = True

    async def sync(self, names: Iterable[str]) -> None:
        """Bring the named models in line with the repository: load new, reload changed, drop removed."""
        await asyncio.gather(*(self._sync_one(name, force=False) for name in set(names)))

    async def sync_all(self) -> None:
        await self.sync(set(self.repository.model_names()) | set(self._entries))

    async def load(self, name: str) -> ModelEntry:
        """Repository API load: (re)load ``name`` even if its files did not change."""
        check_model_name(name)
        if self.repository.read_model(name) is None:
            raise ModelNotFound(f"model {name!r} is not in the repository (no {name}/config.pbtxt)")
        entry = self._entries.get(name)
        if self.cache and (entry is None or not entry.versions):
            if entry is None:
                await self._sync_one(name, force=False)  # registers it
            await self._ensure_loaded(self.entry(name), retry=True)
        else:
            await self._sync_one(name, force=True)
        return self._entries[name]

    async def unload(self, name: str) -> None:
        """Repository API unload: stop serving ``name``; it loads again when its files change or on load."""
        check_model_name(name)
        async with self._lock(name):
            entry = self._entries.get(name)
            if entry is None:
                raise ModelNotFound(f"model {name!r} is not loaded")
            self._retire(entry.versions.values())
            entry.versions, entry.failures, entry.size_bytes, entry.failed = {}, {}, 0, False
            entry.state = UNAVAILABLE
            entry.reason = "unloaded by request" + ("; its next request loads it again" if self.cache else "")
            self._notify_room()
            log.info("model %s: unloaded by request", name)

    async def _sync_one(self, name: str, force: bool) -> None:
        if name in self._queued and not force:
            return  # a sync that has not started yet will read the files as they are by then
        self._queued.add(name)
        async with self._lock(name):
            self._queued.discard(name)
            source = self.repository.read_model(name)
            if source is None:
                self._drop(name)
                return
            entry = self._entries.get(name)
            if entry is not None and not force and entry.fingerprint == source.fingerprint():
                return
            if self.cache and (entry is None or not entry.versions):
                self._register(name, source)  # loads on its first request
                return
            if entry is None:
                entry = self._entries[name] = ModelEntry(name)
            entry.busy += 1
            try:
                await self._apply(entry, source)
            finally:
                entry.busy -= 1
            if self.cache and entry.versions:
                self._fit_measured(entry)

    async def _apply(self, entry: ModelEntry, source: ModelSource) -> None:
        loop = asyncio.get_running_loop()
        entry.fingerprint = source.fingerprint()
        if source.config is None or not source.versions:
            self._failed(entry, source.problem or "no versions", source.config)
            return
        config = source.config
        versions: dict[int, ModelVersion] = {}
        failures: dict[int, str] = {}
        pending: list[tuple[ModelVersion, PendingCompile]] = []
        for version_source in source.versions:
            number = version_source.version
            current = entry.versions.get(number)
            if current is not None and current.source == version_source and current.config == config:
                versions[number] = current
            elif version_source.problem:
                failures[number] = version_source.problem
            else:
                try:
                    loaded, compile_later = await loop.run_in_executor(
                        self._load_pool, self.loader.load, config, version_source
                    )
                except Exception as exc:
                    failures[number] = f"{type(exc).__name__}: {exc}"
                    log.warning(
                        "model %s version %s failed to load: %s", entry.name, number, failures[number]
                    )
                    continue
                versions[number] = loaded
                if compile_later is not None:
                    pending.append((loaded, compile_later))
        if not versions:
            self._failed(
                entry, "; ".join(f"version {v}: {why}" for v, why in sorted(failures.items())), config
            )
            return
        retired = [v for v in entry.versions.values() if v not in versions.values()]
        entry.versions, entry.failures, entry.config = versions, failures, config
        entry.state = READY
        entry.reason = "; ".join(f"version {v} not loaded: {why}" for v, why in sorted(failures.items()))
        entry.failed = bool(failures)
        if failures:
            self._record_failure(entry, entry.reason)
        self._retire(retired)
        if retired:
            log.info("model %s: now serving versions %s", entry.name, sorted(versions))
        for version, job in pending:
            self._start_background_compile(entry.name, version, job)

    def _failed(self, entry: ModelEntry, reason: str, config: ModelConfig | None = None) -> None:
        if entry.versions:  # keep serving what worked before; say why the change did not apply
            entry.reason = f"change not applied, still serving versions {sorted(entry.versions)}: {reason}"
        else:
            entry.state, entry.reason, entry.config = UNAVAILABLE, reason, config
        entry.failed = True
        self._record_failure(entry, reason)
        log.warning("model %s: %s", entry.name, entry.reason)

    def _record_failure(self, entry: ModelEntry, message: str) -> None:
        at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        entry.last_failure = Failure(message, at, self.location)

    def _drop(self, name: str) -> None:
        entry = self._entries.pop(name, None)
        if entry is not None:
            self._retire(entry.versions.values())
            self._notify_room()
            log.info("model %s: removed from the repository, unloaded", name)

    def _retire(self, versions: Iterable[ModelVersion]) -> None:
        for version in list(versions):
            version.retire()

    def _lock(self, name: str) -> asyncio.Lock:
        return self._locks.setdefault(name, asyncio.Lock())

    def _start_background_compile(self, name: str, version: ModelVersion, job: PendingCompile) -> None:
        task = asyncio.get_running_loop().create_task(self._background_compile(name, version, job))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _background_compile(self, name: str, version: ModelVersion, job: PendingCompile) -> None:
        loop = asyncio.get_running_loop()
        try:
            runner, info = await loop.run_in_executor(self._compile_pool, self.loader.compile_upgrade, job)
        except Exception as exc:
            version.info.compiling = False
            version.info.reason = f"{job.choice.reason}; compile failed, serving eager: {exc}"
            log.warning("model %s version %s: %s", name, version.version, version.info.reason)
            return
        version.upgrade(runner, info)
        log.info("model %s version %s: upgraded to %s", name, version.version, info.backend)

    async def close(self, timeout: float = 10.0) -> None:
        """Shutdown: stop compiler children, retire every version and wait for their threads."""
        self.loader.close()
        for task in list(self._background):
            task.cancel()
        self._load_pool.shutdown(wait=False, cancel_futures=True)
        self._compile_pool.shutdown(wait=False, cancel_futures=True)
        loop = asyncio.get_running_loop()
        for entry in self._entries.values():
            for version in entry.versions.values():
                await loop.run_in_executor(None, version.stop, timeout)

    # --- queries ---------------------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        """Server readiness: the first pass is done and no model is still loading for the first time (with
        a budget loads happen on demand all the time: the first pass is enough)."""
        return self.started and (self.cache or all(e.state != LOADING for e in self._entries.values()))

    def names(self) -> list[str]:
        return sorted(self._entries)

    def entry(self, name: str) -> ModelEntry:
        check_model_name(name)
        entry = self._entries.get(name)
        if entry is None:
            raise ModelNotFound(f"model {name!r} is not in the repository")
        return entry

    def lookup(self, name: str, version: str | None = None) -> ModelVersion:
        """The version that serves a request for ``name`` (and ``version``, when given)."""
        entry = self.entry(name)
        number = None if version is None else parse_version(version)
        if number is None and entry.versions:
            return entry.versions[max(entry.versions)]
        if number in entry.versions:
            return entry.versions[number]
        if number in entry.failures:
            raise ModelNotReady(
                f"version {number} of model {name!r} failed to load: {entry.failures[number]}"
            )
        if not entry.versions:
            raise ModelNotReady(f"model {name!r} is not ready ({entry.state}): {entry.reason or 'loading'}")
        served = ", ".join(map(str, sorted(entry.versions))) or "none"
        raise ModelNotFound(f"model {name!r} has no version {number} (serving: {served})")

    def index(self) -> list[dict[str, Any]]:
        """Rows per model and version: the older ``state`` and ``reason``, KServe's ``modelStatus``, and
        with a budget the model's ``cache`` figures (resident bytes, hits, misses, loads, evictions)."""
        rows: list[dict[str, Any]] = []
        for name in sorted(self._entries):
            entry = self._entries[name]
            extra: dict[str, Any] = {"modelStatus": model_status(entry.phase(), entry.last_failure)}
            if self.cache:
                extra["cache"] = {"resident_bytes": entry.size_bytes, **self.counters.of(name)}
            for number, version in sorted(entry.versions.items()):
                rows.append(
                    {"name": name, "version": str(number), "state": READY, **version.info.as_dict(), **extra}
                )
            for number, why in sorted(entry.failures.items()):
                row = {"name": name, "version": str(number), "state": UNAVAILABLE, "reason": why}
                rows.append({**row, **extra})
            if not entry.versions and not entry.failures:
                rows.append({"name": name, "state": entry.state, "reason": entry.reason, **extra})
        return rows

    def active_states(self) -> list[tuple[str, str]]:
        """(model, KServe activeModelState) for /metrics."""
        return [(n, model_status(e.phase(), None)["states"]["activeModelState"]) for n, e in self._items()]

    def resident_bytes(self) -> list[tuple[str, int]]:
        return [(name, entry.size_bytes) for name, entry in self._items() if entry.versions]

    def _items(self) -> list[tuple[str, ModelEntry]]:
        return sorted(self._entries.items())
