"""Which models to unload so that another one fits: the LRU policy of a multi-model pod, pure.

A pod serving many models keeps only some of them resident, within a memory budget (bytes) and/or a
number of models. When a model must load, :func:`plan_load` says which resident models to unload —
the least recently used first — or that the load must wait (the room exists, but models holding it have
requests in flight, and those are never unloaded), or that it can never fit (bigger than the budget).

The predictor's model manager (``predictor.manager``) and the simulator's multi-model pods
(``simulation.models``) both decide with this one function, so a simulated budget behaves as the live
one does. No clock and no I/O here: last-use times come in with the residents.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

_UNITS = {
    "": 1, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12,
    "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40,
}  # fmt: skip
_QUANTITY = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(Ki|Mi|Gi|Ti|k|M|G|T|)\s*")


@dataclass(frozen=True)
class Resident:
    """A model that holds memory now: loaded, or loading (its size then is the estimate reserved)."""

    size: int  # bytes
    last_used: float  # when a request last used it (any clock, as long as all residents share it)
    in_flight: int = 0  # requests holding it, plus one while it loads: it cannot be unloaded meanwhile


@dataclass(frozen=True)
class Budget:
    """What a pod may hold at once; None means no limit of that kind."""

    memory_bytes: int | None = None
    max_models: int | None = None

    @property
    def limited(self) -> bool:
        return self.memory_bytes is not None or self.max_models is not None

    def describe(self) -> str:
        parts = []
        if self.memory_bytes is not None:
            parts.append(f"--memory-budget {self.memory_bytes:,} bytes")
        if self.max_models is not None:
            parts.append(f"--max-models {self.max_models}")
        return " and ".join(parts) or "no budget"


@dataclass(frozen=True)
class Admit:
    """The load may start once ``evict`` (least recently used first; maybe none) are unloaded."""

    evict: tuple[str, ...] = ()


@dataclass(frozen=True)
class Wait:
    """Not now: only models with requests in flight (or loading) stand in the way; retry when one frees."""

    reason: str


@dataclass(frozen=True)
class Refuse:
    """Never: the model alone is bigger than the whole budget."""

    reason: str


Plan = Admit | Wait | Refuse


def plan_load(residents: Mapping[str, Resident], name: str, size: int, budget: Budget) -> Plan:
    """How to make room for ``name`` needing ``size`` bytes.

    ``name`` itself, if among ``residents`` (a reload, or a size corrected after measuring), is not
    counted: its new size replaces its old one. Idle models are unloaded in least-recently-used order
    (ties by name, so the choice is deterministic) until both limits hold.
    """
    if budget.memory_bytes is not None and size > budget.memory_bytes:
        return Refuse(
            f"model {name!r} needs {size:,} bytes, more than the whole {budget.describe()}; "
            "raise the budget or declare a smaller size (config.pbtxt parameter size_bytes)"
        )
    others = {other: r for other, r in residents.items() if other != name}
    used = sum(r.size for r in others.values())
    count = len(others)
    idle = sorted((r.last_used, other) for other, r in others.items() if r.in_flight == 0)
    evict: list[str] = []
    for _, other in idle:
        if _fits(used, count, size, budget):
            break
        evict.append(other)
        used -= others[other].size
        count -= 1
    if _fits(used, count, size, budget):
        return Admit(tuple(evict))
    busy = sorted(other for other, r in others.items() if r.in_flight > 0)
    return Wait(
        f"model {name!r} ({size:,} bytes) does not fit in {budget.describe()} until a model in use "
        f"is free (requests in flight or loading: {', '.join(busy)})"
    )


def _fits(used: int, count: int, size: int, budget: Budget) -> bool:
    memory_ok = budget.memory_bytes is None or used + size <= budget.memory_bytes
    return memory_ok and (budget.max_models is None or count + 1 <= budget.max_models)


def parse_bytes(text: str | int, what: str = "size") -> int:
    """Bytes from ``536870912``, ``512Mi``, ``2G`` or ``1.5Gi`` (Kubernetes quantity suffixes)."""
    if isinstance(text, int) and not isinstance(text, bool):
        if text < 0:
            raise ValueError(f"{what} {text}: must not be negative")
        return text
    match = _QUANTITY.fullmatch(str(text))
    if match is None:
        raise ValueError(
            f"{what} {text!r}: expected bytes such as 536870912, 512Mi or 2G "
            "(suffixes Ki, Mi, Gi, Ti, k, M, G, T)"
        )
    return int(float(match.group(1)) * _UNITS[match.group(2)])
