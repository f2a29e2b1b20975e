"""Prometheus' HTTP API (``/api/v1/query_range``, ``/api/v1/targets``): what the dashboard PNG and
its test ask a running Prometheus."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import httpx


class PrometheusQueryError(RuntimeError):
    """Prometheus refused a query or could not be reached; the message names the query."""


@dataclass(frozen=True, slots=True)
class Series:
    labels: dict[str, str]
    times: list[float]
    values: list[float]

    def finite(self) -> list[float]:
        return [v for v in self.values if math.isfinite(v)]


def _get(url: str, path: str, params: dict[str, Any], what: str) -> Any:
    try:
        answer = httpx.get(f"{url}{path}", params=params, timeout=30.0)
        doc = answer.json()
    except (httpx.HTTPError, ValueError) as exc:
        raise PrometheusQueryError(f"{what}: Prometheus at {url} did not answer ({exc})") from None
    if doc.get("status") != "success":
        raise PrometheusQueryError(f"{what}: {doc.get('errorType', answer.status_code)}: {doc.get('error')}")
    return doc["data"]


def query_range(url: str, expr: str, start: float, end: float, step: float) -> list[Series]:
    data = _get(url, "/api/v1/query_range", {"query": expr, "start": start, "end": end, "step": step}, expr)
    return [
        Series(
            dict(result["metric"]),
            [float(t) for t, _ in result["values"]],
            [float(v) for _, v in result["values"]],
        )
        for result in data["result"]
    ]


def active_targets(url: str) -> list[dict[str, Any]]:
    """The targets Prometheus scrapes now: labels, health, last error."""
    return list(_get(url, "/api/v1/targets", {"state": "active"}, "targets")["activeTargets"])
