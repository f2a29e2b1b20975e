"""Request conservation harness: every request sent to a real `kpa up` gets exactly one complete answer.

The invariant (docs/design.md): each request that reaches the stack is answered once, completely, with
the upstream's answer or a documented error (502 pod failure, 503 queue full or removed, 504 timeout;
docs/wire-contracts.md), within the revision timeout plus a margin — through proxy and serve mode, mode
flips, scale changes and SIGKILLed pods. The harness counts instead of trusting; its parts:

* ``conservation_tally``: ``Tally`` (requests sent, answers by status) and ``Lost`` requests;
* ``conservation_wire``: one exchange on a stream, framed exactly (``read_answer``, ``get_json``);
* ``conservation_clients``: ``RawClients``, N keep-alive connections driven in phases (``Phase``);
* ``conservation_hey``: the same count from an off-the-shelf generator (``run_hey``);
* ``conservation_stack``: ``KpaUp``, `kpa up` as its own process, its pods found and SIGKILLed;
* ``conservation_run``: ``run_pattern``, a stack driven through phases with ``/status`` sampled;
* this module: the named patterns (``patterns()``, ``run_named``), and the harness's API re-exported,
  so callers import it from one place.

The short form runs in tests/e2e/test_conservation.py, the long form in benchmarks/bench_conservation.py,
the hour-long soak in benchmarks/bench_soak.py.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import yaml
from conservation_clients import Phase, PhaseTimeout, RawClients
from conservation_hey import hey_command, hey_percentiles, parse_hey, run_hey
from conservation_run import PatternResult, run_pattern, wait_for
from conservation_stack import KpaUp, PodProcesses, Status, Usage, kill_action, usage
from conservation_tally import DOCUMENTED_ERRORS, Lost, Tally
from conservation_wire import Answer, Unanswered, buffered, get_json, read_answer

__all__ = [
    "DOCUMENTED_ERRORS",
    "HEY_RATE_GUESS",
    "HTTP_SERVER",
    "MARGIN",
    "TIMEOUT_SECONDS",
    "Answer",
    "KpaUp",
    "Lost",
    "Pattern",
    "PatternResult",
    "Phase",
    "PhaseTimeout",
    "PodProcesses",
    "RawClients",
    "Status",
    "Tally",
    "Unanswered",
    "Usage",
    "buffered",
    "get_json",
    "hey_command",
    "hey_percentiles",
    "kill_action",
    "parse_hey",
    "patterns",
    "read_answer",
    "run_hey",
    "run_named",
    "run_pattern",
    "sample_app",
    "stack_yaml",
    "usage",
    "wait_for",
]

MARGIN = 5.0
"""Seconds past the revision timeout a request may take before it counts as lost."""

TIMEOUT_SECONDS = 10
"""The patterns' revision timeout: a lost request is declared after TIMEOUT_SECONDS + MARGIN."""

HTTP_SERVER = ["sh", "-c", "exec python3 -m http.server $PORT --bind 127.0.0.1"]


def sample_app(delay: float) -> list[str]:
    return ["python", "-m", "kpa.sample_app", "--delay", str(delay)]


def stack_yaml(
    name: str, command: list[str], cc: int, annotations: dict[str, str], config: dict[str, str] | None = None
) -> str:
    """A one-revision stack file with short windows (6 s stable, 3 s panic, 1 s grace) so scale changes
    happen within seconds, and the patterns' revision timeout."""
    doc = {
        "config": {"stable-window": "6s", "scale-to-zero-grace-period": "1s", "panic-window-percentage": "50"}
        | (config or {}),
        "revisions": [
            {
                "name": name,
                "command": command,
                "containerConcurrency": cc,
                "timeoutSeconds": TIMEOUT_SECONDS,
                "annotations": {f"autoscaling.knative.dev/{k}": v for k, v in annotations.items()},
            }
        ],
    }
    return yaml.safe_dump(doc, sort_keys=False)


@dataclass(frozen=True)
class Pattern:
    """A named way of loading `kpa up`: its stack, the state to wait for before the load, the phases at
    a duration ``scale`` (1 = the test's short form), and ``check``: what must have been seen for the
    pattern to have really happened (a list of problems, empty when it did)."""

    name: str
    what: str
    stack: str
    ready: Callable[[Status], bool]
    ready_what: str
    phases: Callable[[float], list[Phase]]
    check: Callable[[PatternResult], list[str]]
    client: str = "raw"  # or "hey": one constant phase sent by hey -n
    host: str = "web"


