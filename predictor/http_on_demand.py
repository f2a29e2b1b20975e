"""Inference routes on a model held for the request: loaded on demand, released when answered.

``with_model`` is how the REST handlers reach a model: it holds the served version through the
manager (``ModelManager.hold``: at once on a hit; after the model's load on a miss, when the predictor
runs with a budget), answers with it, and releases it once the answer is complete — so the model is
never unloaded under a request. An answer that waited for a load carries ``X-Kpa-Model-Load: <ms>``
(milliseconds spent waiting, one decimal), as the activator's ``X-Kpa-Cold-Start`` tells a request
that waited for a pod; an answer from a model already loaded has no such header.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from predictor.model_entry import Held
from predictor.on_demand import OnDemandLoading
from predictor.serving import ModelVersion

MODEL_LOAD_HEADER = b"x-kpa-model-load"
Response = tuple[int, bytes, list[tuple[bytes, bytes]]]
Answer = Callable[[ModelVersion], Response | Awaitable[Response]]


def with_model(
    manager: OnDemandLoading, name: str, version: str | None, answer: Answer
) -> Response | Awaitable[Response]:
    """``answer(model)`` with the model held throughout; synchronous when the model is loaded and the
    answer is."""
    held = manager.hold(name, version)
    if isinstance(held, Held):
        return _answer(held, answer)
    return _after_load(held, answer)


def _answer(held: Held, answer: Answer) -> Response | Awaitable[Response]:
    try:
        outcome = answer(held.version)
    except BaseException:
        held.release()
        raise
    if isinstance(outcome, tuple):
        held.release()
        return _marked(outcome, held)
    return _release_when_done(held, outcome)


async def _release_when_done(held: Held, outcome: Awaitable[Response]) -> Response:
    try:
        return _marked(await outcome, held)
    finally:
        held.release()


async def _after_load(pending: Awaitable[Held], answer: Answer) -> Response:
    outcome = _answer(await pending, answer)
    return outcome if isinstance(outcome, tuple) else await outcome


def _marked(response: Response, held: Held) -> Response:
    if held.load_wait_s is None:
        return response
    status, body, headers = response
    return status, body, [*headers, (MODEL_LOAD_HEADER, b"%.1f" % (held.load_wait_s * 1e3))]
