"""Multi-model pods: a revision whose pods serve many models, loading them on demand within a budget.

A scenario's ``revision.models`` section says how many models there are, how popular each is (Zipf
with exponent ``zipf_s``, or uniform), their resident sizes (one for all, or one per model) and load
time, and the pod's budget
(``memory_budget`` bytes and/or ``max_models``). Every arrival picks its model by popularity; a pod
answers it at once when that model is resident (a hit) and otherwise loads it first (a miss), with the
predictor's rules, so a budget can be sized here before it is deployed:

* which models a load unloads (least recently used, never one with requests in flight) or whether it
  must wait for one to free is decided by ``predictor.model_cache.plan_load`` — the live predictor's
  own policy, not a copy;
* loads run one at a time per pod (the predictor has one load thread); concurrent requests for a model
  being loaded wait for that one load;
* a request waiting for a load holds its queue-proxy slot, as it does live, and counts as in flight on
  its model, so the model it waits for cannot be unloaded before it runs;
* a request whose deadline passes while it waits for a load times out when the load ends.
"""

from __future__ import annotations

import bisect
import itertools
import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from predictor.model_cache import Admit, Budget, Resident, Wait, parse_bytes, plan_load
from simulation.distributions import Constant, Distribution, Sampler, parse_distribution
from simulation.sample import Sample
from simulation.schema import Node

if TYPE_CHECKING:
    import simpy


class Request(Protocol):
    """What this module needs of a simulated request (simulation.pods.Request)."""

    model: int  # which model it asks for


POPULARITIES = ("zipf", "uniform")
_KEYS = ("count", "popularity", "zipf_s", "size", "load_time", "memory_budget", "max_models")
MAX_MODELS = 100_000


@dataclass(frozen=True)
class ModelsSpec:
    count: int
    popularity: str = "zipf"
    zipf_s: float = 1.0
    size: int | tuple[int, ...] = 0  # bytes: every model's, or each one's (model 0 the most popular)
    load_time: Distribution = field(default_factory=lambda: Constant(0.0))
    memory_budget: int | None = None
    max_models: int | None = None

    @property
    def budget(self) -> Budget:
        return Budget(self.memory_budget, self.max_models)

    def size_of(self, index: int) -> int:
        """Model ``index``'s resident bytes."""
        return self.size if isinstance(self.size, int) else self.size[index]

    def weights(self) -> np.ndarray:
        """Each model's share of the requests (model 0 the most popular)."""
        ranks = np.arange(1, self.count + 1, dtype=float)
        raw = ranks ** -(self.zipf_s if self.popularity == "zipf" else 0.0)
        return raw / raw.sum()


def parse_models(node: Node, base_dir: Path) -> ModelsSpec:
    node.only(_KEYS)
    count = node.integer("count", minimum=1)
    if count > MAX_MODELS:
        raise node.error("count", f"must be <= {MAX_MODELS:,}")
    popularity = node.choice("popularity", POPULARITIES, "zipf")
    if popularity != "zipf" and node.has("zipf_s"):
        raise node.error("zipf_s", "only used with popularity: zipf")
    size = _sizes(node, count)
    memory = _bytes(node, "memory_budget", None)
    if memory is not None and isinstance(size, int) and size > memory:
        raise node.error("memory_budget", f"smaller than one model (size {size:,} bytes): nothing could load")
    if memory is not None and isinstance(size, tuple) and max(size) > memory:
        index = size.index(max(size))
        raise node.error(
            "memory_budget",
            f"smaller than model {index} (size[{index}] = {size[index]:,} bytes): it could never load",
        )
    max_models = node.integer("max_models", None, minimum=1) if node.has("max_models") else None
    return ModelsSpec(
        count=count,
        popularity=popularity,
        zipf_s=node.number("zipf_s", 1.0, minimum=0) if popularity == "zipf" else 0.0,
        size=size,
        load_time=(
            parse_distribution(node.child("load_time"), base_dir) if node.has("load_time") else Constant(0.0)
        ),
        memory_budget=memory,
        max_models=max_models,
    )


def _sizes(node: Node, count: int) -> int | tuple[int, ...]:
    """``size``: bytes for every model, or a list of ``count`` sizes, one per model by popularity rank."""
    raw = node.raw("size", 0)
    if not isinstance(raw, list):
        return _bytes(node, "size", 0) or 0
    if len(raw) != count:
        raise node.error(
            "size", f"{len(raw):,} sizes for {count:,} models; give one per model, or one for all"
        )
    return tuple(_parse_bytes(node, "size", value, f"size[{i}]") for i, value in enumerate(raw))


def _bytes(node: Node, key: str, default: int | None) -> int | None:
    if not node.has(key):
        return default
    value = _parse_bytes(node, key, node.raw(key), key)
    if key == "memory_budget" and value == 0:
        raise node.error(key, "must be > 0 (leave it out: no memory budget)")
    return value


