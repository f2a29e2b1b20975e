"""Reading KServe's InferenceGraph: KServe's own examples load unchanged; each mistake is refused
with the file, the field path and the fix."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from tables import named

from graph.spec import GraphSpecError, load_graph_text, parse_graph

# KServe's docs' dog-breed pipeline, as a user applies it to a cluster.
DOG_BREED = """
apiVersion: serving.kserve.io/v1alpha1
kind: InferenceGraph
metadata:
  name: dog-breed-pipeline
spec:
  nodes:
    root:
      routerType: Sequence
      steps:
      - serviceName: cat-dog-classifier
        name: cat_dog_classifier
      - serviceName: dog-breed-classifier
        name: dog_breed_classifier
        data: $request
        condition: "[@this].#(predictions.0==\\"dog\\")"
  resources:
    requests: {cpu: 100m}
"""


def graph_doc(**nodes: Any) -> dict[str, Any]:
    return {"apiVersion": "serving.kserve.io/v1alpha1", "kind": "InferenceGraph", "metadata": {"name": "g"},
            "spec": {"nodes": nodes}}  # fmt: skip


def svc(name: str, **more: Any) -> dict[str, Any]:
    return {"serviceName": name, **more}


def test_kserve_dog_breed_example_loads_unchanged():
    graph = load_graph_text(DOG_BREED, "dog.yaml")
    root = graph.nodes["root"]
    assert graph.name == "dog-breed-pipeline" and root.router_type == "Sequence"
    assert [s.key for s in root.steps] == ["cat_dog_classifier", "dog_breed_classifier"]
    assert root.steps[1].condition == '[@this].#(predictions.0=="dog")'
    assert root.steps[1].service_name == "dog-breed-classifier" and not root.steps[1].hard


def test_every_node_type_and_field_is_read():
    doc = graph_doc(
        root={"routerType": "Sequence", "steps": [
            {"nodeName": "split", "name": "a"},
            {"serviceUrl": "http://127.0.0.1:9/x", "data": "$response", "dependency": "Hard", "name": "b"},
        ]},
        split={"routerType": "Splitter", "steps": [svc("m1", weight=30), svc("m2", weight=70)]},
        both={"routerType": "Ensemble", "steps": [svc("m1"), svc("m2")]},
        pick={"routerType": "Switch", "steps": [svc("m1", condition="instances.0")]},
    )  # fmt: skip
    doc["spec"]["timeout"] = 30
    doc["spec"]["routerTimeouts"] = {"serviceClient": 5, "serverRead": 60}
    doc["metadata"]["annotations"] = {"kpa-emulator.dev/protocol": "v2"}
    graph = parse_graph(doc, "g.yaml")
    assert (graph.timeout, graph.step_timeout, graph.protocol) == (30.0, 5.0, "v2")
    assert [s.weight for s in graph.nodes["split"].steps] == [30, 70]
    assert graph.nodes["root"].steps[1].hard and graph.nodes["root"].steps[1].data == "$response"
    assert [s.key for s in graph.nodes["both"].steps] == ["0", "1"]  # unnamed: keyed by index, as KServe


def _mutate(path: str, value: Any) -> dict[str, Any]:
    """A valid two-node graph with one field set (``value`` None deletes it)."""
    doc = graph_doc(
        root={"routerType": "Sequence", "steps": [svc("m1"), {"nodeName": "pick", "data": "$response"}]},
        pick={"routerType": "Switch", "steps": [svc("m2", condition="predictions.0")]},
    )
    doc = copy.deepcopy(doc)
    *parents, last = path.split("/")
    here: Any = doc
    for part in parents:
        here = here[int(part)] if isinstance(here, list) else here[part]
    if value is None:
        del here[last]
    elif isinstance(here, list):
        here[int(last)] = value
    else:
        here[last] = value
    return doc


MISTAKES = [
    ("missing root", "spec/nodes/root", None, "spec.nodes: has no node named 'root'"),
    ("unknown routerType, with a hint", "spec/nodes/root/routerType", "Sequense",
     "spec.nodes.root.routerType: 'Sequense': did you mean 'Sequence'?"),
    ("step with no target", "spec/nodes/root/steps/0", {"name": "x"},
     "spec.nodes.root.steps[0]: names no target; give exactly one of serviceName, serviceUrl, nodeName"),
    ("step with two targets", "spec/nodes/root/steps/0", {"serviceName": "m1", "nodeName": "pick"},
     "spec.nodes.root.steps[0]: gives both serviceName and nodeName; give exactly one"),
    ("nodeName to an unknown node", "spec/nodes/root/steps/1/nodeName", "pik",
     "spec.nodes.root.steps[1].nodeName: 'pik' is not a node of spec.nodes (nodes: pick, root)"),
    ("cycle", "spec/nodes/pick/steps/0", {"nodeName": "root", "condition": "a"},
     "nodeName steps form a cycle (root -> pick -> root); break it"),
    ("unknown step field, with a hint", "spec/nodes/root/steps/0/conditon", "a",
     "spec.nodes.root.steps[0].conditon: unknown field; did you mean 'condition'?"),
    ("bad data", "spec/nodes/root/steps/1/data", "$responses", "steps[1].data: '$responses': use $request"),
    ("bad dependency", "spec/nodes/root/steps/0/dependency", "hard",
     "steps[0].dependency: 'hard': use Hard or Soft"),
    ("Switch step without condition", "spec/nodes/pick/steps/0/condition", None,
     "spec.nodes.pick.steps[0].condition: missing; a Switch step runs only when its condition matches"),
    ("unbalanced condition", "spec/nodes/pick/steps/0/condition", '[@this].#(predictions.0=="dog"',
     "condition: '[@this].#(predictions.0==\"dog\"' misses ')' at its end"),
    ("condition on a Sequence's first step", "spec/nodes/root/steps/0/condition", "a",
     "spec.nodes.root.steps[0].condition: the first step of a Sequence has no previous response"),
    ("weight outside a Splitter", "spec/nodes/root/steps/0/weight", 50,
     "steps[0].weight: only a Splitter uses weights (this node is a Sequence); remove it"),
    ("https serviceUrl", "spec/nodes/root/steps/0", {"serviceUrl": "https://m1/v1"},
     "steps[0].serviceUrl: 'https://m1/v1': must be an http:// URL with a host; https is not supported"),
    ("serviceName not a revision name", "spec/nodes/root/steps/0", {"serviceName": "Cat_Dog"},
     "steps[0].serviceName: 'Cat_Dog': must be a revision name"),
    ("duplicate step names", "spec/nodes/root/steps/1", {"serviceName": "m2", "name": "0"},
     "steps[1].name: '0' is also spec.nodes.root.steps[0]'s name"),
    ("timeout not whole seconds", "spec/timeout", "30s",
     "spec.timeout: '30s': must be a whole number of seconds"),
    ("wrong kind", "kind", "InferenceService", "kind: must be kind: InferenceGraph"),
    ("unknown protocol", "metadata/annotations", {"kpa-emulator.dev/protocol": "grpc"},
     "[kpa-emulator.dev/protocol]: 'grpc': use v1 or v2"),
    ("empty steps", "spec/nodes/pick/steps", [], "spec.nodes.pick.steps: must be a non-empty list"),
]  # fmt: skip


@pytest.mark.parametrize(("label", "path", "value", "message"), named(MISTAKES))
def test_a_mistake_is_refused_naming_the_field_and_the_fix(label, path, value, message):
    with pytest.raises(GraphSpecError) as caught:
        parse_graph(_mutate(path, value), "g.yaml")
    assert str(caught.value).startswith("g.yaml: ") and message in str(caught.value)


SPLITS = [
    ("sum under 100", [30, 60], "the weights sum to 90; a Splitter's must sum to 100"),
    ("sum over 100", [50, 60], "the weights sum to 110"),
    ("a step without weight", [100, None], "steps[1].weight: missing; every step of a Splitter needs"),
    ("negative weight", [100, -10], "steps[1].weight: -10: must be a whole number in [0, 100]"),
]


@pytest.mark.parametrize(("label", "weights", "message"), named(SPLITS))
def test_splitter_weights_must_sum_to_100(label, weights, message):
    steps = [svc(f"m{i}", **({"weight": w} if w is not None else {})) for i, w in enumerate(weights)]
    with pytest.raises(GraphSpecError, match=message.replace("[", r"\[").replace("]", r"\]")):
        parse_graph(graph_doc(root={"routerType": "Splitter", "steps": steps}), "g.yaml")


def test_not_yaml_is_refused_with_its_line():
    with pytest.raises(GraphSpecError, match=r"^g.yaml:\d+: not valid YAML"):
        load_graph_text("kind: InferenceGraph\nspec:\n  nodes: [a\n", "g.yaml")
