"""A user container whose timing follows a scenario: for running a simulated scenario live.

It waits a ``--startup`` draw before it listens (the model load a real predictor does), then answers
each request after a ``--service`` draw — both distributions in the scenario's own JSON form, e.g.
``'{"dist": "exponential", "mean": 0.1}'``. Requests are served side by side (the ``parallel``
service model): it sleeps, it does not burn CPU. It is the kpa sample app with a drawn delay per request.

    python -m simulation.synthetic_app --service JSON [--startup JSON] [--port N]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import time
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np

from kpa.sample_app import _Counters, _HttpConnection
from simulation.distributions import parse_distribution
from simulation.schema import Node


class _DrawnDelay(_HttpConnection):
    """The sample app's connection with a fresh service-time draw before each request is served."""

    def __init__(self, counters: _Counters, sample: Callable[[], float], name: str) -> None:
        super().__init__(counters, 0.0, name)
        self._sample = sample

    def on_message_complete(self) -> None:
        # Requests on one connection are sequential, so the delay is read before the next one arrives.
        self.delay = self._sample()
        super().on_message_complete()


def sampler(spec: str, what: str, rng: np.random.Generator) -> Callable[[], float]:
    return parse_distribution(Node.of(json.loads(spec), what), Path(".")).sampler(rng)


async def serve(port: int, service: Callable[[], float], name: str) -> None:
    loop = asyncio.get_running_loop()
    counters = _Counters()
    server = await loop.create_server(
        lambda: _DrawnDelay(counters, service, name), "127.0.0.1", port, backlog=1024
    )
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m simulation.synthetic_app", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8080")))
    parser.add_argument("--service", required=True, help="service-time distribution (scenario JSON form)")
    parser.add_argument("--startup", default='{"dist": "constant", "value": 0}', help="start-up distribution")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    name = os.environ.get("SERVING_POD", f"synthetic:{args.port}")
    # Each pod draws its own numbers: the seed is mixed with the pod's name.
    rng = np.random.default_rng([args.seed, zlib.crc32(name.encode())])
    service = sampler(args.service, "service_time", rng)
    time.sleep(sampler(args.startup, "cold_start", rng)())
    asyncio.run(serve(args.port, service, name))


if __name__ == "__main__":
    main()
