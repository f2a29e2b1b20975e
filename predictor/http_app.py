"""The HTTP face of the predictor: request routing and handlers for KServe V2, V1 and Triton extras.

Routes (``{v}`` optional everywhere it appears as ``[/versions/{v}]``):

    GET  /  /v2/health/live  /v2/health/ready  /v2  /v2/models
    GET  /v2/models/{m}[/versions/{v}]          metadata, incl. state, reason and backend
    GET  /v2/models/{m}[/versions/{v}]/ready    200 ready, 503 with the reason
    GET  /v2/models/{m}[/versions/{v}]/config   config.pbtxt as JSON (Triton)
    GET  /v2/models[/{m}[/versions/{v}]]/stats  request, execution and batch-size counts
    POST /v2/models/{m}[/versions/{v}]/infer    V2 inference, JSON or binary tensor extension
    POST /v2/repository/index                   every model and version with state and reason
    POST /v2/repository/models/{m}/load|unload
    GET  /v1/models  /v1/models/{m}   POST /v1/models/{m}:predict

Path segments are percent-decoded one by one, so ``%2F`` can never turn into a separator: a model name
that smuggles one is simply an invalid name (400). Errors are ``{"error": "..."}`` with 400 for bad
requests, 404 unknown model/version/route, 405 wrong method, 413 oversized body (also once inflated
from gzip or deflate), 503 not ready and 500 for a failing model; nothing a client sends can stop the
server.

The app is a handler of the HTTP engine (``httpengine``), which applies the same ``Limits`` as
every other server of ours (head size, body size, timeouts, connection cap) before a request gets
here; an answer that needs no waiting goes out from the handler call itself, without a task.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any
from urllib.parse import unquote

from httpengine.errors import ClientDisconnected, RequestRefused
from httpengine.limits import Limits
from httpengine.request import Request, inflate
from httpengine.response import Response as HttpResponse
from predictor import datatypes
from predictor.http_on_demand import with_model
from predictor.manager import ModelManager, ModelNotFound, ModelNotReady
from predictor.metrics import CONTENT_TYPE, PredictorMetrics, model_families, served_batch_sizes
from predictor.protocol import (
    HEADER_LENGTH,
    InferRequest,
    ProtocolError,
    Tensor,
    decode_infer_request,
    decode_v1_request,
    encode_error,
    encode_infer_response,
    encode_json,
    encode_v1_response,
)
from predictor.repository import InvalidName
from predictor.runners import InferenceError
from predictor.serving import ModelVersion
from predictor.signature import BoundInputs, bind_inputs, check_requested_outputs

log = logging.getLogger("predictor")

SERVER_NAME = "kpa-predictor"
SERVER_VERSION = "0.1.0"
EXTENSIONS = ["binary_tensor_data", "model_repository", "statistics"]
JSON = b"application/json"
INLINE_BODY_BYTES = 256 << 10  # larger bodies are decoded off the event loop (JSON parsing takes a while)
OCTET_STREAM = b"application/octet-stream"
HEADER_LENGTH_NAME = HEADER_LENGTH.encode()
Response = tuple[int, bytes, list[tuple[bytes, bytes]]]  # status, body, headers (no framing headers)
Decode = Callable[[], tuple[BoundInputs, Any]]  # request -> model inputs and what encoding needs of it
Encode = Callable[[Any, list], Response]  # (that, the model's outputs) -> the answer


class HTTPError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def json_response(doc: Any, status: int = 200) -> Response:
    return status, encode_json(doc), [(b"content-type", JSON)]


def error_response(status: int, message: str) -> Response:
    return status, encode_error(message), [(b"content-type", JSON)]


class PredictorApp:
    def __init__(self, manager: ModelManager, limits: Limits | None = None):
        self.manager = manager
        self.max_body_bytes = (limits or Limits()).max_body_bytes  # also the bound on an inflated body
        self.in_progress = 0  # requests being answered, on all connections
        self.metrics = PredictorMetrics(lambda: served_batch_sizes(manager), partial(model_families, manager))

    def __call__(self, request: Request, response: HttpResponse) -> Awaitable[None] | None:
        """The engine's handler: answers at once where no waiting is needed (most routes, and inference
        run inline), else returns an awaitable that answers."""
        if not request.body.complete:
            return self._after_body(request, response)
        return self._answer(request, response, request.body.take_buffered())

    async def _after_body(self, request: Request, response: HttpResponse) -> None:
        try:
            body = await request.body.read_all(self.max_body_bytes)  # the engine refuses more with 413
        except ClientDisconnected:
            return
        pending = self._answer(request, response, body)
        if pending is not None:
            await pending

    def _answer(self, request: Request, response: HttpResponse, body: bytes) -> Awaitable[None] | None:
        self.in_progress += 1
        try:
            outcome = self._dispatch(request, body)
        except Exception as exc:
            outcome = _error_response(request, exc)
        if isinstance(outcome, tuple):
            self.in_progress -= 1
            _send(response, outcome)
            return None
        return self._awaited(request, response, outcome)

    async def _awaited(self, request: Request, response: HttpResponse, outcome: Awaitable[Response]) -> None:
        try:
            # Shielded: a client that leaves cancels this wait, not the model's work (a batch it joined,
            # a version it holds), which ends as it would have.
            answer = await asyncio.shield(outcome)
        except Exception as exc:
            answer = _error_response(request, exc)
        finally:
            self.in_progress -= 1
        _send(response, answer)

    def _dispatch(self, request: Request, body: bytes) -> Response | Awaitable[Response]:
        method = request.method.decode("latin-1")
        path = request.target.split(b"?", 1)[0].decode("latin-1")
        parts = path.split("/")[1:]
        if "%" in path:
            try:
                parts = [unquote(p, errors="strict") for p in parts]
            except UnicodeDecodeError:
                raise HTTPError(400, f"path {path!r} is not valid percent-encoded UTF-8") from None
        if parts and parts[-1] == "":
            parts.pop()
        match parts:
            case [] | ["v2", "health", "live"]:
                _allow(method, "GET")
                return json_response({"status": "alive", "live": True})
            case ["v2", "health", "ready"]:
                _allow(method, "GET")
                ready = self.manager.ready
                return json_response({"ready": ready}, 200 if ready else 503)
            case ["v2"]:
                _allow(method, "GET")
                return json_response(
                    {"name": SERVER_NAME, "version": SERVER_VERSION, "extensions": EXTENSIONS}
                )
            case ["v2", "models"] | ["v1", "models"]:
                _allow(method, "GET")
                return json_response({"models": self.manager.names()})
            case ["metrics"]:
                _allow(method, "GET")
                return 200, self.metrics.render(), [(b"content-type", CONTENT_TYPE)]
            case ["v2", "models", "stats"]:
                _allow(method, "GET")
                return json_response({"model_stats": self._stats(None, None)})
            case ["v2", "models", name, "versions", version, *action] if len(action) <= 1:
                return self._model(request, method, body, name, version, action)
            case ["v2", "models", name, *action] if len(action) <= 1:
                return self._model(request, method, body, name, None, action)
            case ["v2", "repository", "index"]:
                _allow(method, "POST", "GET")
                return json_response(self.manager.index())
            case ["v2", "repository", "models", name, ("load" | "unload") as action]:
                _allow(method, "POST")
                return self._load_or_unload(name, action)
            case ["v1", "models", target]:
                if target.endswith(":predict"):
                    _allow(method, "POST")
                    name = target.removesuffix(":predict")
                    return self._inference(name, request, partial(self._v1_predict, name, request, body))
                _allow(method, "GET")
                return self._v1_status(target)
        raise HTTPError(404, f"no route for {method} {path}; see docs/predictor.md for the endpoints")

    def _model(
        self, request: Request, method: str, body: bytes, name: str, version: str | None, action: list[str]
    ) -> Response | Awaitable[Response]:
        match action:
            case []:
                _allow(method, "GET")
                return json_response(self._metadata(name, version))
            case ["ready"]:
                _allow(method, "GET")
                try:
                    self.manager.lookup(name, version)
                except ModelNotReady as exc:
                    return json_response({"name": name, "ready": False, "error": str(exc)}, 503)
                return json_response({"name": name, "ready": True})
            case ["infer"]:
                _allow(method, "POST")
                return self._inference(name, request, partial(self._v2_infer, name, version, request, body))
            case ["config"]:
                _allow(method, "GET")
                entry = self.manager.entry(name)
                if entry.config is None:
                    raise ModelNotReady(f"model {name!r} has no valid config: {entry.reason}")
                return json_response(dict(entry.config.document))
            case ["stats"]:
                _allow(method, "GET")
                return json_response({"model_stats": self._stats(name, version)})
        raise HTTPError(404, f"no route for {method} /v2/models/{name}/{'/'.join(action)}")

    async def _load_or_unload(self, name: str, action: str) -> Response:
        if action == "load":
            await self.manager.load(name)
        else:
            await self.manager.unload(name)
        return 200, b"", [(b"content-type", JSON)]

    # --- inference -------------------------------------------------------------------------------
    # ``_inference`` and ``_timed`` are the seams predictor.tracing's app overrides to add its spans.

    def _inference(
        self, name: str, request: Request, serve: Callable[[], Response | Awaitable[Response]]
    ) -> Response | Awaitable[Response]:
        """An inference request's answer, counted by status; errors answered as ``_error_response``."""
        return self.metrics.counted(name, serve, partial(_error_response, request))

    def _timed(self, model: ModelVersion, decode: Decode, encode: Encode) -> tuple[Decode, Encode]:
        """``decode`` and ``encode`` timed into the latency histograms (and the inference between them)."""
        return self.metrics.timed(model.name, decode, encode)

    def _v2_infer(
        self, name: str, version: str | None, request: Request, raw: bytes
    ) -> Response | Awaitable[Response]:
        header_length = _header_length(request)
        body = self._inflated(request, raw)
        return with_model(self.manager, name, version, partial(self._v2_answer, header_length, body))

    def _v2_answer(
        self, header_length: int | None, body: bytes, model: ModelVersion
    ) -> Response | Awaitable[Response]:
        def decode() -> tuple[BoundInputs, InferRequest]:
            request = decode_infer_request(body, header_length)
            if request.outputs is not None:
                check_requested_outputs(model.config, [o.name for o in request.outputs])
            return bind_inputs(model.config, request.inputs), request

        def encode(request: InferRequest, arrays: list) -> Response:
            wanted = [o.name for o in request.outputs] if request.outputs is not None else None
            tensors = [
                Tensor(spec.name, spec.datatype, array)
                for spec, array in zip(model.config.outputs, arrays, strict=True)
                if wanted is None or spec.name in wanted
            ]
            payload, json_length = encode_infer_response(
                model.name,
                str(model.version),
                request.id,
                tensors,
                [request.output_is_binary(t.name) for t in tensors],
            )
            if json_length is None:
                return 200, payload, [(b"content-type", JSON)]
            return (
                200,
                payload,
                [(b"content-type", OCTET_STREAM), (HEADER_LENGTH_NAME, b"%d" % json_length)],
            )

        return _run(model, *self._timed(model, decode, encode), self._may_inline(body))

    def _v1_predict(self, name: str, request: Request, raw: bytes) -> Response | Awaitable[Response]:
        body = self._inflated(request, raw)
        return with_model(self.manager, name, None, partial(self._v1_answer, body))

    def _v1_answer(self, body: bytes, model: ModelVersion) -> Response | Awaitable[Response]:
        types = {spec.name: datatypes.BY_NAME[spec.datatype] for spec in model.config.inputs}

        def decode() -> tuple[BoundInputs, bool]:
            request = decode_v1_request(body, types)
            return bind_inputs(model.config, request.inputs), request.row_format

        def encode(row_format: bool, arrays: list) -> Response:
            tensors = [
                Tensor(s.name, s.datatype, a) for s, a in zip(model.config.outputs, arrays, strict=True)
            ]
            return 200, encode_v1_response(tensors, row_format), [(b"content-type", JSON)]

        return _run(model, *self._timed(model, decode, encode), self._may_inline(body))

    def _may_inline(self, body: bytes) -> bool:
        """A request may run on the event loop thread only while it is the server's sole request in
        progress and its body is small: then nobody waits behind it but for a few milliseconds at most."""
        return len(body) <= INLINE_BODY_BYTES and self.in_progress == 1

    def _inflated(self, request: Request, body: bytes) -> bytes:
        """The request body, inflated when the client compressed it; never past the body limit (413)."""
        encoding = request.index.get(b"content-encoding")
        if encoding is None:
            return body
        try:
            return inflate(body, encoding, self.max_body_bytes)
        except RequestRefused as exc:
            raise HTTPError(exc.status, str(exc)) from None

    # --- status documents ------------------------------------------------------------------------

    def _metadata(self, name: str, version: str | None) -> dict[str, Any]:
        entry = self.manager.entry(name)
        doc: dict[str, Any] = {
            "name": name,
            "versions": [str(v) for v in sorted(entry.versions)],
            "platform": "",
            "inputs": [],
            "outputs": [],
            "state": entry.state,
            "reason": entry.reason,
        }
        if entry.config is not None:
            config = entry.config
            doc["platform"] = config.platform
            doc["inputs"] = [spec.metadata(config.batched) for spec in config.inputs]
            doc["outputs"] = [spec.metadata(config.batched) for spec in config.outputs]
            doc["max_batch_size"] = config.max_batch_size
        if entry.versions or version is not None:
            served = self.manager.lookup(name, version)
            doc["platform"] = doc["platform"] or served.platform
            doc.update(served.info.as_dict())
            doc["version"] = str(served.version)
        return doc

    def _v1_status(self, name: str) -> Response:
        try:
            self.manager.lookup(name)
        except ModelNotReady as exc:
            return json_response({"name": name, "ready": False, "error": str(exc)}, 503)
        return json_response({"name": name, "ready": True})

    def _stats(self, name: str | None, version: str | None) -> list[dict[str, Any]]:
        names = [name] if name is not None else self.manager.names()
        rows = []
        for model_name in names:
            entry = self.manager.entry(model_name)
            served = (
                entry.versions.values() if version is None else [self.manager.lookup(model_name, version)]
            )
            for served_version in sorted(served, key=lambda v: v.version):
                rows.append(
                    {
                        "name": model_name,
                        "version": str(served_version.version),
                        **served_version.stats.as_dict(),
                    }
                )
        return rows


