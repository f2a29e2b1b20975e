"""The seed's cat/dog InferenceGraph on a real `kpa up` stack: the router is a revision (``graph:`` in the
stack file), its two steps are `kpa predictor` revisions serving small real torch models, and all three
start at zero pods, so the graph's first request wakes the router, which wakes each step it calls
through the stack's entry (the activator holds each request until its pod is ready)."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import httpx
import pytest
from stack_fixtures import run, running_stack

from autoscaler.stat import RevisionKey
from kpa.graph_demo import DEMO_GRAPH as GRAPH
from predictor.pipeline_models import write_pipeline_repository as write_repository

pytestmark = pytest.mark.timeout(240)



def predictor(name: str, repository: Path, cache: Path) -> str:
    command = [sys.executable, "-m", "kpa", "predictor", "--model-repository", str(repository),
               "--cache-dir", str(cache)]  # fmt: skip
    return (
        f"  - name: {name}\n    command: {json.dumps(command)}\n    startupTimeoutSeconds: 60\n"
        "    readinessProbe: {httpGet: {path: /v2/health/ready}}\n"
        "    annotations: {autoscaling.knative.dev/initial-scale: '0'}\n"
    )


def stack_text(tmp_path: Path) -> str:
    graph_file = tmp_path / "graph.yaml"
    graph_file.write_text(GRAPH)
    config = {"stable-window": "6s", "scale-to-zero-grace-period": "1s", "allow-zero-initial-scale": "true"}
    lines = ["config:", *(f"  {k}: '{v}'" for k, v in config.items()), "revisions:"]
    lines.append(f"  - name: pipeline\n    graph: {graph_file}\n    timeoutSeconds: 120\n"
                 "    annotations: {autoscaling.knative.dev/initial-scale: '0'}\n")  # fmt: skip
    for name in ("cat-dog", "dog-breed"):
        lines.append(predictor(name, write_repository(tmp_path / "models", name), tmp_path / "cache"))
    return "\n".join(lines)


def test_the_cat_dog_graph_answers_through_steps_woken_from_zero(tmp_path):
    async def body():
        async with running_stack(stack_text(tmp_path), tmp_path / "logs") as stack:
            ready = {name: stack.actuator.pods(RevisionKey("default", name)) for name in
                     ("pipeline", "cat-dog", "dog-breed")}  # fmt: skip
            assert ready == {"pipeline": [], "cat-dog": [], "dog-breed": []}, "every revision starts at zero"
            async with httpx.AsyncClient(base_url=stack.entry_url, timeout=150.0) as client:
                headers = {"Host": "pipeline"}
                started = time.monotonic()
                dog = await client.post("/", json={"instances": [[0.0, 0.1, 2.0, 0.5]]}, headers=headers)
                cold = time.monotonic() - started
                assert dog.status_code == 200, dog.text
                # dog (x2 + x3 > x0 + x1), so the breed model ran on the original request: x1 + x2 wins.
                assert dog.json() == {"predictions": [[1]]}
                assert dog.headers["content-type"] == "application/json"
                cat = await client.post("/", json={"instances": [[3.0, 1.0, 0.0, 0.5]]}, headers=headers)
                # cat: the condition does not match, so the answer is the cat/dog model's own.
                assert (cat.status_code, cat.json()) == (200, {"predictions": [[0]]})
                started = time.monotonic()
                for _ in range(20):
                    assert (
                        await client.post("/", json={"instances": [[0, 0, 1, 1]]}, headers=headers)
                    ).json() == {"predictions": [[1]]}
                warm = (time.monotonic() - started) / 20
            print(f"cat/dog graph from zero: first answer {cold:.1f} s; warm: {warm * 1000:.1f} ms a request")
            for name in ("pipeline", "cat-dog", "dog-breed"):
                assert stack.actuator.pods(RevisionKey("default", name)), f"{name} was never woken"

    run(body())
