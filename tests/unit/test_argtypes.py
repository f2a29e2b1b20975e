"""The count flags of `kpa up --max-pods` and `kpa validate --replicates` accept and refuse alike."""

import argparse

import pytest

from kpa.argtypes import positive_int


@pytest.mark.parametrize(
    ("text", "value"), [("1", 1), ("8", 8), (" 12 ", 12)], ids=["one", "eight", "padded-twelve"]
)
def test_a_whole_number_of_at_least_one_is_taken(text, value):
    assert positive_int(text) == value


@pytest.mark.parametrize(
    ("text", "message"),
    [("0", "'0': must be at least 1"), ("-3", "'-3': must be at least 1"), ("2.5", "'2.5': not an integer"),
     ("many", "'many': not an integer"), ("", "'': not an integer")],
    ids=["zero", "negative", "fraction", "word", "empty"],
)  # fmt: skip
def test_anything_else_is_refused_naming_the_value(text, message):
    with pytest.raises(argparse.ArgumentTypeError, match=message):
        positive_int(text)
