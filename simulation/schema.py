"""Reading a scenario document with errors that point at the offending key.

Every value is read through a :class:`Node`, which knows its dotted path in the document and, for a
document read from a file, where each key was written, so a bad scenario fails with
``step.yaml:7:3: revision.service_time.dist="weird": expected one of exponential, ...`` rather than
a stack trace. Unknown keys are errors too: a misspelt key silently ignored would simulate
something other than what the user asked for.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from simulation.yamldoc import Position, position_of, positions_of

T = TypeVar("T")


class ScenarioError(ValueError):
    """A scenario that cannot be simulated; the message starts with the key path.

    ``at`` is where the offending key was written, when the document came from a file; ``str()``
    then starts with ``line L, column C:`` and :meth:`located` gives the compiler-style
    ``FILE:L:C: message`` that editors jump to.
    """

    def __init__(self, message: str, at: Position | None = None) -> None:
        self.message, self.at = message, at
        super().__init__(f"line {at.line}, column {at.column}: {message}" if at else message)

    def located(self, source: object) -> str:
        """``FILE:LINE:COLUMN: message`` (``FILE: message`` without a position)."""
        if self.at is None:
            return f"{source}: {self.message}"
        return f"{source}:{self.at.line}:{self.at.column}: {self.message}"


_REQUIRED = object()
MAX_DATA_FILE_BYTES = 1 << 30  # an empirical sample or a trace file; a whole Azure 2019 day is ~0.15 GB


_SHOWN = 80  # characters of a value quoted in an error; a long list or string is cut
# YAML 1.1 (PyYAML) reads 1e7 as a string; YAML 1.2 and everyone writing a rate read it as a number.
_EXPONENT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def show(value: Any) -> str:
    """A value as the user wrote it: strings quoted, everything else as YAML would print it."""
    if isinstance(value, str):
        text = json.dumps(value)
    elif isinstance(value, bool):
        text = "true" if value else "false"
    elif value is None:
        text = "null"
    elif isinstance(value, float) and value.is_integer() and abs(value) < 1e16:
        text = str(int(value))
    else:
        text = str(value)
    return text if len(text) <= _SHOWN else text[: _SHOWN - 3] + "..."


def join(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


@dataclass(frozen=True)
class Node:
    """One mapping of the scenario document, its path from the root and where it was written (a list's
    items are read as a mapping from their indexes)."""

    value: Mapping[Any, Any]
    path: str = ""
    at: Position | None = None  # where the mapping starts
    positions: Mapping[Any, Position] = field(default_factory=dict)  # where each key was written

    @classmethod
    def of(cls, value: Any, path: str, at: Position | None = None) -> Node:
        """``value`` as a node; ``at`` (where the key holding it was written) places a non-mapping error."""
        if not isinstance(value, Mapping):
            raise ScenarioError(f"{path or 'scenario'}={show(value)}: expected a mapping", at)
        return cls(value, path, position_of(value) or at, positions_of(value))

    def position(self, key: Any) -> Position | None:
        """Where ``key`` was written, else where this mapping starts (a missing key belongs there)."""
        return self.positions.get(key, self.at)

    def fail(self, reason: str) -> ScenarioError:
        """An error about this mapping as a whole (e.g. two keys that exclude each other)."""
        return ScenarioError(f"{self.path or 'scenario'}: {reason}", self.at)

    def error(self, key: str | int, reason: str) -> ScenarioError:
        where = join(self.path, key)
        if key in self.value:
            return ScenarioError(f"{where}={show(self.value[key])}: {reason}", self.position(key))
        return ScenarioError(f"{where}: {reason}", self.position(key))

    def only(self, allowed: Iterable[str]) -> None:
        allowed = list(allowed)
        for key in self.value:
            if key not in allowed:
                raise ScenarioError(
                    f"{join(self.path, str(key))}: unknown key; expected one of {', '.join(allowed)}",
                    self.position(key),
                )

    def load(
        self, key: str, base_dir: Path, reader: Callable[[Path], T], problem: str = ""
    ) -> tuple[T, Path]:
        """Read the file named by ``key`` (relative to the scenario); errors name the key and the file.

        Only a regular file of at most :data:`MAX_DATA_FILE_BYTES` is read (not a device, a pipe or a
        directory, which could block or never end). Readers raise ``ValueError("line N: what was
        expected")`` without echoing the file's text: the file may be anything on the machine.
        """
        path = (base_dir / self.string(key)).resolve()
        try:
            if not path.is_file():
                reason = "no such file" if not path.exists() else "not a regular file"
                raise self.error(key, f"cannot read {path}: {reason}")
            size = path.stat().st_size
            if size > MAX_DATA_FILE_BYTES:
                raise self.error(
                    key,
                    f"{path}: {size:,} bytes, above the {MAX_DATA_FILE_BYTES:,}-byte limit of a data file",
                )
            return reader(path), path
        except OSError as exc:
            raise self.error(key, f"cannot read {path}: {exc.strerror}") from None
        except UnicodeDecodeError as exc:
            raise self.error(key, f"{problem}{path}: not UTF-8 text (byte {exc.start + 1:,})") from None
        except ValueError as exc:
            if isinstance(exc, ScenarioError):
                raise
            raise self.error(key, f"{problem}{path}, {exc}") from None

    def has(self, key: str) -> bool:
        return key in self.value

    def raw(self, key: str | int, default: Any = _REQUIRED) -> Any:
        if key not in self.value:
            if default is _REQUIRED:
                raise ScenarioError(f"{join(self.path, key)}: required", self.at)
            return default
        return self.value[key]

    def child(self, key: str, default: Any = _REQUIRED) -> Node:
        return Node.of(self.raw(key, default), join(self.path, key), self.position(key))

    def items(self, key: str) -> list[tuple[str, Any, Position | None]]:
        """A non-empty list's items as (path, value, where the item starts)."""
        raw = self.raw(key)
        if not isinstance(raw, list) or not raw:
            raise ScenarioError(f"{join(self.path, key)}: expected a non-empty list", self.position(key))
        where = join(self.path, key)
        positions = positions_of(raw)
        return [(join(where, i), item, positions.get(i, self.position(key))) for i, item in enumerate(raw)]

    def number(
        self,
        key: str | int,
        default: Any = _REQUIRED,
        *,
        minimum: float | None = None,
        above: float | None = None,
        maximum: float | None = None,
    ) -> float:
        value = self.raw(key, default)
        if isinstance(value, str) and _EXPONENT.fullmatch(value):
            value = float(value)
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise self.error(key, "expected a number")
        if minimum is not None and value < minimum:
            raise self.error(key, f"must be >= {show(minimum)}")
        if above is not None and value <= above:
            raise self.error(key, f"must be > {show(above)}")
        if maximum is not None and value > maximum:
            raise self.error(key, f"must be <= {show(maximum)}")
        return float(value)

    def integer(self, key: str, default: Any = _REQUIRED, *, minimum: int | None = None) -> int:
        value = self.raw(key, default)
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                value = int(value)
            else:
                raise self.error(key, "expected a whole number")
        if minimum is not None and value < minimum:
            raise self.error(key, f"must be >= {minimum}")
        return value

    def choice(self, key: str, options: Iterable[str], default: Any = _REQUIRED) -> str:
        options = list(options)
        value = self.raw(key, default)
        if value not in options:
            raise self.error(key, f"expected one of {', '.join(options)}")
        return value

    def string(self, key: str, default: Any = _REQUIRED) -> str:
        value = self.raw(key, default)
        if not isinstance(value, str) or not value:
            raise self.error(key, "expected a non-empty string")
        return value

    def string_map(self, key: str) -> dict[str, str]:
        """Annotations and config maps: Kubernetes stores strings, YAML may give numbers or booleans."""
        raw = self.raw(key, {})
        if raw is None:
            return {}
        node = Node.of(raw, join(self.path, key), self.position(key))
        result: dict[str, str] = {}
        for name, value in node.value.items():
            if isinstance(value, bool):
                result[str(name)] = "true" if value else "false"
            elif isinstance(value, str | int | float):
                result[str(name)] = str(value)
            else:
                raise ScenarioError(
                    f"{join(node.path, str(name))}={show(value)}: expected a string", node.position(name)
                )
        return result
