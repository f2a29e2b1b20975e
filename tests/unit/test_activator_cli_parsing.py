"""`kpa activator` flag parsing: durations, --revision specs and revision files."""

import pytest
from tables import named

from activator.cli import load_revisions_file, parse_duration, parse_revision_spec
from activator.config import ActivatorConfigError, RevisionConfig


@pytest.mark.parametrize(
    ("text", "seconds"),
    named(
        [("0.2", 0.2), ("0.2s", 0.2), ("200ms", 0.2), (" 1S ", 1.0), ("1m30s", 90.0), ("1.5h", 5400.0)],
        lambda text, _: text,
    ),
)
def test_durations_accept_seconds_and_go_durations(text, seconds):
    assert parse_duration(text, "--probe-frequency") == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["abc", "0", "-1s", "inf", "ms", "1x", "0s"])
def test_bad_durations_name_the_flag(text):
    with pytest.raises(ActivatorConfigError, match="--probe-timeout="):
        parse_duration(text, "--probe-timeout")


@pytest.mark.parametrize(
    ("spec", "config", "endpoints"),
    [
        ("hello", RevisionConfig("hello"), []),
        ("hello.ml", RevisionConfig("hello", "ml"), []),
        (
            "p.ml:cc=2,timeout=30,queue-bound=5,endpoints=127.0.0.1:9001+127.0.0.1:9002",
            RevisionConfig("p", "ml", 2, 30.0, 5),
            ["127.0.0.1:9001", "127.0.0.1:9002"],
        ),
    ],
    ids=["name-only", "name-and-namespace", "every-option"],
)
def test_revision_specs(spec, config, endpoints):
    assert parse_revision_spec(spec) == (config, endpoints)


def test_revisions_file_takes_a_list_or_a_revisions_key(tmp_path):
    listed = tmp_path / "a.yaml"
    listed.write_text("- {name: a, container_concurrency: 1, endpoints: ['127.0.0.1:1']}\n")
    keyed = tmp_path / "b.json"
    keyed.write_text('{"revisions": [{"name": "b", "namespace": "ml"}]}')
    first = (RevisionConfig("a", container_concurrency=1), ["127.0.0.1:1"], None)
    assert load_revisions_file(listed) == [first]
    assert load_revisions_file(keyed) == [(RevisionConfig("b", "ml"), [], None)]


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        ("name: a\n", "expected a list of revisions"),
        ("- 3\n", "entry 0 must be an object"),
        ("- {name: a, endpoints: x}\n", "entry 0 endpoints must be a list"),
        ("- {name: a, container_concurrency: -2}\n", "entry 0: revision a container_concurrency=-2"),
        ("- [unclosed\n", "cannot read it"),
    ],
    ids=["not-a-list", "entry-not-an-object", "endpoints-not-a-list", "bad-cc", "not-yaml"],
)
def test_bad_revisions_files_say_where(tmp_path, content, fragment):
    path = tmp_path / "r.yaml"
    path.write_text(content)
    with pytest.raises(ActivatorConfigError) as err:
        load_revisions_file(path)
    assert fragment in str(err.value)
