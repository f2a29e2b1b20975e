"""The router's pure decisions: GJSON conditions as KServe's router tests them, the Splitter's draw,
the Ensemble's merge, and where serviceName and serviceUrl steps are sent."""

from __future__ import annotations

import json

import pytest
from tables import named

from graph.condition import matches, problem
from graph.routing import error_body, merge_ensemble, pick_switch, pick_weighted
from graph.spec import Graph, Node, Step
from graph.targets import TargetError, resolve

DOG = b'{"predictions": ["dog"]}'
CAT = b'{"predictions": ["cat"]}'

CONDITIONS = [
    ("KServe's example matches a dog", DOG, '[@this].#(predictions.0=="dog")', True),
    ("KServe's example does not match a cat", CAT, '[@this].#(predictions.0=="dog")', False),
    ("a plain path exists", DOG, "predictions.0", True),
    ("a plain path missing", DOG, "instances.0", False),
    ("a numeric comparison", b'{"predictions": [1]}', "[@this].#(predictions.0==1)", True),
    ("a numeric comparison fails", b'{"predictions": [0]}', "[@this].#(predictions.0==1)", False),
    ("an array query", b'{"predictions": [0.2, 0.9]}', "predictions.#(>0.5)", True),
    ("a body that is not JSON never matches", b"dog", "@this", False),
    ("an empty body never matches", b"", "@this", False),
]


@pytest.mark.parametrize(("label", "document", "condition", "expected"), named(CONDITIONS))
def test_a_condition_matches_when_gjson_finds_something(label, document, condition, expected):
    assert matches(document, condition) is expected


SYNTAX = [
    ("balanced", '[@this].#(predictions.0=="dog")', None),
    ("brackets inside a string do not count", 'a.#(b=="[(")', None),
    ("an escaped quote inside a string", r'a.#(b=="x\"y")', None),
    ("unclosed parenthesis", "a.#(b==1", "misses ')' at its end"),
    ("stray bracket", "a]", "has an unmatched ']' at character 2"),
    ("crossed brackets", "a.#(b==[1)]", "has an unmatched ')' at character 10"),
    ("unclosed string", 'a.#(b=="dog)', "has a string that is never closed"),
    ("empty", "  ", "is empty"),
    ("overlong", "a" * 1001, "is longer than 1000 characters"),
]


@pytest.mark.parametrize(("label", "condition", "expected"), named(SYNTAX))
def test_syntax_a_condition_can_be_checked_for_without_data(label, condition, expected):
    found = problem(condition)
    assert (found is None) if expected is None else (found is not None and expected in found)


def step(key: str, **fields) -> Step:
    return Step(key, f"spec.nodes.root.steps[{key}]", **fields)


SPLIT = [step("a", service_name="a", weight=30), step("b", service_name="b", weight=0),
         step("c", service_name="c", weight=70)]  # fmt: skip
DRAWS = [("first draw", 0, "a"), ("last of a", 29, "a"), ("first of c", 30, "c"), ("last draw", 99, "c")]


@pytest.mark.parametrize(("label", "draw", "expected"), named(DRAWS))
def test_a_splitter_draw_picks_by_cumulative_weight(label, draw, expected):
    assert pick_weighted(SPLIT, draw).key == expected


@pytest.mark.parametrize("draw", [-1, 100])
def test_a_draw_outside_0_to_99_is_a_bug(draw):
    with pytest.raises(ValueError, match=r"must be in \[0, 100\)"):
        pick_weighted(SPLIT, draw)


def test_a_switch_takes_the_first_match_and_none_when_nothing_matches():
    steps = [step("cat", service_name="c", condition='[@this].#(predictions.0=="cat")'),
             step("any", service_name="a", condition="predictions"),
             step("dog", service_name="d", condition='[@this].#(predictions.0=="dog")')]  # fmt: skip
    assert pick_switch(steps, DOG).key == "any"  # first in order, not the most specific
    assert pick_switch(steps, CAT).key == "cat"
    assert pick_switch(steps, b'{"other": 1}') is None


def test_an_ensemble_merges_answers_by_step_key_keeping_non_json_as_text():
    merged = json.loads(merge_ensemble([("a", DOG), ("1", b"plain text")]))
    assert merged == {"a": {"predictions": ["dog"]}, "1": "plain text"}


def test_an_error_body_has_kserves_shape():
    assert json.loads(error_body("why")) == {"error": "Failed to process request", "cause": "why"}


def graph(protocol: str = "v1") -> Graph:
    return Graph("g", {"root": Node("root", "Sequence", ())}, protocol=protocol)


TARGETS = [
    ("v1 through kpa up's entry", step("0", service_name="cat-dog"), "v1", "http://127.0.0.1:8080", None,
     ("127.0.0.1", 8080, b"/v1/models/cat-dog:predict", b"cat-dog")),
    ("v2 through kpa up's entry", step("0", service_name="cat-dog"), "v2", "http://127.0.0.1:8080/", None,
     ("127.0.0.1", 8080, b"/v2/models/cat-dog/infer", b"cat-dog")),
    ("on Kubernetes: the revision's -kpa Service", step("0", service_name="cat-dog"), "v1", None,
     "http://{name}-kpa", ("cat-dog-kpa", 80, b"/v1/models/cat-dog:predict", b"cat-dog-kpa")),
    ("a serviceUrl as written", step("0", service_url="http://10.0.0.7:9000/v1/models/m:predict?x=1"), "v1",
     "http://127.0.0.1:8080", None, ("10.0.0.7", 9000, b"/v1/models/m:predict?x=1", b"10.0.0.7:9000")),
]  # fmt: skip


@pytest.mark.parametrize(("label", "the_step", "protocol", "entry", "template", "expected"), named(TARGETS))
def test_where_a_step_is_sent(label, the_step, protocol, entry, template, expected):
    kwargs = {"service_url": template} if template else {}
    target = resolve(the_step, graph(protocol), entry, **kwargs)
    assert (target.host, target.port, target.path, target.host_header) == expected


def test_a_service_url_template_without_name_is_refused_naming_the_option():
    with pytest.raises(TargetError, match=r"--service-url 'http://models': must contain \{name\}"):
        resolve(step("0", service_name="m"), graph(), None, service_url="http://models")
