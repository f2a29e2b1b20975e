"""Reading a scenario document with errors that point at the offending key.

Every value is read through a :class:`Node`, which knows its dotted path in the document, so a bad
scenario fails with ``revision.service_time.dist="weird": expected one of exponential, ...`` rather
than a stack trace. Unknown keys are errors too: a misspelt key silently ignored would simulate
something other than what the user asked for.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


class ScenarioError(ValueError):
    """A scenario that cannot be simulated; the message starts with the key path."""


_REQUIRED = object()


def show(value: Any) -> str:
    """A value as the user wrote it: strings quoted, everything else as YAML would print it."""
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def join(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


@dataclass(frozen=True)
class Node:
    """One mapping of the scenario document and its path from the root."""

    value: Mapping[str, Any]
    path: str = ""

    @classmethod
    def of(cls, value: Any, path: str) -> Node:
        if not isinstance(value, Mapping):
            raise ScenarioError(f"{path or 'scenario'}={show(value)}: expected a mapping")
        return cls(value, path)

    def error(self, key: str | int, reason: str) -> ScenarioError:
        where = join(self.path, key)
        if key in self.value:
            return ScenarioError(f"{where}={show(self.value[key])}: {reason}")
        return ScenarioError(f"{where}: {reason}")

    def only(self, allowed: Iterable[str]) -> None:
        allowed = list(allowed)
        for key in self.value:
            if key not in allowed:
                raise ScenarioError(
                    f"{join(self.path, str(key))}: unknown key; expected one of {', '.join(allowed)}"
                )

    def load(
        self, key: str, base_dir: Path, reader: Callable[[Path], T], problem: str = ""
    ) -> tuple[T, Path]:
        """Read the file named by ``key`` (relative to the scenario); errors name the key and the file."""
        path = (base_dir / self.string(key)).resolve()
        try:
            return reader(path), path
        except OSError as exc:
            raise self.error(key, f"cannot read {path}: {exc.strerror}") from None
        except (ValueError, StopIteration) as exc:
            raise self.error(key, f"{problem}{exc}") from None

    def has(self, key: str) -> bool:
        return key in self.value

    def raw(self, key: str, default: Any = _REQUIRED) -> Any:
        if key not in self.value:
            if default is _REQUIRED:
                raise ScenarioError(f"{join(self.path, key)}: required")
            return default
        return self.value[key]

    def child(self, key: str, default: Any = _REQUIRED) -> Node:
        return Node.of(self.raw(key, default), join(self.path, key))

    def number(
        self,
        key: str,
        default: Any = _REQUIRED,
        *,
        minimum: float | None = None,
        above: float | None = None,
        maximum: float | None = None,
    ) -> float:
        value = self.raw(key, default)
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
        node = Node.of(raw, join(self.path, key))
        result: dict[str, str] = {}
        for name, value in node.value.items():
            if isinstance(value, bool):
                result[str(name)] = "true" if value else "false"
            elif isinstance(value, str | int | float):
                result[str(name)] = str(value)
            else:
                raise ScenarioError(f"{join(node.path, str(name))}={show(value)}: expected a string")
        return result
