"""The InferenceGraph router on loopback against small real step apps: each node type's semantics as
KServe's router has them, Hard and Soft steps, timeouts, header propagation, bounds and /metrics."""

from __future__ import annotations

import asyncio
import json
import math
import time

import pytest
from graph_fixtures import graph_doc, one_node, running_router, step_app

pytestmark = pytest.mark.timeout(60)

DOG = '[@this].#(predictions.0=="dog")'


def run(coro) -> None:
    asyncio.run(coro)


def test_sequence_passes_the_request_or_the_previous_response_as_each_step_says():
    async def body():
        async with step_app() as app:
            steps = [{"serviceUrl": app.url("/tag/a")},
                     {"serviceUrl": app.url("/tag/b"), "data": "$response"},
                     {"serviceUrl": app.url("/tag/c"), "data": "$request"}]  # fmt: skip
            doc = one_node("Sequence", steps[:2])
            async with running_router(doc) as router:
                answer = await router.post({"x": 1})
                assert answer.status_code == 200
                assert answer.json() == {"from": "b", "input": {"from": "a", "input": {"x": 1}}}
            doc = one_node("Sequence", steps)
            async with running_router(doc) as router:
                assert (await router.post({"x": 2})).json() == {"from": "c", "input": {"x": 2}}

    run(body())


def test_the_dog_breed_pipeline_runs_the_second_step_only_for_a_dog():
    """KServe's docs example: a Sequence whose second step has the condition on the first's answer."""

    async def body():
        async with step_app() as app:
            for label, expected in (("dog", {"from": "breed", "input": {"image": 1}}),
                                    ("cat", {"predictions": ["cat"]})):  # fmt: skip
                app.seen.clear()
                steps = [{"serviceUrl": app.url(f"/label/{label}"), "name": "cat_dog_classifier"},
                         {"serviceUrl": app.url("/tag/breed"), "name": "dog_breed_classifier",
                          "data": "$request", "condition": DOG}]  # fmt: skip
                async with running_router(one_node("Sequence", steps)) as r:
                    answer = await r.post({"image": 1})
                assert (answer.status_code, answer.json()) == (200, expected)
                assert app.paths() == [f"/label/{label}"] + (["/tag/breed"] if label == "dog" else [])

    run(body())


def test_switch_takes_the_first_matching_step_and_answers_404_when_none_matches():
    async def body():
        async with step_app() as app:
            steps = [{"serviceUrl": app.url("/tag/cat"), "condition": '[@this].#(kind=="cat")'},
                     {"serviceUrl": app.url("/tag/dog"), "condition": '[@this].#(kind=="dog")'}]  # fmt: skip
            async with running_router(one_node("Switch", steps)) as router:
                assert (await router.post({"kind": "dog"})).json()["from"] == "dog"
                none = await router.post({"kind": "bird"})
                assert none.status_code == 404
                assert none.json()["error"] == "Failed to process request"
                assert "none of the steps' conditions matched" in none.json()["cause"]
            assert app.paths() == ["/tag/dog"]

    run(body())


def test_ensemble_merges_every_answer_keyed_by_step_name_or_index():
    async def body():
        async with step_app() as app:
            steps = [{"serviceUrl": app.url("/label/dog"), "name": "resnet"},
                     {"serviceUrl": app.url("/label/cat")}]  # fmt: skip
            async with running_router(one_node("Ensemble", steps)) as router:
                answer = await router.post()
            assert answer.json() == {"resnet": {"predictions": ["dog"]}, "1": {"predictions": ["cat"]}}
            assert answer.headers["content-type"] == "application/json"

    run(body())


def test_splitter_sends_2000_requests_30_70_within_binomial_tolerance():
    async def body():
        async with step_app() as app:
            steps = [{"serviceUrl": app.url("/tag/a"), "weight": 30},
                     {"serviceUrl": app.url("/tag/b"), "weight": 70}]  # fmt: skip
            n = 2000
            async with running_router(one_node("Splitter", steps)) as router:
                gate = asyncio.Semaphore(16)

                async def one() -> int:
                    async with gate:
                        return (await router.post()).status_code

                statuses = await asyncio.gather(*(one() for _ in range(n)))
            assert set(statuses) == {200}
            to_a = app.paths().count("/tag/a")
            bound = 5 * math.sqrt(n * 0.3 * 0.7)  # five standard deviations: a false alarm ~1 in 1.7 million
            print(f"splitter 30/70: {to_a}/{n} = {to_a / n:.3f} to the 30 step")
            assert abs(to_a - 0.3 * n) < bound and to_a + app.paths().count("/tag/b") == n

    run(body())


def test_a_failing_hard_step_fails_the_graph_with_its_status_and_body():
    async def body():
        async with step_app() as app:
            steps = [{"serviceUrl": app.url("/fail/503"), "dependency": "Hard"},
                     {"serviceUrl": app.url("/tag/next"), "data": "$response"}]  # fmt: skip
            async with running_router(one_node("Sequence", steps)) as router:
                answer = await router.post()
            assert (answer.status_code, answer.json()) == (503, {"error": "boom"})
            assert app.paths() == ["/fail/503"]
            ensemble = [{"serviceUrl": app.url("/label/dog"), "name": "ok"},
                        {"serviceUrl": app.url("/fail/429"), "dependency": "Hard"}]  # fmt: skip
            async with running_router(one_node("Ensemble", ensemble)) as r:
                answer = await r.post()
            assert (answer.status_code, answer.json()) == (429, {"error": "boom"})

    run(body())


