"""How Knative reads one config-autoscaler or annotation value, and the error that names a bad one.

Knative's values are strings read with Go's parsers, so these are Go's grammars: ``strconv.ParseFloat``
(no ``inf``, no ``nan``), ``ParseInt`` into an int32, ``ParseBool`` (``1``, ``t``, ``TRUE``, ...) and
``time.ParseDuration`` (``60s``, ``1m30s``, ``1.5h``, ``500ms``; a bare number only for ``0``). The one
duration grammar of the project: the activator's command line reads its durations with it too.
:class:`Reader` applies them to a mapping (the config map or a revision's annotations), so every
error names the key, the value and what is wrong.

Pure: strings in, values or ``AutoscalerConfigError`` out.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from typing import TypeVar

INT32_MAX = 2**31 - 1


class AutoscalerConfigError(ValueError):
    """A configuration or annotation value that cannot be used; the message says which and why."""


# -- scalar parsers: each returns the value or raises ValueError("<what is wrong>") ----------------------

_FLOAT = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")
_INT = re.compile(r"[+-]?\d+")
_DURATION = re.compile(r"[+-]?((\d+\.?\d*|\.\d+)(ns|us|µs|μs|ms|s|m|h))+")
_DURATION_PART = re.compile(r"(\d+\.?\d*|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_UNIT_SECONDS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_TRUE = frozenset({"1", "t", "T", "TRUE", "true", "True"})
_FALSE = frozenset({"0", "f", "F", "FALSE", "false", "False"})


def parse_float(text: str) -> float:
    if not _FLOAT.fullmatch(text):
        raise ValueError("not a number")
    value = float(text)
    if not math.isfinite(value):
        raise ValueError("not a finite number")
    return value


def parse_int32(text: str) -> int:
    if not _INT.fullmatch(text):
        raise ValueError("not an integer")
    value = int(text)
    if not -INT32_MAX - 1 <= value <= INT32_MAX:
        raise ValueError("out of the int32 range")
    return value


def parse_bool(text: str) -> bool:
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError('not a boolean (use "true" or "false")')


def parse_duration(text: str) -> float:
    """Parse a Go duration ("60s", "1m30s", "1.5h", "500ms", or "0") into seconds."""
    if text in ("0", "+0", "-0"):
        return 0.0
    if not _DURATION.fullmatch(text):
        raise ValueError('not a duration (use e.g. "60s", "1m", "1h")')
    seconds = sum(float(number) * _UNIT_SECONDS[unit] for number, unit in _DURATION_PART.findall(text))
    return -seconds if text.startswith("-") else seconds


def whole_seconds(seconds: float) -> bool:
    return abs(seconds - round(seconds)) < 1e-9


T = TypeVar("T")


class Reader:
    """Reads one source (the config map or the annotations), naming each value in its errors."""

    def __init__(self, label: Callable[[str], str], data: Mapping[str, str]) -> None:
        self._label = label
        self._data = data

    def fail(self, key: str, problem: str) -> AutoscalerConfigError:
        return AutoscalerConfigError(f'{self._label(key)}="{self._data[key]}": {problem}')

    def get(self, keys: tuple[str, ...], parse: Callable[[str], T]) -> tuple[str, T] | None:
        """The first of ``keys`` present (new name before legacy alias), parsed; None when absent."""
        present = [k for k in keys if k in self._data]
        if not present:
            return None
        if len(present) > 1:
            both = " and ".join(self._label(k) for k in present)
            raise AutoscalerConfigError(f"{both} are both set; keep only {self._label(keys[0])}")
        key = present[0]
        raw = self._data[key]
        if not isinstance(raw, str):
            raise AutoscalerConfigError(f"{self._label(key)}={raw!r}: must be a string")
        try:
            return key, parse(raw)
        except ValueError as exc:
            raise self.fail(key, str(exc)) from None