def _run(
    model: ModelVersion,
    decode: Decode,
    encode: Encode,
    may_inline: bool,
) -> Response | Awaitable[Response]:
    """Decode, infer, encode. Without a batcher the whole pipeline runs on the model's worker thread (one
    hop, and a big JSON body never stalls the event loop); with one, requests meet in the loop's queue.

    A lone small request to a model without a batcher whose calls take a few milliseconds at most runs
    right here on the event loop thread: the two thread hops cost ~0.1 ms of wake-ups, a sizeable share
    of such a call, and with no other request in progress there is nothing for the loop to do meanwhile.

    A job handed to the workers is queued while the version is held, so a version retired meanwhile
    still runs it before its threads stop; the batcher's queue is not, so that path holds the version
    until its answer is back."""
    if model.batcher is not None:
        return _batched(model, decode, encode)
    with model.in_use():
        if not may_inline:

            def pipeline() -> Response:
                inputs, context = decode()
                return encode(context, model.execute(inputs.arrays))

            return model.call(pipeline)
        inputs, context = decode()
        if model.fits_inline(inputs.batch_size):
            return encode(context, model.execute(inputs.arrays))
        return model.call(lambda: encode(context, model.execute(inputs.arrays)))


async def _batched(model: ModelVersion, decode: Decode, encode: Encode) -> Response:
    assert model.batcher is not None
    with model.in_use():
        inputs, context = decode()
        return encode(context, await model.batcher.submit(inputs))


