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
requests, 404 unknown model/version/route, 405 wrong method, 413 oversized body, 503 not ready and 500
for a failing model; nothing a client sends can stop the server.
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import unquote

from predictor import datatypes
from predictor.http_server import Request, Response
from predictor.manager import ModelManager, ModelNotFound, ModelNotReady
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
    def __init__(self, manager: ModelManager):
        self.manager = manager
        # How many requests the HTTP server is answering, this one included; the server wires it up.
        # Until then every request counts as having company, so inference never runs on the loop.
        self.requests_in_progress: Callable[[], int] = lambda: 2

    def __call__(self, request: Request) -> Response | Awaitable[Response]:
        """The answer, at once where it needs no waiting (most routes, and inference run inline), else
        an awaitable of it."""
        try:
            outcome = self._dispatch(request)
        except Exception as exc:
            return _error_response(request, exc)
        if isinstance(outcome, tuple):
            return outcome
        return _awaited(request, outcome)

    def _dispatch(self, request: Request) -> Response | Awaitable[Response]:
        method = request.method
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
            case ["v2", "models", "stats"]:
                _allow(method, "GET")
                return json_response({"model_stats": self._stats(None, None)})
            case ["v2", "models", name, "versions", version, *action] if len(action) <= 1:
                return self._model(request, name, version, action)
            case ["v2", "models", name, *action] if len(action) <= 1:
                return self._model(request, name, None, action)
            case ["v2", "repository", "index"]:
                _allow(method, "POST", "GET")
                return json_response(self.manager.index())
            case ["v2", "repository", "models", name, ("load" | "unload") as action]:
                _allow(method, "POST")
                return self._load_or_unload(name, action)
            case ["v1", "models", target]:
                if target.endswith(":predict"):
                    _allow(method, "POST")
                    return self._v1_predict(target.removesuffix(":predict"), _body(request))
                _allow(method, "GET")
                return self._v1_status(target)
        raise HTTPError(404, f"no route for {method} {path}; see docs/predictor.md for the endpoints")

    def _model(
        self, request: Request, name: str, version: str | None, action: list[str]
    ) -> Response | Awaitable[Response]:
        method = request.method
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
                return self._v2_infer(name, version, request)
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

    def _v2_infer(self, name: str, version: str | None, request: Request) -> Response | Awaitable[Response]:
        header_length = _header_length(request)
        model = self.manager.lookup(name, version)
        body = _body(request)

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

        return _run(model, decode, encode, self._may_inline(body))

    def _v1_predict(self, name: str, body: bytearray | bytes) -> Response | Awaitable[Response]:
        model = self.manager.lookup(name)
        types = {spec.name: datatypes.BY_NAME[spec.datatype] for spec in model.config.inputs}

        def decode() -> tuple[BoundInputs, bool]:
            request = decode_v1_request(body, types)
            return bind_inputs(model.config, request.inputs), request.row_format

        def encode(row_format: bool, arrays: list) -> Response:
            tensors = [
                Tensor(s.name, s.datatype, a) for s, a in zip(model.config.outputs, arrays, strict=True)
            ]
            return 200, encode_v1_response(tensors, row_format), [(b"content-type", JSON)]

        return _run(model, decode, encode, self._may_inline(body))

    def _may_inline(self, body: bytearray | bytes) -> bool:
        """A request may run on the event loop thread only while it is the server's sole request in
        progress and its body is small: then nobody waits behind it but for a few milliseconds at most."""
        return len(body) <= INLINE_BODY_BYTES and self.requests_in_progress() == 1

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


async def _awaited(request: Request, outcome: Awaitable[Response]) -> Response:
    try:
        return await outcome
    except Exception as exc:
        return _error_response(request, exc)


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
    log.error("unexpected error for %s %r", request.method, request.target, exc_info=exc)
    return error_response(500, f"{type(exc).__name__}: {exc}")


def _allow(method: str, *allowed: str) -> None:
    if method not in allowed:
        raise HTTPError(405, f"method {method} not allowed here; use {' or '.join(allowed)}")


def _header_length(request: Request) -> int | None:
    raw = request.headers.get(HEADER_LENGTH_NAME)
    if raw is None:
        return None
    try:
        return int(raw)
    except ValueError:
        raise ProtocolError(
            f"Inference-Header-Content-Length {raw.decode(errors='replace')!r} is not an integer"
        ) from None


def _body(request: Request) -> bytearray | bytes:
    """The request body, inflated when the client compressed it."""
    encoding = request.headers.get(b"content-encoding", b"identity").lower()
    if encoding == b"identity":
        return request.body
    if encoding not in (b"gzip", b"deflate"):
        shown = encoding.decode(errors="replace")
        raise HTTPError(400, f"Content-Encoding {shown!r} not supported; use gzip or deflate")
    try:
        return zlib.decompress(request.body, 31 if encoding == b"gzip" else 15)
    except zlib.error as exc:
        raise HTTPError(400, f"body is not valid {encoding.decode()} data: {exc}") from None