def _ready_at_least(pods: int) -> Callable[[Status], bool]:
    return lambda row: row["ready_pods"] >= pods


def _expect(condition: bool, problem: str) -> list[str]:
    return [] if condition else [problem]


def _modes(result: PatternResult, expected: set[str]) -> list[str]:
    return _expect(
        expected <= result.modes(), f"modes seen {sorted(result.modes())}, expected {sorted(expected)}"
    )


def _kills(result: PatternResult, count: int) -> list[str]:
    kills = [e for e in result.events if "SIGKILL" in e]
    return _expect(len(kills) == count, f"{len(kills)} kills done, expected {count}: {result.events}")


def _scaled_up_and_down(result: PatternResult) -> list[str]:
    ready = result.ready_pods()
    peak = max(ready, default=0)
    after_peak = ready[ready.index(peak) :] if ready else []
    return _expect(peak >= 3, f"never scaled up: ready pods {ready}") + _expect(
        min(after_peak, default=peak) < peak, f"never scaled down under load: ready pods {ready}"
    )


def _to_zero_and_back(result: PatternResult) -> list[str]:
    ready = result.ready_pods()
    zero = ready.index(0) if 0 in ready else None
    return _expect(zero is not None, f"never at zero pods: {ready}") + _expect(
        zero is not None and max(ready[zero:], default=0) >= 1, f"never back from zero: {ready}"
    )


def _served(result: PatternResult, key: str) -> list[str]:
    return _expect(result.served().get(key, 0) > 0, f"no request served {key}: {result.served()}")


