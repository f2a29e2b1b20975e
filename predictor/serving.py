"""A served model version: its runner, the worker threads that call it, its batcher and its counters.

Inference runs on the version's own thread pool (``instance_group`` count threads; torch releases the
GIL while it computes) so the event loop keeps answering health checks and other models. A version that
has been swapped out is *retired*: it stops being found, finishes the requests it already holds, and
only then lets go of its threads.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np

from predictor.batch_planner import BatchPolicy
from predictor.batcher import DynamicBatcher
from predictor.config import ModelConfig
from predictor.repository import VersionSource
from predictor.runners import Runner, run_model
from predictor.signature import BoundInputs
from predictor.workers import Workers

T = TypeVar("T")
RECENT_CALLS = 1024  # model calls kept for the latency percentiles in /stats
INLINE_BUDGET_S = 0.005  # a call expected to take this long at most may run on the event loop thread


@dataclass
class VersionStats:
    request_count: int = 0
    failure_count: int = 0
    execution_count: int = 0
    batch_sizes: Counter = field(default_factory=Counter)  # examples per model call -> calls
    compute_seconds: float = 0.0
    recent: deque = field(default_factory=lambda: deque(maxlen=RECENT_CALLS), repr=False)  # seconds per call
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def record(self, requests: int, batch_size: int | None, seconds: float) -> None:
        """Count one model call from a worker thread; ``batch_size`` None means it failed."""
        with self._lock:
            self.compute_seconds += seconds
            if batch_size is None:
                self.failure_count += requests
                return
            self.execution_count += 1
            self.request_count += requests
            self.batch_sizes[batch_size] += 1
            self.recent.append(seconds)

    def as_dict(self) -> dict[str, Any]:
        with self._lock:
            recent = sorted(self.recent)
        doc: dict[str, Any] = {
            "request_count": self.request_count,
            "failure_count": self.failure_count,
            "execution_count": self.execution_count,
            "batch_sizes": {str(size): count for size, count in sorted(self.batch_sizes.items())},
            "compute_seconds": round(self.compute_seconds, 6),
        }
        if recent:  # model time per call (convert, run, convert back), over the latest calls
            doc["recent_compute_ms"] = {
                "calls": len(recent),
                "p50": round(recent[len(recent) // 2] * 1e3, 4),
                "p99": round(recent[min(len(recent) - 1, len(recent) * 99 // 100)] * 1e3, 4),
            }
        return doc


@dataclass
class BackendInfo:
    backend: str  # what actually runs: eager, inductor or zentorch
    reason: str
    load_seconds: float
    cache: str = "none"  # none | hit | miss (compiled now)
    compiling: bool = False  # an auto model serving eager while its compiled package is built
    record: Mapping[str, Any] | None = None  # the compile record of a package
    resident_bytes: int = 0  # what the loaded model holds in memory (runners.resident_bytes)

    def as_dict(self) -> dict[str, Any]:
        doc = {
            "backend": self.backend,
            "backend_reason": self.reason,
            "load_seconds": round(self.load_seconds, 3),
            "compile_cache": self.cache,
            "compiling": self.compiling,
            "resident_bytes": self.resident_bytes,
        }
        if self.record:
            doc["compile_seconds"] = self.record.get("compile_seconds")
            doc["zentorch_kernels"] = self.record.get("zentorch_kernels")
        return doc


class ModelVersion:
    def __init__(self, config: ModelConfig, source: VersionSource, runner: Runner, info: BackendInfo):
        self.config = config
        self.source = source  # reused as is while its model file does not change
        self.version = source.version
        self.runner = runner
        self.info = info
        self.stats = VersionStats()
        self.workers = Workers(config.instance_count, f"{config.name}-v{self.version}")
        self.batcher: DynamicBatcher | None = None
        if config.dynamic_batching is not None:
            policy = BatchPolicy(
                config.max_batch_size,
                config.dynamic_batching.max_queue_delay_s,
                config.dynamic_batching.preferred_batch_sizes,
            )
            self.batcher = DynamicBatcher(policy, self.execute, self.workers.submit, config.instance_count)
        self._seconds_per_example: float | None = None  # of the latest successful call
        self._in_flight = 0
        self._retired = False
        self._closed = False

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def platform(self) -> str:
        model_file = self.source.model_file
        return (
            "pytorch_export"
            if model_file is not None and model_file.suffix == ".pt2"
            else "pytorch_torchscript"
        )

    def execute(self, arrays: list[np.ndarray], requests: int = 1) -> list[np.ndarray]:
        """Worker thread: one counted model call. The runner is read once: an upgrade never splits a call."""
        runner = self.runner
        started = time.perf_counter()
        try:
            outputs = run_model(runner, self.config, arrays)
        except Exception:
            self.stats.record(requests, None, time.perf_counter() - started)
            raise
        seconds = time.perf_counter() - started
        batch_size = len(arrays[0]) if self.config.batched else 1
        self.stats.record(requests, batch_size, seconds)
        self._seconds_per_example = seconds / max(batch_size, 1)
        return [self._present(array, spec_index) for spec_index, array in enumerate(outputs)]

    def _present(self, array: np.ndarray, index: int) -> np.ndarray:
        spec = self.config.outputs[index]
        if spec.reshape is None:
            return array
        return array.reshape((len(array), *spec.dims) if self.config.batched else spec.dims)

    def fits_inline(self, batch_size: int) -> bool:
        """Whether a call of ``batch_size`` examples is short enough to run on the event loop thread:
        judged by the latest call, so a model that has never run (or ran slowly) goes to its workers."""
        per_example = self._seconds_per_example
        return per_example is not None and per_example * max(batch_size, 1) <= INLINE_BUDGET_S

    async def infer(self, inputs: BoundInputs) -> list[np.ndarray]:
        """Run one request, through the dynamic batcher when the model has one."""
        if self.batcher is not None:
            return await self.batcher.submit(inputs)
        return await self.call(self.execute, inputs.arrays)

    def call(self, function: Callable[..., T], *args: Any) -> asyncio.Future[T]:
        """Run ``function`` on this version's worker threads."""
        return self.workers.submit(function, *args)

    def upgrade(self, runner: Runner, info: BackendInfo) -> None:
        """Swap in a faster runner (a compiled package) for the same model file; calls in progress finish."""
        self.runner = runner
        self.info = info

    @contextmanager
    def in_use(self) -> Iterator[ModelVersion]:
        self._in_flight += 1
        try:
            yield self
        finally:
            self._in_flight -= 1
            if self._retired and self._in_flight == 0:
                self._close()

    def retire(self) -> None:
        self._retired = True
        if self._in_flight == 0:
            self._close()

    def _close(self) -> None:
        if not self._closed:
            self._closed = True
            self.workers.shutdown()

    def stop(self, timeout: float) -> None:
        """Server shutdown (blocking): no new work; wait for the worker threads to finish what they hold."""
        self._retired = True
        self._close()
        self.workers.join(timeout)
