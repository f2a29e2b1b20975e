"""Argument types shared by the `kpa` subcommands, so a flag means and says the same everywhere."""

from __future__ import annotations

import argparse

from autoscaler.values import parse_duration


def positive_int(text: str) -> int:
    """A whole number ≥ 1 (a count: pods, replicates); argparse reports the error with the flag's name."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: must be at least 1")
    return value


def duration(text: str) -> float:
    """A positive duration in Go's syntax, as Knative writes them (``90s``, ``10m``, ``1h30m``)."""
    try:
        value = parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r}: {exc}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: must be more than 0")
    return value
