"""Label and field selectors of the fake API server (fakecluster.selectors), table-driven.

List and watch share them; the controller finds a revision's pods and slices by label, and its
informers select by field. A selector the fake cannot evaluate must be a 400, never ignored: an
ignored selector would hand a controller objects a real server filters out.
"""

import pytest
from tables import named

from fakecluster.errors import ApiError
from fakecluster.resources import CONFIGMAPS, EVENTS, INFERENCESERVICES, PODS
from fakecluster.selectors import field_matcher, label_matcher, render

LABELS = {"app": "hello", "tier": "web", "serving.kserve.io/inferenceservice": "isvc"}


def selects(selector, selected):
    return f"{selector or '(empty)'} {'selects' if selected else 'does not select'}"


@pytest.mark.parametrize(
    ("selector", "selected"),
    named(
        [
            ("", True),
            ("app=hello", True),
            ("app==hello", True),
            ("app=other", False),
            ("app!=other", True),
            ("missing!=x", True),
            ("app in (hello, bye)", True),
            ("app in (bye)", False),
            ("app notin (bye)", True),
            ("missing notin (bye)", True),
            ("tier", True),
            ("!tier", False),
            ("!missing", True),
            ("app=hello,tier in (web,api)", True),
            ("app=hello,tier=api", False),
            ("serving.kserve.io/inferenceservice=isvc", True),
        ],
        selects,
    ),
)
def test_label_selector_selects_as_kubernetes_does(selector, selected):
    assert label_matcher(selector)(LABELS) is selected


@pytest.mark.parametrize("selector", ["app=(x", "a b c", "app in x", "=x"])
def test_label_selector_that_does_not_parse_is_a_400(selector):
    with pytest.raises(ApiError) as refused:
        label_matcher(selector)
    assert refused.value.code == 400


POD = {"metadata": {"name": "p", "namespace": "ns"}, "status": {"phase": "Running", "podIP": "127.0.0.2"}}


@pytest.mark.parametrize(
    ("selector", "selected"),
    named(
        [
            ("metadata.name=p", True),
            ("metadata.name==p,metadata.namespace=ns", True),
            ("metadata.name!=p", False),
            ("status.phase=Running", True),
            ("status.podIP=127.0.0.2", True),
            ("spec.nodeName=", True),  # a missing field reads as ""
        ],
        selects,
    ),
)
def test_field_selector_compares_the_fields_a_type_indexes(selector, selected):
    assert field_matcher(selector, PODS)(POD) is selected


def test_event_source_field_reads_source_component():
    event = {
        "metadata": {"name": "e"},
        "source": {"component": "kpa"},
        "involvedObject": {"kind": "Deployment"},
    }
    assert field_matcher("source=kpa,involvedObject.kind=Deployment", EVENTS)(event)


@pytest.mark.parametrize(
    ("selector", "resource"),
    named(
        [
            ("status.phase=Running", CONFIGMAPS),
            ("spec.predictor=x", INFERENCESERVICES),
            ("data.x=1", CONFIGMAPS),
        ],
        lambda selector, resource: f"{selector} on {resource.plural}",
    ),
)
def test_field_selector_on_a_field_the_type_does_not_index_is_a_400_naming_it(selector, resource):
    with pytest.raises(ApiError) as refused:
        field_matcher(selector, resource)
    assert refused.value.code == 400
    assert f"field label not supported: {selector.split('=')[0]}" in refused.value.message


@pytest.mark.parametrize(
    ("label_selector", "rendered"),
    named(
        [
            ({"matchLabels": {"tier": "web", "app": "x"}}, "app=x,tier=web"),
            (
                {"matchExpressions": [{"key": "tier", "operator": "In", "values": ["b", "a"]}]},
                "tier in (a,b)",
            ),
            (
                {
                    "matchLabels": {"app": "x"},
                    "matchExpressions": [
                        {"key": "gone", "operator": "DoesNotExist"},
                        {"key": "env", "operator": "NotIn", "values": ["p"]},
                    ],
                },
                "app=x,env notin (p),!gone",
            ),
            ({"matchExpressions": [{"key": "k", "operator": "Exists"}]}, "k"),
            (None, ""),
        ],
        lambda _, rendered: rendered or "no selector",
    ),
)
def test_label_selector_object_renders_as_the_query_string_scale_status_carries(label_selector, rendered):
    assert render(label_selector) == rendered
    if label_selector:
        assert label_matcher(rendered)({"app": "x", "tier": "a", "k": "1"}) in (True, False)  # it parses back
