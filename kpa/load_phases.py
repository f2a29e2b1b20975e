"""`kpa load`'s phase grammar and the open-loop send schedule each phase implies (pure: no clock, no I/O).

Phase syntax (repeat ``--phase`` or list them under ``phases:`` in a YAML plan file):

    idle:SECONDS                     send nothing
    rate:RPS:SECONDS                 constant rate
    ramp:FROM:TO:SECONDS             rate changing linearly from FROM to TO req/s
    steps:FROM:TO:COUNT:SECONDS      COUNT constant-rate steps from FROM to TO, SECONDS each
    burst:REQUESTS[:SECONDS]         REQUESTS sent at once, then wait out SECONDS (default 0)
    conc:CLIENTS:SECONDS             closed loop: CLIENTS each send the next request when one ends

The schedule is data (offsets from the phase's start), so the runner only has to keep the times and
a test can check a ramp's spacing without a clock.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass


class PhaseError(ValueError):
    """A phase that cannot be run; the message quotes the phase and shows the accepted forms."""


PHASE_FORMS = (
    "idle:SECONDS, rate:RPS:SECONDS, ramp:FROM:TO:SECONDS, steps:FROM:TO:COUNT:SECONDS, "
    "burst:REQUESTS[:SECONDS], conc:CLIENTS:SECONDS"
)


@dataclass(frozen=True, slots=True)
class Phase:
    """One stretch of traffic. ``rate``/``rate_to`` in req/s; ``requests`` for bursts;
    ``clients`` for closed-loop phases."""

    kind: str
    duration: float
    rate: float = 0.0
    rate_to: float = 0.0
    requests: int = 0
    clients: int = 0

    @property
    def label(self) -> str:
        match self.kind:
            case "idle":
                return f"idle {self.duration:g}s"
            case "rate":
                return f"{self.rate:g} req/s for {self.duration:g}s"
            case "ramp":
                return f"ramp {self.rate:g}→{self.rate_to:g} req/s over {self.duration:g}s"
            case "burst":
                return f"burst of {self.requests}" + (f" then {self.duration:g}s" if self.duration else "")
            case _:
                return f"{self.clients} closed-loop clients for {self.duration:g}s"

    @property
    def planned_requests(self) -> int | None:
        """How many requests the phase sends; None for closed loop (depends on the service)."""
        if self.kind == "conc":
            return None
        return len(send_offsets(self))


def _number(text: str, what: str, phase: str, *, integer: bool = False, positive: bool = True) -> float:
    try:
        value = int(text) if integer else float(text)
    except ValueError:
        kind = "a whole number" if integer else "a number"
        raise PhaseError(f"phase {phase!r}: {what}={text!r} is not {kind}; forms: {PHASE_FORMS}") from None
    if not math.isfinite(value) or value < 0 or (positive and value == 0):
        bound = "> 0" if positive else ">= 0"
        raise PhaseError(f"phase {phase!r}: {what}={text!r} must be {bound}")
    return value


def parse_phase(text: str) -> list[Phase]:
    """Parse one phase; ``steps`` expands into its constant-rate steps, hence the list."""
    kind, *parts = text.strip().split(":")
    arity = {"idle": (1,), "rate": (2,), "ramp": (3,), "steps": (4,), "burst": (1, 2), "conc": (2,)}
    if kind not in arity:
        raise PhaseError(f"phase {text!r}: unknown kind {kind!r}; forms: {PHASE_FORMS}")
    if len(parts) not in arity[kind]:
        raise PhaseError(
            f"phase {text!r}: {kind} takes {' or '.join(map(str, arity[kind]))} value(s); "
            f"forms: {PHASE_FORMS}"
        )
    match kind:
        case "idle":
            return [Phase("idle", _number(parts[0], "SECONDS", text))]
        case "rate":
            return [Phase("rate", _number(parts[1], "SECONDS", text), rate=_number(parts[0], "RPS", text))]
        case "ramp":
            start = _number(parts[0], "FROM", text, positive=False)
            end = _number(parts[1], "TO", text, positive=False)
            if start == end == 0:
                raise PhaseError(f"phase {text!r}: a ramp from 0 to 0 sends nothing; use idle:SECONDS")
            return [Phase("ramp", _number(parts[2], "SECONDS", text), rate=start, rate_to=end)]
        case "steps":
            start = _number(parts[0], "FROM", text)
            end = _number(parts[1], "TO", text)
            count = int(_number(parts[2], "COUNT", text, integer=True))
            each = _number(parts[3], "SECONDS", text)
            rates = [start] if count == 1 else [start + (end - start) * i / (count - 1) for i in range(count)]
            return [Phase("rate", each, rate=r) for r in rates]
        case "burst":
            requests = int(_number(parts[0], "REQUESTS", text, integer=True))
            seconds = _number(parts[1], "SECONDS", text, positive=False) if len(parts) == 2 else 0.0
            return [Phase("burst", seconds, requests=requests)]
        case _:
            clients = int(_number(parts[0], "CLIENTS", text, integer=True))
            return [Phase("conc", _number(parts[1], "SECONDS", text), clients=clients)]


def parse_phases(texts: Iterable[str]) -> list[Phase]:
    """Parse phases in order; none at all is an error (a run that sends nothing is a mistake)."""
    phases = [phase for text in texts for phase in parse_phase(text)]
    if not phases:
        raise PhaseError(f"no phases given; add --phase (forms: {PHASE_FORMS})")
    return phases


def send_offsets(phase: Phase) -> list[float]:
    """Seconds after the phase start at which each request is sent (open-loop phases).

    The i-th request goes at the instant the cumulative planned count reaches i, so a ramp's
    spacing tightens smoothly rather than in steps.
    """
    match phase.kind:
        case "rate":
            count = round(phase.rate * phase.duration)
            return [i / phase.rate for i in range(count)]
        case "ramp":
            r0, r1, d = phase.rate, phase.rate_to, phase.duration
            slope = (r1 - r0) / d
            count = round((r0 + r1) / 2 * d)
            if slope == 0:
                return [i / r0 for i in range(count)]
            # solve r0*t + slope*t^2/2 = i for t >= 0
            return [(-r0 + math.sqrt(r0 * r0 + 2 * slope * i)) / slope for i in range(count)]
        case "burst":
            return [0.0] * phase.requests
        case _:
            return []
