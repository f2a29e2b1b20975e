"""Readable ids for parametrized tables: each row becomes a ``pytest.param`` named by its own fields.

``pytest --collect-only -q`` and a failure's header then say which case it is (``stable-window=5s``,
``a write exactly a window old is dropped``) instead of ``key3-value3-message3`` or a row of values,
and the name stays beside the row it names rather than in a parallel ``ids=`` list. Importable from
every kind of test (``pythonpath`` in pyproject.toml).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import pytest


def _first(first: Any, *_: Any) -> str:
    return str(first)


def named(rows: Iterable[Sequence[Any]], name: Callable[..., str] = _first) -> list[Any]:
    """Each row as ``pytest.param(*row, id=name(*row))``; by default a row is named by its first
    field, for tables that lead with a label."""
    return [pytest.param(*row, id=name(*row)) for row in rows]