def test_a_failing_soft_step_is_passed_on_and_the_graph_goes_on():
    async def body():
        async with step_app() as app:
            steps = [{"serviceUrl": app.url("/fail/500"), "dependency": "Soft"},
                     {"serviceUrl": app.url("/tag/next"), "data": "$response"}]  # fmt: skip
            async with running_router(one_node("Sequence", steps)) as router:
                answer = await router.post()
            assert (answer.status_code, answer.json()) == (200, {"from": "next", "input": {"error": "boom"}})
            ensemble = [{"serviceUrl": app.url("/label/dog"), "name": "ok"},
                        {"serviceUrl": app.url("/fail/500"), "name": "soft"}]  # fmt: skip
            async with running_router(one_node("Ensemble", ensemble)) as r:
                answer = await r.post()
            assert (answer.status_code, answer.json()["soft"]) == (200, {"error": "boom"})

    run(body())


def test_a_step_slower_than_the_timeouts_is_answered_504_in_time():
    async def body():
        async with step_app() as app:
            steps = [{"serviceUrl": app.url("/slow/5")}]
            client_timeout = {"routerTimeouts": {"serviceClient": 1}}
            for spec, cause in (({"timeout": 1}, "spec.timeout"),
                                (client_timeout, "spec.routerTimeouts.serviceClient")):  # fmt: skip
                doc = one_node("Sequence", steps, **spec)
                async with running_router(doc) as router:
                    started = time.monotonic()
                    answer = await router.post()
                    took = time.monotonic() - started
                assert answer.status_code == 504 and cause in answer.json()["cause"]
                assert 1.0 <= took < 4.0, f"answered after {took:.2f} s"

    run(body())


def test_node_name_chains_nodes_with_the_previous_response():
    async def body():
        async with step_app() as app:
            nodes = {
                "root": {"routerType": "Sequence", "steps": [
                    {"serviceUrl": app.url("/label/dog")},
                    {"nodeName": "breed", "data": "$response"}]},
                "breed": {"routerType": "Switch", "steps": [
                    {"serviceUrl": app.url("/tag/cat-breed"), "condition": '[@this].#(predictions.0=="cat")'},
                    {"serviceUrl": app.url("/tag/dog-breed"), "condition": DOG}]},
            }  # fmt: skip
            async with running_router(graph_doc(nodes)) as router:
                answer = await router.post()
                metrics = (await router.client.get(router.url + "/metrics")).text
            assert answer.json() == {"from": "dog-breed", "input": {"predictions": ["dog"]}}
            assert 'kpa_graph_requests_total{code="200",node="root"} 1.0' in metrics
            assert 'kpa_graph_requests_total{code="200",node="breed"} 1.0' in metrics
            assert 'kpa_graph_node_seconds_count{node="breed"} 1.0' in metrics

    run(body())


def test_matching_request_headers_reach_every_step_and_step_headers_do_not_reach_the_client():
    async def body():
        async with step_app() as app:
            steps = [{"serviceUrl": app.url("/tag/a")}, {"serviceUrl": app.url("/tag/b")}]
            doc = one_node("Sequence", steps)
            async with running_router(doc, propagate=["X-Custom-.*", "Authorization"]) as router:
                headers = {"X-Custom-Id": "42", "Authorization": "Bearer t", "X-Other": "no"}
                answer = await router.post(headers=headers)
            for seen in app.seen:
                assert (seen.headers["x-custom-id"], seen.headers["authorization"]) == ("42", "Bearer t")
                assert "x-other" not in seen.headers and seen.headers["content-type"] == "application/json"
            assert "x-step" not in answer.headers and answer.headers["content-type"] == "application/json"

    run(body())


def test_a_step_that_cannot_be_reached_fails_the_graph_502_naming_the_step():
    async def body():
        async with step_app() as app:
            dead = app.url("/x").replace(str(app.port), "1")  # port 1: nothing listens
            steps = [{"serviceUrl": dead, "name": "gone", "dependency": "Soft"}]
            async with running_router(one_node("Sequence", steps)) as router:
                answer = await router.post()
            assert answer.status_code == 502
            cause = answer.json()["cause"]
            assert "step 'gone' (spec.nodes.root.steps[0]) calling http://127.0.0.1:1/x" in cause

    run(body())


def test_bodies_past_the_bound_are_refused_413_and_oversized_answers_502():
    async def body():
        async with step_app() as app:
            steps = [{"serviceUrl": app.url("/tag/a")}]
            doc = one_node("Sequence", steps)
            async with running_router(doc, max_body_bytes=200) as router:
                assert (await router.post({"x": "y" * 300})).status_code == 413
                answer = await router.post({"x": "y" * 190})  # 199 bytes; the step echoes it back, with more
                assert answer.status_code == 502 and "larger than 200 bytes" in answer.json()["cause"]
                assert json.loads(app.seen[0].body) == {"x": "y" * 190}

    run(body())
