"""KServe's ``InferenceGraph`` (serving.kserve.io/v1alpha1) read from YAML and checked before serving.

The object is accepted as a user writes it for KServe: ``spec.nodes`` (a map with the entry node
``root``), each node a ``routerType`` (Sequence, Switch, Ensemble, Splitter) and ``steps``; each step
exactly one of ``serviceName`` / ``serviceUrl`` / ``nodeName``, with ``name``, ``data`` ($request or
$response), ``weight``, ``condition`` and ``dependency`` (Hard or Soft). ``spec.timeout`` (seconds) bounds
the whole graph and ``spec.routerTimeouts.serviceClient`` each step; the spec's deployment fields
(replicas, resources, affinity, ...) are for the router's Deployment and are ignored here.

KServe's webhook accepts some graphs its router can never run as meant (a Switch step without a
condition never matches; a weight outside a Splitter is ignored). Those are refused here, each error
naming the file, the field path and the fix, e.g.
``graph.yaml: spec.nodes.root.steps[1]: gives both serviceName and nodeName; give exactly one``.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import yaml

from graph.condition import problem

API_VERSION = "serving.kserve.io/v1alpha1"
KIND = "InferenceGraph"
ROOT = "root"
ROUTER_TYPES = ("Sequence", "Switch", "Ensemble", "Splitter")
TARGETS = ("serviceName", "serviceUrl", "nodeName")
STEP_KEYS = ("name", *TARGETS, "data", "weight", "condition", "dependency")
NODE_KEYS = ("routerType", "steps")
DATA = ("$request", "$response")
DEPENDENCIES = ("Soft", "Hard")
# Which inference protocol a serviceName step speaks (KServe reads it from the InferenceService).
PROTOCOL_ANNOTATION = "kpa-emulator.dev/protocol"
PROTOCOLS = ("v1", "v2")
MAX_NODES = 100
MAX_STEPS = 100  # per node
MAX_TIMEOUT_SECONDS = 3600
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


class GraphSpecError(ValueError):
    """The graph cannot be served; the message names the file, the field and the fix."""


@dataclass(frozen=True, slots=True)
class Step:
    """One step of a node; ``key`` names it in an Ensemble's merged answer and in errors."""

    key: str  # its name, else its index (as KServe keys unnamed Ensemble steps)
    path: str  # e.g. spec.nodes.root.steps[0]
    service_name: str | None = None
    service_url: str | None = None
    node_name: str | None = None
    data: str = "$request"
    weight: int | None = None
    condition: str | None = None
    hard: bool = False


@dataclass(frozen=True, slots=True)
class Node:
    name: str
    router_type: str
    steps: tuple[Step, ...]


@dataclass(frozen=True, slots=True)
class Graph:
    name: str
    nodes: Mapping[str, Node]
    timeout: float | None = None  # spec.timeout: the whole graph, seconds
    step_timeout: float | None = None  # spec.routerTimeouts.serviceClient: each step call, seconds
    protocol: str = "v1"  # what a serviceName step speaks: v1 (:predict) or v2 (/infer)


def load_graph_text(text: str, source: str = "<graph>") -> Graph:
    """Parse YAML text holding one InferenceGraph; raises GraphSpecError."""
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark else source
        raise GraphSpecError(f"{where}: not valid YAML: {getattr(exc, 'problem', None) or exc}") from None
    return parse_graph(doc, source)


def parse_graph(doc: Any, source: str = "<graph>") -> Graph:
    """Check an InferenceGraph object (as parsed from YAML or JSON) and return what the router runs."""
    return _Reader(source).graph(doc)


