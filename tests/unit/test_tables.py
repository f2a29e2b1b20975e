"""The tests' table helper (tests/tables.py): each row a case named by its own fields."""

from __future__ import annotations

import pytest
from tables import named


def test_a_row_is_named_by_its_first_field_by_default():
    (case,) = named([("a write inside the window is kept", 5, True)])
    assert case.id == "a write inside the window is kept"
    assert case.values == ("a write inside the window is kept", 5, True)


def test_a_name_function_gets_the_whole_row():
    cases = named([("stable-window", "5s", "must be in [6s, 1h]")], lambda key, value, _: f"{key}={value}")
    assert [case.id for case in cases] == ["stable-window=5s"]


@pytest.mark.parametrize(("label", "value"), named([("one", 1), ("two", 2)]))
def test_pytest_collects_the_rows_as_named_cases(request, label, value):
    assert request.node.callspec.id == label
