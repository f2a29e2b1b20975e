"""Revision settings are validated once, with messages that name the field and the fix."""

import pytest

from activator.config import MIN_QUEUE_BOUND, ActivatorConfigError, RevisionConfig, default_queue_bound


@pytest.mark.parametrize(
    ("doc", "expected"),
    [
        ({"name": "hello"}, RevisionConfig("hello", "default", 0, 300.0, None)),
        (
            {"name": "p", "namespace": "ml", "container_concurrency": 2, "timeout_seconds": 5,
             "queue_bound": 7},
            RevisionConfig("p", "ml", 2, 5.0, 7),
        ),
        ({"name": "hello", "queue_bound": None}, RevisionConfig("hello")),
    ],
    ids=["name-only", "every-field", "null-queue-bound"],
)
def test_valid_documents_parse(doc, expected):
    assert RevisionConfig.from_json(doc) == expected


@pytest.mark.parametrize(
    ("doc", "fragment"),
    [
        ({"name": "Hello_World"}, "revision name='Hello_World': must be a DNS label"),
        ({"name": "h", "namespace": ""}, "namespace=''"),
        ({"name": "h", "container_concurrency": -1}, "container_concurrency=-1: must be an integer >= 0"),
        ({"name": "h", "container_concurrency": "4"}, "container_concurrency='4'"),
        ({"name": "h", "container_concurrency": True}, "container_concurrency=True"),
        ({"name": "h", "timeout_seconds": 0}, "timeout_seconds=0.0: must be a number > 0"),
        ({"name": "h", "timeout_seconds": "abc"}, "timeout_seconds='abc'"),
        ({"name": "h", "timeout_seconds": float("inf")}, "timeout_seconds=inf"),
        ({"name": "h", "queue_bound": 0}, "queue_bound=0: must be an integer >= 1, or null"),
        ({"name": "h", "cc": 1}, "unknown field(s) ['cc']"),
        ({}, "needs a name"),
        ([], "must be an object"),
    ],
    ids=[
        "name-not-a-dns-label", "empty-namespace", "cc-negative", "cc-a-string", "cc-a-bool", "timeout-0",
        "timeout-a-string", "timeout-inf", "queue-bound-0", "unknown-field", "no-name", "not-an-object",
    ],
)
def test_bad_documents_name_the_field(doc, fragment):
    with pytest.raises(ActivatorConfigError) as err:
        RevisionConfig.from_json(doc)
    assert fragment in str(err.value)


def test_key_mismatch_is_refused():
    with pytest.raises(ActivatorConfigError, match="does not match its key"):
        RevisionConfig.from_json({"name": "a"}, name="b")
    assert RevisionConfig.from_json({}, name="b").name == "b"


@pytest.mark.parametrize(
    ("cc", "pods", "bound"),
    [
        (1, 0, MIN_QUEUE_BOUND),  # cold cc=1 revision still holds a burst of 1000
        (10, 0, 1000),
        (10, 30, 3000),
        (0, 0, 1000),  # unlimited cc is sized as 100 per pod
        (0, 2, 2000),
    ],
    ids=["cc1-cold", "cc10-cold", "cc10-30-pods", "unlimited-cold", "unlimited-2-pods"],
)
def test_default_queue_bound_grows_with_revision_capacity(cc, pods, bound):
    assert default_queue_bound(cc, pods) == bound


def test_explicit_queue_bound_overrides_the_default():
    assert RevisionConfig("h", queue_bound=3).queue_bound_for(pods=10) == 3
    assert RevisionConfig("h", container_concurrency=10).queue_bound_for(pods=30) == 3000
