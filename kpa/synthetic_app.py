"""A user container whose timing follows a scenario: for running a simulated scenario live.

It becomes ready a ``--startup`` draw after its process was created (the model load a real predictor
does), then answers each request after a ``--service`` draw — both distributions in the scenario's
own JSON form, e.g. ``'{"dist": "exponential", "mean": 0.1}'``. Requests are served side by side (the
``parallel`` service model): it sleeps, it does not burn CPU. It is the kpa sample app with a drawn
delay per request.

The start-up draw counts from process creation, as the simulator counts a pod's start-up from the
pod's creation: the interpreter's own start and imports (slower when many pods start at once on a
small machine) are part of the draw, not added to it. Only when they take longer than the draw is
the pod late, and then by exactly that much.

    python -m kpa.synthetic_app --service JSON [--startup JSON] [--port N] [--seed N]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
import zlib
from pathlib import Path

import numpy as np

from kpa.sample_app import serve
from simulation.distributions import Sampler, parse_distribution
from simulation.schema import Node, ScenarioError

EXAMPLE = '{"dist": "exponential", "mean": 0.1}'


def sampler(spec: str, what: str, rng: np.random.Generator) -> Sampler:
    """A distribution given as scenario JSON (``what`` names it in errors), drawing from ``rng``."""
    return parse_distribution(Node.of(json.loads(spec), what), Path(".")).sampler(rng)


def process_age() -> float:
    """Seconds since this process was created; 0 where the kernel does not say (non-Linux)."""
    try:
        # Field 22 of /proc/self/stat: starttime, in clock ticks after boot (field 2 may hold spaces).
        ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        uptime = float(Path("/proc/uptime").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 0.0
    return max(0.0, uptime - ticks / os.sysconf("SC_CLK_TCK"))


def _option_sampler(
    parser: argparse.ArgumentParser, option: str, spec: str, what: str, rng: np.random.Generator
) -> Sampler:
    try:
        return sampler(spec, what, rng)
    except (ValueError, ScenarioError) as exc:  # json.JSONDecodeError is a ValueError
        parser.error(f"{option} {spec!r}: {exc}; expected e.g. {EXAMPLE!r}")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m kpa.synthetic_app", description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8080")))
    parser.add_argument("--service", required=True, help="service-time distribution (scenario JSON form)")
    parser.add_argument("--startup", default='{"dist": "constant", "value": 0}', help="start-up distribution")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    name = os.environ.get("SERVING_POD", f"synthetic:{args.port}")
    # Each pod draws its own numbers: the seed is mixed with the pod's name.
    rng = np.random.default_rng([args.seed, zlib.crc32(name.encode())])
    service = _option_sampler(parser, "--service", args.service, "service_time", rng)
    startup = _option_sampler(parser, "--startup", args.startup, "cold_start", rng)
    time.sleep(max(0.0, startup() - process_age()))
    asyncio.run(serve(args.port, service, name))


if __name__ == "__main__":
    main()
