"""The router's decisions, pure: which step a Splitter or Switch takes, how an Ensemble merges its
answers, what an error answer says. Randomness is a parameter (``draw``), so a test can replay any
split; the router draws from ``random``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from graph.condition import matches
from graph.spec import Step

SPLIT_RANGE = 100  # a Splitter's draw is an integer in [0, 100)
ERROR = "Failed to process request"  # KServe's router's "error" text; "cause" says what happened


def is_success(status: int) -> bool:
    return 200 <= status <= 299


def pick_weighted(steps: Sequence[Step], draw: int) -> Step:
    """The Splitter's step for ``draw`` in [0, 100): step i takes draws in [w0+..+w(i-1), w0+..+wi)."""
    if not 0 <= draw < SPLIT_RANGE:
        raise ValueError(f"draw {draw}: must be in [0, {SPLIT_RANGE})")
    end = 0
    for step in steps:
        end += step.weight or 0
        if draw < end:
            return step
    raise ValueError("the weights do not sum to 100 (the graph's check should have refused it)")


def pick_switch(steps: Sequence[Step], document: bytes) -> Step | None:
    """The first step whose condition finds something in ``document``; None when none does."""
    for step in steps:
        if step.condition is not None and matches(document, step.condition):
            return step
    return None


def merge_ensemble(answers: Sequence[tuple[str, bytes]]) -> bytes:
    """One JSON object with each step's answer under its key, as KServe's Ensemble merges them; an
    answer that is not JSON is kept as a string rather than failing the whole node."""
    merged: dict[str, object] = {}
    for key, body in answers:
        try:
            merged[key] = json.loads(body)
        except ValueError:
            merged[key] = body.decode("utf-8", "replace")
    return json.dumps(merged, separators=(",", ":")).encode()


def error_body(cause: str) -> bytes:
    """KServe's router's error answer: ``{"error": "Failed to process request", "cause": ...}``."""
    return json.dumps({"error": ERROR, "cause": cause}).encode()


def is_json(body: bytes) -> bool:
    """Whether to say ``Content-Type: application/json``, as KServe's router does for valid JSON."""
    try:
        json.loads(body)
    except ValueError:
        return False
    return True
