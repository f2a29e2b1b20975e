"""A `kpa up` stack file's ``graph:`` revision: the router runs as the revision's user container, its
graph checked when the stack file is read, with errors naming the stack file's line and the graph's field."""

from __future__ import annotations

import sys

import pytest

from localbackend.stack_file import StackConfigError, parse_stack

GRAPH = """apiVersion: serving.kserve.io/v1alpha1
kind: InferenceGraph
spec:
  nodes:
    root: {routerType: Sequence, steps: [{serviceName: cat-dog}]}
"""


def test_a_graph_revision_runs_kpa_graph_on_the_file_beside_the_stack_file(tmp_path):
    (tmp_path / "graph.yaml").write_text(GRAPH)
    stack = parse_stack("revisions:\n  - {name: pipeline, graph: graph.yaml}\n", "stack.yaml", tmp_path)
    assert stack.revision("pipeline").command == (
        sys.executable, "-m", "kpa", "graph", str(tmp_path / "graph.yaml"),
    )  # fmt: skip


MISTAKES = [
    ("revisions:\n  - {name: p, graph: graph.yaml, command: x}\n",
     "stack.yaml:2: revisions[0]: gives both 'command' and 'graph'; give the user container's 'command', "
     "or 'graph: FILE'"),
    ("revisions:\n  - {name: p, graph: missing.yaml}\n",
     'stack.yaml:2: revisions[0].graph="missing.yaml": cannot read'),
    ("revisions:\n  - {name: p, graph: bad.yaml}\n",
     "stack.yaml:2: revisions[0].graph: " + "{dir}/bad.yaml: spec.nodes: has no node named 'root'"),
]  # fmt: skip


@pytest.mark.parametrize(("text", "message"), MISTAKES)
def test_a_bad_graph_revision_is_refused_naming_the_line_and_the_field(tmp_path, text, message):
    (tmp_path / "graph.yaml").write_text(GRAPH)
    (tmp_path / "bad.yaml").write_text(GRAPH.replace("root:", "start:"))
    with pytest.raises(StackConfigError) as caught:
        parse_stack(text, "stack.yaml", tmp_path)
    assert message.format(dir=tmp_path) in str(caught.value)


def test_the_written_demo_is_a_valid_stack_whose_graph_names_its_two_model_revisions(tmp_path):
    from kpa.graph_demo import write_demo
    from localbackend.stack_file import load_stack

    stack_file = write_demo(tmp_path / "demo")
    stack = load_stack(stack_file)
    assert [r.name for r in stack.revisions] == ["pipeline", "cat-dog", "dog-breed"]
    assert all(r.settings.initial_scale == 0 for r in stack.revisions)  # the first request wakes each
    for name in ("cat-dog", "dog-breed"):
        assert (tmp_path / "demo" / "models" / name / name / "1" / "model.pt").is_file()
        assert f"models/{name}" in " ".join(stack.revision(name).command)