class _Reader:
    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, path: str, message: str) -> GraphSpecError:
        return GraphSpecError(f"{self.source}: {path}: {message}" if path else f"{self.source}: {message}")

    def mapping(self, value: Any, path: str, allowed: tuple[str, ...] | None) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(path, "must be a mapping")
        for key in value:
            if not isinstance(key, str):
                raise self.fail(path, f"key {key!r}: keys must be strings")
            if allowed is not None and key not in allowed:
                close = difflib.get_close_matches(key, allowed, n=1)
                hint = f"did you mean {close[0]!r}? " if close else ""
                raise self.fail(f"{path}.{key}", f"unknown field; {hint}allowed: {', '.join(allowed)}")
        return value

    def string(self, value: Any, path: str) -> str:
        if not isinstance(value, str) or not value:
            raise self.fail(path, f"{value!r}: must be a non-empty string")
        return value

    def seconds(self, value: Any, path: str) -> float:
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_TIMEOUT_SECONDS:
            raise self.fail(
                path, f"{value!r}: must be a whole number of seconds in [1, {MAX_TIMEOUT_SECONDS}]"
            )
        return float(value)

    def graph(self, doc: Any) -> Graph:
        if doc is None:
            raise self.fail("", f"is empty; it needs an {KIND} (apiVersion: {API_VERSION})")
        top = self.mapping(doc, "", None)
        if top.get("kind") != KIND or top.get("apiVersion") != API_VERSION:
            raise self.fail(
                "kind",
                f"must be kind: {KIND} with apiVersion: {API_VERSION} "
                f"(got kind {top.get('kind')!r}, apiVersion {top.get('apiVersion')!r})",
            )
        metadata = self.mapping(top.get("metadata") or {}, "metadata", None)
        annotations = self.mapping(metadata.get("annotations") or {}, "metadata.annotations", None)
        protocol = annotations.get(PROTOCOL_ANNOTATION, "v1")
        if protocol not in PROTOCOLS:
            raise self.fail(f"metadata.annotations[{PROTOCOL_ANNOTATION}]", f"{protocol!r}: use v1 or v2")
        spec = self.mapping(top.get("spec"), "spec", None)
        timeout = self.seconds(spec["timeout"], "spec.timeout") if "timeout" in spec else None
        step_timeout = None
        if "routerTimeouts" in spec:
            timeouts = self.mapping(spec["routerTimeouts"], "spec.routerTimeouts", None)
            if "serviceClient" in timeouts:
                step_timeout = self.seconds(timeouts["serviceClient"], "spec.routerTimeouts.serviceClient")
        nodes_doc = self.mapping(spec.get("nodes"), "spec.nodes", None)
        if ROOT not in nodes_doc:
            raise self.fail("spec.nodes", f"has no node named {ROOT!r}: the graph starts there; add it")
        if len(nodes_doc) > MAX_NODES:
            raise self.fail("spec.nodes", f"has {len(nodes_doc)} nodes; at most {MAX_NODES}")
        nodes = {name: self.node(name, value) for name, value in nodes_doc.items()}
        for node in nodes.values():
            for step in node.steps:
                if step.node_name is not None and step.node_name not in nodes:
                    raise self.fail(
                        f"{step.path}.nodeName",
                        f"{step.node_name!r} is not a node of spec.nodes "
                        f"(nodes: {', '.join(sorted(nodes))}); name one of them",
                    )
        _check_cycles(nodes, self)
        name = metadata.get("name") if isinstance(metadata.get("name"), str) else "graph"
        return Graph(str(name), nodes, timeout, step_timeout, protocol)

    def node(self, name: str, value: Any) -> Node:
        path = f"spec.nodes.{name}"
        fields = self.mapping(value, path, NODE_KEYS)
        router_type = fields.get("routerType")
        if router_type not in ROUTER_TYPES:
            close = difflib.get_close_matches(str(router_type), ROUTER_TYPES, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise self.fail(
                f"{path}.routerType", f"{router_type!r}: {hint}use one of {', '.join(ROUTER_TYPES)}"
            )
        steps_doc = fields.get("steps")
        if not isinstance(steps_doc, list) or not steps_doc:
            raise self.fail(f"{path}.steps", "must be a non-empty list of steps")
        if len(steps_doc) > MAX_STEPS:
            raise self.fail(f"{path}.steps", f"has {len(steps_doc)} steps; at most {MAX_STEPS}")
        steps = tuple(self.step(f"{path}.steps[{i}]", i, raw, router_type) for i, raw in enumerate(steps_doc))
        keys: dict[str, str] = {}
        for step in steps:
            if step.key in keys:
                raise self.fail(
                    f"{step.path}.name",
                    f"{step.key!r} is also {keys[step.key]}'s name; step names must differ within a node",
                )
            keys[step.key] = step.path
        if router_type == "Splitter":
            total = sum(step.weight or 0 for step in steps)
            if total != 100:
                raise self.fail(f"{path}.steps", f"the weights sum to {total}; a Splitter's must sum to 100")
        if router_type == "Sequence" and steps[0].condition is not None:
            raise self.fail(
                f"{steps[0].path}.condition",
                "the first step of a Sequence has no previous "
                "response to test; remove the condition or put the step after another",
            )
        return Node(name, router_type, steps)

    def step(self, path: str, index: int, value: Any, router_type: str) -> Step:
        fields = self.mapping(value, path, STEP_KEYS)
        given = [key for key in TARGETS if fields.get(key) not in (None, "")]
        if len(given) != 1:
            what = "names no target" if not given else f"gives both {' and '.join(given)}"
            raise self.fail(path, f"{what}; give exactly one of {', '.join(TARGETS)}")
        target = given[0]
        text = self.string(fields[target], f"{path}.{target}")
        if target == "serviceName" and (not _DNS_LABEL.match(text) or len(text) > 63):
            raise self.fail(f"{path}.serviceName", f"{text!r}: must be a revision name (a DNS label)")
        if target == "serviceUrl":
            self.url(text, f"{path}.serviceUrl")
        key = self.string(fields["name"], f"{path}.name") if "name" in fields else str(index)
        data = fields.get("data", "$request")
        if data not in DATA:
            raise self.fail(
                f"{path}.data",
                f"{data!r}: use $request (the node's input) or $response (the previous step's answer)",
            )
        dependency = fields.get("dependency", "Soft")
        if dependency not in DEPENDENCIES:
            raise self.fail(f"{path}.dependency", f"{dependency!r}: use Hard or Soft")
        weight = fields.get("weight")
        if weight is not None:
            if router_type != "Splitter":
                raise self.fail(
                    f"{path}.weight",
                    f"only a Splitter uses weights (this node is a {router_type}); remove it",
                )
            if isinstance(weight, bool) or not isinstance(weight, int) or not 0 <= weight <= 100:
                raise self.fail(f"{path}.weight", f"{weight!r}: must be a whole number in [0, 100]")
        elif router_type == "Splitter":
            raise self.fail(
                f"{path}.weight", "missing; every step of a Splitter needs a weight (they sum to 100)"
            )
        condition = fields.get("condition")
        if condition is not None:
            condition = self.string(condition, f"{path}.condition")
            if router_type not in ("Switch", "Sequence"):
                raise self.fail(
                    f"{path}.condition",
                    f"a {router_type} does not test conditions; remove it or make the node a Switch",
                )
            if (trouble := problem(condition)) is not None:
                raise self.fail(f"{path}.condition", f"{condition!r} {trouble}")
        elif router_type == "Switch":
            raise self.fail(
                f"{path}.condition", "missing; a Switch step runs only when its condition matches"
            )
        return Step(
            key, path,
            service_name=text if target == "serviceName" else None,
            service_url=text if target == "serviceUrl" else None,
            node_name=text if target == "nodeName" else None,
            data=data, weight=weight, condition=condition, hard=dependency == "Hard",
        )  # fmt: skip

    def url(self, text: str, path: str) -> None:
        parts = urlsplit(text)
        if parts.scheme != "http" or not parts.hostname:
            fix = (
                "https is not supported; call it through a plain-HTTP address"
                if parts.scheme == "https"
                else ""
            )
            raise self.fail(
                path, f"{text!r}: must be an http:// URL with a host" + (f"; {fix}" if fix else "")
            )
        try:
            parts.port  # noqa: B018 - raises on a bad port
        except ValueError:
            raise self.fail(path, f"{text!r}: the port is not a number in [0, 65535]") from None


def _check_cycles(nodes: Mapping[str, Node], reader: _Reader) -> None:
    """A nodeName chain that comes back to a node would recurse forever: refuse it, naming the loop."""
    done: set[str] = set()

    def visit(name: str, trail: list[str]) -> None:
        if name in trail:
            loop = " -> ".join([*trail[trail.index(name) :], name])
            raise reader.fail(f"spec.nodes.{name}", f"nodeName steps form a cycle ({loop}); break it")
        if name in done:
            return
        for step in nodes[name].steps:
            if step.node_name is not None:
                visit(step.node_name, [*trail, name])
        done.add(name)

    for name in nodes:
        visit(name, [])
