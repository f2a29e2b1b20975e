"""Closed-form queueing results the simulator is checked against.

* Pooled M/M/c (Erlang C): the activator in the path with the autoscaler pinned holds one FIFO queue
  in front of c = pods × cc identical servers.
* M/M/c/K: one pod behind random routing with cc executing slots and 10·cc queue slots (K = 11·cc).
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class QueueFigures:
    p_wait: float  # probability that an admitted request waits before service
    mean_wait: float  # seconds, over admitted requests
    mean_response: float  # seconds, over admitted requests
    p_block: float = 0.0  # probability that a request is turned away (503)


def erlang_c(servers: int, arrival_rate: float, service_rate: float) -> QueueFigures:
    """M/M/c with an unbounded FIFO queue; needs arrival_rate < servers × service_rate."""
    load = arrival_rate / service_rate
    if load >= servers:
        raise ValueError(f"M/M/{servers} with offered load {load:g} is unstable")
    # Erlang B by its stable recurrence, then Erlang C from it.
    blocking = 1.0
    for k in range(1, servers + 1):
        blocking = load * blocking / (k + load * blocking)
    utilisation = load / servers
    p_wait = blocking / (1 - utilisation * (1 - blocking))
    mean_wait = p_wait / (servers * service_rate - arrival_rate)
    return QueueFigures(p_wait, mean_wait, mean_wait + 1 / service_rate)


def mmck(servers: int, capacity: int, arrival_rate: float, service_rate: float) -> QueueFigures:
    """M/M/c/K: c servers, at most K requests in the system (arrivals beyond K are blocked)."""
    if capacity < servers:
        raise ValueError(f"M/M/{servers}/{capacity}: capacity must be >= servers")
    weights = [1.0]
    for n in range(1, capacity + 1):
        weights.append(weights[-1] * arrival_rate / (min(n, servers) * service_rate))
    total = sum(weights)
    probs = [w / total for w in weights]
    p_block = probs[capacity]
    admitted = arrival_rate * (1 - p_block)
    in_system = sum(n * p for n, p in enumerate(probs))
    queued = sum((n - servers) * p for n, p in enumerate(probs) if n > servers)
    # An admitted arrival sees the system without itself (PASTA, restricted to states below K).
    p_wait = sum(p for n, p in enumerate(probs[:capacity]) if n >= servers) / (1 - p_block)
    return QueueFigures(p_wait, queued / admitted, in_system / admitted, p_block)


# Two-sided 95 % Student t quantiles by degrees of freedom.
_T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262,
         10: 2.228, 11: 2.201, 12: 2.179, 13: 2.160, 14: 2.145, 15: 2.131, 16: 2.120, 17: 2.110,
         18: 2.101, 19: 2.093, 20: 2.086, 25: 2.060, 30: 2.042}  # fmt: skip


def confidence_interval(values: list[float]) -> tuple[float, float]:
    """Mean and half-width of its 95 % confidence interval (independent replications)."""
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, math.inf
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    df = n - 1
    quantile = _T975[max(k for k in _T975 if k <= df)] if df <= 30 else 1.96
    return mean, quantile * sd / math.sqrt(n)
