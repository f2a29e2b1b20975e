"""Argument types shared by the `kpa` subcommands, so a flag means and says the same everywhere."""

from __future__ import annotations

import argparse


def positive_int(text: str) -> int:
    """A whole number ≥ 1 (a count: pods, replicates); argparse reports the error with the flag's name."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: must be at least 1")
    return value
