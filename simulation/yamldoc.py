"""Scenario YAML that remembers where each key was written and refuses duplicate keys.

PyYAML keeps the last of two equal keys without a word, so a scenario that sets ``timeout`` twice
silently simulates one of them; and a plain ``dict`` forgets the line of every key, so an error can
name the key path but not where to look. :func:`load` composes the document first (nodes carry their
line and column), rejects duplicate keys naming both lines, then builds ordinary dicts and lists
that also carry the positions of their keys and items.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import yaml

__all__ = ["DuplicateKeyError", "MarkedDict", "MarkedList", "Position", "load", "position_of", "positions_of"]

_MERGE = "tag:yaml.org,2002:merge"


@dataclass(frozen=True)
class Position:
    """A place in the scenario file, 1-based as editors count."""

    line: int
    column: int

    @classmethod
    def of(cls, mark: yaml.Mark) -> Position:
        return cls(mark.line + 1, mark.column + 1)


class MarkedDict(dict):
    """A mapping of the document: ``at`` is where it starts, ``positions`` where each key was written."""

    at: Position | None = None
    positions: dict[Any, Position]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.positions = {}


class MarkedList(list):
    """A sequence of the document: ``at`` is where it starts, ``positions`` where each item starts."""

    at: Position | None = None
    positions: dict[int, Position]

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.positions = {}


class DuplicateKeyError(ValueError):
    """A key given twice in one mapping; ``at`` is the second occurrence."""

    def __init__(self, path: str, first: Position, at: Position) -> None:
        super().__init__(f"{path}: duplicate key (also at line {first.line}); keep one")
        self.path, self.first, self.at = path, first, at


def position_of(value: Any) -> Position | None:
    """Where a mapping or list of a loaded document starts (None for values built in code)."""
    return getattr(value, "at", None)


def positions_of(value: Any) -> dict[Any, Position]:
    """Where the keys (or list items) of a loaded mapping (or list) were written; empty for plain ones."""
    return getattr(value, "positions", {})


_BOOL = "tag:yaml.org,2002:bool"


class _Loader(yaml.SafeLoader):
    """SafeLoader building :class:`MarkedDict` and :class:`MarkedList` with their positions."""


def _mapping(loader: _Loader, node: yaml.MappingNode) -> MarkedDict:
    loader.flatten_mapping(node)  # merge keys (<<) first, explicit keys after them, as PyYAML does
    result = MarkedDict()
    result.at = Position.of(node.start_mark)
    for key_node, value_node in node.value:
        if key_node.tag == _BOOL and isinstance(key_node, yaml.ScalarNode) and key_node.style is None:
            key = key_node.value  # YAML 1.1 reads a bare `on:` or `off:` key as a boolean; a key is a name
        else:
            key = loader.construct_object(key_node, deep=True)
        value = loader.construct_object(value_node, deep=True)
        try:
            result[key] = value
        except TypeError:
            raise yaml.constructor.ConstructorError(
                None, None, "a mapping key must be a plain value", key_node.start_mark
            ) from None
        result.positions[key] = Position.of(key_node.start_mark)
    return result


def _sequence(loader: _Loader, node: yaml.SequenceNode) -> MarkedList:
    result = MarkedList(loader.construct_object(item, deep=True) for item in node.value)
    result.at = Position.of(node.start_mark)
    result.positions = {i: Position.of(item.start_mark) for i, item in enumerate(node.value)}
    return result


_Loader.add_constructor("tag:yaml.org,2002:map", _mapping)
_Loader.add_constructor("tag:yaml.org,2002:seq", _sequence)


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _check_duplicates(node: yaml.Node, path: str, seen: set[int]) -> None:
    """Walk the composed document; raise at the first key that repeats one of its own mapping."""
    if id(node) in seen:  # an alias: already walked
        return
    seen.add(id(node))
    if isinstance(node, yaml.MappingNode):
        first: dict[str, Position] = {}
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE:
                continue  # merged keys may be overridden by explicit ones: that is what a merge is for
            name = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
            if name is not None:
                at = Position.of(key_node.start_mark)
                if name in first:
                    raise DuplicateKeyError(_join(path, name), first[name], at)
                first[name] = at
            _check_duplicates(value_node, _join(path, str(name)), seen)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _check_duplicates(item, f"{path}[{i}]", seen)


def load(text: str) -> Any:
    """The document in ``text``; raises ``yaml.YAMLError`` or :class:`DuplicateKeyError`."""
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_duplicates(node, "", set())
        return loader.construct_document(node)
    finally:
        loader.dispose()