def patterns() -> list[Pattern]:
    """Every pattern the conservation test and benchmark run."""
    at_zero = {"initial-scale": "0", "min-scale": "0", "max-scale": "4", "target": "1"}
    two = {"min-scale": "2", "max-scale": "2"}
    return [
        Pattern(
            "proxy",
            "issue 11 item 1: http.server, cc 4, min-scale 2, max-scale 4, activator in the path, 16 clients",
            stack_yaml("web", HTTP_SERVER, 4, {"min-scale": "2", "max-scale": "4"}),
            _ready_at_least(2),
            "2 ready pods",
            lambda s: [Phase(16, 4 * s)],
            lambda r: _modes(r, {"proxy"}) + _served(r, "via_activator"),
        ),
        Pattern(
            "proxy-hey",
            "the same stack and 16 connections, counted by hey",
            stack_yaml("web", HTTP_SERVER, 4, {"min-scale": "2", "max-scale": "4"}),
            _ready_at_least(2),
            "2 ready pods",
            lambda s: [Phase(16, 4 * s)],
            lambda r: _served(r, "via_activator"),
            client="hey",
        ),
        Pattern(
            "zero-and-back",
            "cc 1, target 1, starts at zero: held, scaled from zero, idle to zero, back from zero",
            stack_yaml("web", sample_app(0.02), 1, at_zero, {"allow-zero-initial-scale": "true"}),
            lambda row: row["pods"] == 0,
            "zero pods",
            lambda s: [
                Phase(8, 3 * s),
                Phase(0, 25, until=lambda row: row["pods"] == 0, until_what="scaled to zero"),
                Phase(8, 3 * s),
            ],
            lambda r: _to_zero_and_back(r) + _modes(r, {"proxy"}),
        ),
        Pattern(
            "serve",
            "min-scale 2, target-burst-capacity 0: straight to the queue-proxies, 16 clients",
            stack_yaml("web", HTTP_SERVER, 4, two | {"target-burst-capacity": "0"}),
            lambda row: row["ready_pods"] >= 2 and row["mode"] == "serve",
            "2 ready pods in serve mode",
            lambda s: [Phase(16, 4 * s)],
            lambda r: _modes(r, {"serve"}) + _served(r, "direct"),
        ),
        Pattern(
            "mode-flip",
            "2 pods of cc 4, burst capacity 4: 2 → 10 → 2 clients of 50 ms work cross EBC = 0 both ways",
            stack_yaml("web", sample_app(0.05), 4, two | {"target-burst-capacity": "4"}),
            lambda row: row["ready_pods"] >= 2 and row["mode"] == "serve",
            "2 ready pods in serve mode",
            lambda s: [
                Phase(2, 2 * s),
                Phase(10, 30, until=lambda row: row["mode"] == "proxy", until_what="flipped to proxy"),
                Phase(10, 2 * s),
                Phase(2, 30, until=lambda row: row["mode"] == "serve", until_what="flipped to serve"),
                Phase(2, 1 * s),
            ],
            lambda r: _served(r, "direct") + _served(r, "via_activator"),
        ),
        Pattern(
            "scale-up-down",
            "cc 2, target 1, serve mode: 1 → 8 → 1 clients of 50 ms work; pods drained while load goes on",
            stack_yaml(
                "web",
                sample_app(0.05),
                2,
                {"target": "1", "min-scale": "1", "max-scale": "6", "target-burst-capacity": "0"},
                {"panic-threshold-percentage": "1000"},
            ),
            _ready_at_least(1),
            "1 ready pod",
            lambda s: [
                Phase(1, 1 * s),
                Phase(8, 30, until=lambda row: row["ready_pods"] >= 3, until_what="scaled to 3+ pods"),
                Phase(8, 2 * s),
                Phase(1, 30, until=lambda row: row["ready_pods"] <= 2, until_what="scaled down to 2 pods"),
                Phase(1, 1 * s),
            ],
            _scaled_up_and_down,
        ),
        Pattern(
            "kill-proxy-mode",
            "2 pods, activator in the path, 16 clients: SIGKILL one pod's user container, then a queue-proxy",
            stack_yaml("web", sample_app(0.005), 4, two),
            _ready_at_least(2),
            "2 ready pods",
            lambda s: [
                Phase(16, 1.5 * s),
                Phase(16, 2 * s, action=kill_action("user")),
                Phase(16, 2 * s, action=kill_action("queue-proxy")),
            ],
            lambda r: _kills(r, 2) + _modes(r, {"proxy"}),
        ),
        Pattern(
            "kill-serve-mode",
            "2 pods, serve mode, 16 clients: SIGKILL one pod's user container, then a queue-proxy",
            stack_yaml("web", sample_app(0.005), 4, two | {"target-burst-capacity": "0"}),
            lambda row: row["ready_pods"] >= 2 and row["mode"] == "serve",
            "2 ready pods in serve mode",
            lambda s: [
                Phase(16, 1.5 * s),
                Phase(16, 2 * s, action=kill_action("user")),
                Phase(16, 2 * s, action=kill_action("queue-proxy")),
            ],
            lambda r: _kills(r, 2) + _served(r, "direct"),
        ),
    ]


HEY_RATE_GUESS = 1500
"""Requests per second hey is asked for (it sends a count, not a duration): about what kpa up's proxy
mode serves on a shared 2-core machine, so a hey phase lasts roughly its nominal seconds."""


async def run_named(pattern: Pattern, workdir: Path, scale: float = 1.0) -> PatternResult:
    """Start `kpa up` with the pattern's stack, wait for its ready state, drive its phases (raw clients
    or hey), and stop `kpa up` (which must leave no pod process)."""
    timeout = TIMEOUT_SECONDS + MARGIN
    async with KpaUp(pattern.stack, workdir, revision=pattern.host) as up:
        await wait_for(up, pattern.ready, 30, pattern.ready_what)
        if pattern.client == "raw":
            return await run_pattern(
                pattern.name, up, pattern.phases(scale), host=pattern.host, timeout=timeout
            )
        (phase,) = pattern.phases(scale)
        before, started = up.usage(), time.monotonic()
        # hey sends requests // connections per connection: ask for a multiple, or the rest never goes out.
        requests = max(1, round(phase.seconds * HEY_RATE_GUESS / phase.clients)) * phase.clients
        tally, report = await run_hey(up.entry, pattern.host, requests, phase.clients, timeout)
        seconds = time.monotonic() - started
        status = await up.status()
        row = dict(up.row(status), served=status.get("served", {}))
        samples = [(seconds, row)]
        return PatternResult(
            pattern.name, tally, seconds, samples, before, up.usage(), [], hey_percentiles(report)
        )