def _send(response: HttpResponse, answer: Response) -> None:
    status, body, headers = answer
    response.start(status, headers, len(body))
    response.end(body)


def _error_response(request: Request, exc: Exception) -> Response:
    """What a failure means to the client: 400 its mistake, 404/503 the model's state, 500 ours."""
    match exc:
        case HTTPError():
            return error_response(exc.status, str(exc))
        case ProtocolError() | InvalidName():
            return error_response(400, str(exc))
        case ModelNotFound():
            return error_response(404, str(exc))
        case ModelNotReady():
            return error_response(503, str(exc))
        case InferenceError():
            return error_response(500, f"inference failed: {exc}")
    log.error("unexpected error for %s %r", request.method.decode("latin-1"), request.target, exc_info=exc)
    return error_response(500, f"{type(exc).__name__}: {exc}")


def _allow(method: str, *allowed: str) -> None:
    if method not in allowed:
        raise HTTPError(405, f"method {method} not allowed here; use {' or '.join(allowed)}")


def _header_length(request: Request) -> int | None:
    raw = request.index.get(HEADER_LENGTH_NAME)
    if raw is None:
        return None
    try:
        return int(raw)
    except ValueError:
        raise ProtocolError(
            f"Inference-Header-Content-Length {raw.decode(errors='replace')!r} is not an integer"
        ) from None
