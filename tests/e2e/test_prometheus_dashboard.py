"""The Grafana dashboard proven against the real thing: Debian's Prometheus scrapes a running
`kpa up` through the file_sd file it writes, while load of several shapes runs (cold starts, a
steady rate, a burst that overflows the activator's queue, requests that time out), and every
PromQL expression of the dashboard must then return data through Prometheus' HTTP API.

Skipped, saying so, only where no prometheus binary can be had (`make tools` installs Debian's).
"""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from waiting import wait_until_blocking

from kpa.dashboard import load_dashboard
from kpa.dashboard_png import draw, evaluate
from kpa.prometheus_api import active_targets
from kpa.prometheus_server import PrometheusServer

pytestmark = pytest.mark.skipif(
    shutil.which("prometheus") is None,
    reason="Debian's prometheus is not installed: `make tools` installs it with apt-get (needs root)",
)

STACK = """\
config:
  stable-window: 6s
  scale-to-zero-grace-period: 1s
  panic-window-percentage: "50"
  allow-zero-initial-scale: "true"
revisions:
  - name: web                         # always behind the activator; starts at zero
    command: python -m kpa.sample_app --delay 0.05
    containerConcurrency: 2
    activatorQueueBound: 8            # a burst of 60 overflows it: the activator answers 503
    timeoutSeconds: 30
    annotations:
      autoscaling.knative.dev/target-burst-capacity: "-1"
      autoscaling.knative.dev/initial-scale: "0"
      autoscaling.knative.dev/max-scale: "4"
  - name: slow                        # straight to its pod; answers after 3 s, the timeout is 1 s: 504
    command: python -m kpa.sample_app --delay 3
    containerConcurrency: 4
    timeoutSeconds: 1
    annotations:
      autoscaling.knative.dev/target-burst-capacity: "0"
      autoscaling.knative.dev/min-scale: "1"
"""


def _status(admin: str) -> dict:
    return httpx.get(admin + "/status", timeout=5).json()


def _pods(admin: str, revision: str) -> int:
    return next(r["pods"] for r in _status(admin)["revisions"] if r["name"] == revision)


async def _send(entry: str, host: str, count: int, concurrency: int, rate: float = 0.0) -> list[int]:
    """``count`` GETs with at most ``concurrency`` in flight, started ``rate`` per second (0: at once)."""
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=40.0, limits=limits) as client:
        gate = asyncio.Semaphore(concurrency)

        async def one(i: int) -> int:
            if rate:
                await asyncio.sleep(i / rate)
            async with gate:
                return (await client.get(entry + "/", headers={"Host": host})).status_code

        return list(await asyncio.gather(*(one(i) for i in range(count))))


def _targets_of(prom_url: str, revision: str) -> list[dict]:
    return [
        t for t in active_targets(prom_url)
        if t["labels"].get("job") == "queue-proxy" and t["labels"].get("revision") == revision
    ]  # fmt: skip


def test_every_dashboard_query_returns_data_from_prometheus_scraping_kpa_up(tmp_path: Path):
    (tmp_path / "stack.yaml").write_text(STACK)
    ready_file = tmp_path / "ready.json"
    with (tmp_path / "up.log").open("wb") as log:
        up = subprocess.Popen(
            [sys.executable, "-m", "kpa", "up", str(tmp_path / "stack.yaml"), "--port", "0",
             "--admin-port", "0", "--no-live", "--log-dir", str(tmp_path / "pods"),
             "--ready-file", str(ready_file)],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:
        wait_until_blocking(ready_file.exists, 30, "kpa up wrote its ready file", interval=0.1)
        time.sleep(0.2)
        ready = json.loads(ready_file.read_text())
        entry, admin = ready["entry"], ready["admin"]
        assert ready["prometheus_targets"] == str(tmp_path / "pods" / "prometheus-targets.json")
        with PrometheusServer(Path(ready["prometheus_targets"])) as prom:
            started = time.time()
            slow_scraped = lambda: len(_targets_of(prom.url, "slow")) == 1  # noqa: E731
            wait_until_blocking(slow_scraped, 30, "the slow pod is a target", interval=0.5)
            time.sleep(3)  # a few scrapes of the idle stack: every series starts before the load
            codes: list[int] = []
            codes += asyncio.run(_send(entry, "web", 1, 1))  # cold start 1
            codes += asyncio.run(_send(entry, "slow", 4, 4))  # 504s from the queue-proxy
            codes += asyncio.run(_send(entry, "web", 300, 16, rate=25.0))  # 12 s steady
            assert _targets_of(prom.url, "web"), "web's pods became targets while they ran"
            codes += asyncio.run(_send(entry, "web", 60, 60))  # a burst over the activator's queue
            wait_until_blocking(lambda: _pods(admin, "web") == 0, 60, "web scaled back to zero", interval=0.5)
            # Prometheus follows the file: the pods that went away are no longer scraped.
            web_gone = lambda: not _targets_of(prom.url, "web")  # noqa: E731
            wait_until_blocking(web_gone, 20, "web's targets dropped", interval=0.5)
            codes += asyncio.run(_send(entry, "web", 1, 1))  # cold start 2
            time.sleep(5)  # scrapes after the last request
            assert {200, 503, 504} <= set(codes), sorted(set(codes))
            assert set(codes) <= {200, 503, 504}, sorted(set(codes))
            for target in active_targets(prom.url):  # "unknown": a pod so new it was not scraped yet
                assert target["health"] in ("up", "unknown"), (target["scrapeUrl"], target["lastError"])

            dashboard = load_dashboard()
            answers = evaluate(prom.url, dashboard, started, time.time())
            draw(dashboard, answers, started, tmp_path / "dashboard.png")
            assert (tmp_path / "dashboard.png").stat().st_size > 10_000
            empty = [f"[{a.panel.title}] {a.expr}" for a in answers if not a.has_data]
            assert not empty, "queries without data:\n" + "\n".join(empty)
            assert len(answers) == sum(len(p.queries) for p in dashboard.panels)
    finally:
        if up.poll() is None:
            up.send_signal(signal.SIGINT)
            try:
                up.wait(30)
            except subprocess.TimeoutExpired:
                up.kill()
                up.wait()
    assert json.loads((tmp_path / "pods" / "prometheus-targets.json").read_text()) == []  # emptied at stop