def _parse_bytes(node: Node, key: str, raw: Any, what: str) -> int:
    expected = "expected bytes such as 536870912, 512Mi or 2G"
    if isinstance(raw, bool) or not isinstance(raw, int | str):
        raise node.error(key, expected if what == key else f"{what}={raw!r}: {expected}")
    try:
        return parse_bytes(raw, what)
    except ValueError:
        raise node.error(key, expected if what == key else f"{what}={raw!r}: {expected}") from None


@dataclass
class ModelCounters:
    """Requests (after the warm-up) that found their model resident, or waited for its load."""

    hits: int = 0
    misses: int = 0
    loads: int = 0
    evictions: int = 0
    waits: Sample = field(default_factory=Sample)

    def report(self) -> dict[str, object]:
        total = self.hits + self.misses
        return {
            "requests": total,
            "hits": self.hits,
            "misses": self.misses,
            "hit_ratio": self.hits / total if total else None,
            "loads": self.loads,
            "evictions": self.evictions,
            "load_wait": {
                "mean": self.waits.mean(),
                "p50": self.waits.percentile(50),
                "p95": self.waits.percentile(95),
                "p99": self.waits.percentile(99),
            },
        }


class ModelsRun:
    """What all pods of one run share: the model picker, the load-time sampler and the counters."""

    def __init__(self, spec: ModelsSpec, picks: np.random.SeedSequence, loads: np.random.SeedSequence):
        self.spec = spec
        self.cumulative = list(itertools.accumulate(spec.weights().tolist()))
        self._random = random.Random(int(picks.generate_state(1)[0])).random
        self.load_time: Sampler = spec.load_time.sampler(np.random.default_rng(loads))
        self.counters = ModelCounters()

    def pick(self) -> int:
        return min(bisect.bisect_right(self.cumulative, self._random()), self.spec.count - 1)


@dataclass
class _Model:
    loaded: bool = False
    in_flight: int = 0  # requests running on it or waiting for its load
    last_used: float = 0.0


class PodModels:
    """One pod's resident models, between the queue-proxy and the service (see the module docstring)."""

    def __init__(
        self,
        run: ModelsRun,
        env: simpy.Environment,
        start: Callable[[Any, float], None],  # (a simulation.pods.Request, now)
        counts: Callable[[Any], bool],
    ) -> None:
        self._run = run
        self._env = env
        self._start = start  # the service's start
        self._counts = counts  # whether a request counts in the report (arrived after the warm-up)
        self._models: dict[int, _Model] = {}  # resident or reserved (loading or queued for the loader)
        self._waiting: dict[int, list[tuple[Request, float]]] = {}
        self._blocked: list[int] = []  # loads waiting for room
        self._loads: deque[int] = deque()  # reserved, waiting for the loader
        self._loading = False

    def begin(self, request: Request, now: float) -> None:
        """A request admitted by the queue-proxy: serve it now, or after its model loads."""
        index = request.model
        model = self._models.get(index)
        if model is not None and model.loaded:
            model.in_flight += 1
            model.last_used = now
            if self._counts(request):
                self._run.counters.hits += 1
            self._start(request, now)
            return
        if self._counts(request):
            self._run.counters.misses += 1
        self._waiting.setdefault(index, []).append((request, now))
        if model is not None:
            model.in_flight += 1
        elif index not in self._blocked:
            self._reserve(index, now)

    def finished(self, request: Request, now: float) -> None:
        """A request that ran on its model left the pod (answered or timed out)."""
        model = self._models.get(request.model)
        if model is None:
            return
        model.in_flight -= 1
        model.last_used = now
        if model.in_flight == 0 and self._blocked:
            for index in list(self._blocked):
                self._blocked.remove(index)
                self._reserve(index, now)

    def _reserve(self, index: int, now: float) -> None:
        spec = self._run.spec
        residents = {
            str(i): Resident(spec.size_of(i), m.last_used, m.in_flight + (0 if m.loaded else 1))
            for i, m in self._models.items()
        }
        plan = plan_load(residents, str(index), spec.size_of(index), spec.budget)
        if isinstance(plan, Wait):
            self._blocked.append(index)
            return
        assert isinstance(plan, Admit)  # a model bigger than the budget is refused when the scenario is read
        for victim in plan.evict:
            del self._models[int(victim)]
            self._run.counters.evictions += 1
        self._models[index] = _Model(in_flight=len(self._waiting.get(index, ())), last_used=now)
        self._loads.append(index)
        self._next_load()

    def _next_load(self) -> None:
        if self._loading or not self._loads:
            return
        self._loading = True
        index = self._loads.popleft()
        self._run.counters.loads += 1
        event = self._env.timeout(self._run.load_time())
        event.callbacks.append(lambda _event: self._loaded(index))

    def _loaded(self, index: int) -> None:
        now = self._env.now
        self._loading = False
        model = self._models[index]
        model.loaded = True
        model.last_used = now
        for request, since in self._waiting.pop(index, ()):
            if self._counts(request):
                self._run.counters.waits.append(now - since)
            self._start(request, now)
        self._next_load()
