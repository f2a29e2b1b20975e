"""Runs a graph's nodes for one request, with KServe's router semantics; the calls themselves are
passed in (``call``), so this module knows nodes and steps, not sockets.

* **Sequence**: steps in order; a step with ``data: $response`` gets the previous step's answer (the
  first step always gets the node's input); a step's ``condition`` is tested on the previous answer,
  and when it finds nothing the node ends there with that answer (200). A Hard step answering non-2xx
  ends the node with its answer; a Soft one's answer (whatever its status) is passed on, and the
  node answers with the last step's status and body.
* **Switch**: the first step whose condition finds something in the node's input runs and its answer
  is the node's; none matching answers 404, as KServe's router does.
* **Splitter**: one step by weight (``draw`` in [0, 100)).
* **Ensemble**: every step at once; a Hard step answering non-2xx makes the node answer with it (the
  first such in step order), otherwise one JSON object of every answer keyed by step name (or index).
* A step that gives no HTTP answer at all (refused, cut, timed out) fails the whole graph with
  ``StepFailed`` (502, or 504 for a timeout) whatever its dependency — as KServe's router fails it
  (with 500 there).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from graph.condition import matches
from graph.routing import error_body, is_json, is_success, merge_ensemble, pick_switch, pick_weighted
from graph.spec import Graph, Node, Step


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    body: bytes


class StepFailed(Exception):
    """A step gave no HTTP answer; ``status`` (502 or 504) and ``cause`` are what the client is told."""

    def __init__(self, status: int, cause: str) -> None:
        super().__init__(cause)
        self.status = status
        self.cause = cause


Call = Callable[[Step, bytes], Awaitable[Answer]]  # a service step's call; raises StepFailed
Observe = Callable[[str, int, float], None]  # (node, status, seconds) once per node run


class Executor:
    def __init__(
        self,
        graph: Graph,
        call: Call,
        draw: Callable[[], int],
        observe: Observe | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.graph = graph
        self.call = call
        self.draw = draw
        self.observe = observe
        self.clock = clock

    async def run(self, node_name: str, body: bytes) -> Answer:
        """The node's answer to ``body``; raises StepFailed when a step gave no answer."""
        node = self.graph.nodes[node_name]
        started = self.clock()
        status = 500
        try:
            answer = await self._node(node, body)
            status = answer.status
            return answer
        except StepFailed as failed:
            status = failed.status
            raise
        finally:
            if self.observe is not None:
                self.observe(node_name, status, self.clock() - started)

    async def _node(self, node: Node, body: bytes) -> Answer:
        if node.router_type == "Sequence":
            return await self._sequence(node, body)
        if node.router_type == "Switch":
            step = pick_switch(node.steps, body)
            if step is None:
                cause = f"node {node.name!r}: none of the steps' conditions matched its input"
                return Answer(404, error_body(cause))
            return await self._step(step, body)
        if node.router_type == "Splitter":
            return await self._step(pick_weighted(node.steps, self.draw()), body)
        return await self._ensemble(node, body)

    async def _sequence(self, node: Node, body: bytes) -> Answer:
        answer = Answer(200, body)
        for index, step in enumerate(node.steps):
            request = answer.body if step.data == "$response" and index > 0 else body
            if step.condition is not None:
                if not is_json(answer.body):
                    cause = f"{step.path}.condition: the previous step's answer is not JSON, so untestable"
                    return Answer(500, error_body(cause))
                if not matches(answer.body, step.condition):
                    return Answer(200, answer.body)
            answer = await self._step(step, request)
            if step.hard and not is_success(answer.status):
                return answer
        return answer

    async def _ensemble(self, node: Node, body: bytes) -> Answer:
        try:
            async with asyncio.TaskGroup() as group:  # a step without an answer cancels the others
                tasks = [group.create_task(self._step(step, body)) for step in node.steps]
        except ExceptionGroup as failed:
            raise failed.exceptions[0] from None
        answers = [task.result() for task in tasks]
        for step, answer in zip(node.steps, answers, strict=True):
            if step.hard and not is_success(answer.status):
                return answer
        return Answer(
            200, merge_ensemble([(s.key, a.body) for s, a in zip(node.steps, answers, strict=True)])
        )

    async def _step(self, step: Step, body: bytes) -> Answer:
        if step.node_name is not None:
            return await self.run(step.node_name, body)
        return await self.call(step, body)
