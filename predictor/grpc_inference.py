"""``inference.GRPCInferenceService``: the V2 protocol over gRPC, beside REST, on the same models.

Every call answers from the same ``ModelManager`` the REST app uses; inference holds its model through
``ModelManager.acquire`` (loaded on demand within ``--memory-budget``, never unloaded under a call) and
goes through the same checks (``signature.bind_inputs``, ``check_requested_outputs``), the same
version pinning (``ModelVersion.in_use``) and the same worker threads or dynamic batcher. A failure
becomes the gRPC status Triton and KServe use for the REST status it would have had: 400
INVALID_ARGUMENT, 404 NOT_FOUND, 503 UNAVAILABLE, 500 INTERNAL, each with the REST path's message.

ModelMesh addresses a model with the ``mm-model-id`` request metadata: when present it wins over the
request's own model name (which the mesh may leave empty or set to something else).
"""

from __future__ import annotations

import asyncio
import logging
from typing import NoReturn

import grpc
from google.protobuf import unknown_fields

from predictor.grpc_tensors import DecodedRequest, decode_request, encode_response
from predictor.http_app import SERVER_NAME, SERVER_VERSION
from predictor.manager import READY, ModelManager, ModelNotFound, ModelNotReady
from predictor.metrics import PredictorMetrics
from predictor.protocol import ProtocolError, Tensor
from predictor.protos import grpc_predict_v2_pb2 as pb
from predictor.protos.grpc_predict_v2_pb2_grpc import GRPCInferenceServiceServicer
from predictor.repository import InvalidName
from predictor.runners import InferenceError
from predictor.signature import BoundInputs, bind_inputs, check_requested_outputs

log = logging.getLogger("predictor")
MODEL_ID_KEY = "mm-model-id"  # ModelMesh's routing metadata
MODEL_LOAD_KEY = "x-kpa-model-load"  # trailing metadata: ms this call waited for its model to load
EXTENSIONS = ["model_repository"]  # RepositoryModelLoad/Unload; REST's binary and statistics are REST's
_STATUS = (  # as http_app._error_response maps these to 400, 404 and 503
    ((ProtocolError, InvalidName), grpc.StatusCode.INVALID_ARGUMENT, 400),
    ((ModelNotFound,), grpc.StatusCode.NOT_FOUND, 404),
    ((ModelNotReady,), grpc.StatusCode.UNAVAILABLE, 503),
)


def status_of(exc: Exception) -> tuple[grpc.StatusCode, str, int]:
    """The gRPC code and message a failure answers with, and the HTTP status REST would have answered
    (what ``kpa_predictor_requests`` counts it by, whichever protocol it came in)."""
    for kinds, code, http_status in _STATUS:
        if isinstance(exc, kinds):
            return code, str(exc), http_status
    if isinstance(exc, InferenceError):
        return grpc.StatusCode.INTERNAL, f"inference failed: {exc}", 500
    log.error("unexpected error in a gRPC call", exc_info=exc)
    return grpc.StatusCode.INTERNAL, f"{type(exc).__name__}: {exc}", 500


async def abort(context: grpc.aio.ServicerContext, exc: Exception) -> NoReturn:
    code, message, _ = status_of(exc)
    await context.abort(code, message)
    raise AssertionError("unreachable: abort raises")


def addressed_model(name: str, context: grpc.aio.ServicerContext) -> str:
    """The model a call is for: ``mm-model-id`` metadata when ModelMesh sent it, else ``name``."""
    for key, value in context.invocation_metadata() or ():
        if key == MODEL_ID_KEY and isinstance(value, str) and value:
            return value
    return name


def repository_model_name(request: pb.RepositoryModelLoadRequest | pb.RepositoryModelUnloadRequest) -> str:
    """The model a repository call names. KServe's message holds it in field 1; Triton's (what
    tritonclient sends to the same method) has ``repository_name`` = 1 and ``model_name`` = 2, so a
    string in the field unknown to KServe's message is Triton's model name."""
    fields = unknown_fields.UnknownFieldSet(request)
    for field in (fields[i] for i in range(len(fields))):
        if field.field_number == 2 and isinstance(field.data, bytes):
            return field.data.decode(errors="replace")
    return request.model_name


class InferenceServicer(GRPCInferenceServiceServicer):
    """Inference is counted and timed into the REST app's ``PredictorMetrics``: one ``/metrics`` for
    both protocols."""

    def __init__(self, manager: ModelManager, metrics: PredictorMetrics):
        self.manager = manager
        self.metrics = metrics

    async def ServerLive(self, request: pb.ServerLiveRequest, context: grpc.aio.ServicerContext):
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(self, request: pb.ServerReadyRequest, context: grpc.aio.ServicerContext):
        return pb.ServerReadyResponse(ready=self.manager.ready)

    async def ServerMetadata(self, request: pb.ServerMetadataRequest, context: grpc.aio.ServicerContext):
        return pb.ServerMetadataResponse(name=SERVER_NAME, version=SERVER_VERSION, extensions=EXTENSIONS)

    async def ModelReady(self, request: pb.ModelReadyRequest, context: grpc.aio.ServicerContext):
        name = addressed_model(request.name, context)
        try:
            self.manager.lookup(name, request.version or None)
        except ModelNotReady:
            return pb.ModelReadyResponse(ready=False)
        except Exception as exc:
            await abort(context, exc)
        return pb.ModelReadyResponse(ready=True)

    async def ModelMetadata(self, request: pb.ModelMetadataRequest, context: grpc.aio.ServicerContext):
        name = addressed_model(request.name, context)
        try:
            entry = self.manager.entry(name)
            if entry.config is None:
                raise ModelNotReady(f"model {name!r} has no valid config: {entry.reason}")
            platform = entry.config.platform
            if entry.versions or request.version:
                platform = platform or self.manager.lookup(name, request.version or None).platform
        except Exception as exc:
            await abort(context, exc)
        config = entry.config
        tensor = pb.ModelMetadataResponse.TensorMetadata
        return pb.ModelMetadataResponse(
            name=name,
            versions=[str(v) for v in sorted(entry.versions)],
            platform=platform,
            inputs=[tensor(**spec.metadata(config.batched)) for spec in config.inputs],
            outputs=[tensor(**spec.metadata(config.batched)) for spec in config.outputs],
        )

    async def ModelInfer(self, request: pb.ModelInferRequest, context: grpc.aio.ServicerContext):
        name = addressed_model(request.model_name, context)
        try:
            # Shielded: a client that leaves cancels this wait, not the model's work (a batch it
            # joined, a version it holds), which ends as it would have.
            response, load_wait_s = await asyncio.shield(self._infer(name, request))
        except Exception as exc:
            self.metrics.count(name, status_of(exc)[2])
            await abort(context, exc)
        self.metrics.count(name, 200)
        if load_wait_s is not None:  # as REST's X-Kpa-Model-Load header
            context.set_trailing_metadata(((MODEL_LOAD_KEY, f"{load_wait_s * 1e3:.1f}"),))
        return response

    async def _infer(
        self, name: str, request: pb.ModelInferRequest
    ) -> tuple[pb.ModelInferResponse, float | None]:
        """The answer, and how long it waited for its model to load (None: the model was loaded). The
        model is held until the answer is made, so a budget never unloads it under this call."""
        held = await self.manager.acquire(name, request.model_version or None)
        try:
            model, config = held.version, held.version.config

            def decode() -> tuple[BoundInputs, DecodedRequest]:
                decoded = decode_request(request)
                if decoded.outputs is not None:
                    check_requested_outputs(config, decoded.outputs)
                return bind_inputs(config, decoded.inputs), decoded

            def encode(decoded: DecodedRequest, arrays: list) -> pb.ModelInferResponse:
                tensors = [
                    Tensor(spec.name, spec.datatype, array)
                    for spec, array in zip(config.outputs, arrays, strict=True)
                    if decoded.outputs is None or spec.name in decoded.outputs
                ]
                return encode_response(model.name, str(model.version), request.id, tensors, decoded.raw)

            timed_decode, timed_encode = self.metrics.timed(model.name, decode, encode)
            with model.in_use():
                inputs, decoded = timed_decode()
                arrays = await model.infer(inputs)
        finally:
            held.release()
        return timed_encode(decoded, arrays), held.load_wait_s

    async def RepositoryModelLoad(
        self, request: pb.RepositoryModelLoadRequest, context: grpc.aio.ServicerContext
    ):
        name = repository_model_name(request)
        try:
            entry = await self.manager.load(name)
            if entry.state != READY:
                raise ModelNotReady(f"model {name!r} did not load: {entry.reason}")
        except Exception as exc:
            await abort(context, exc)
        return pb.RepositoryModelLoadResponse(model_name=name, isLoaded=True)

    async def RepositoryModelUnload(
        self, request: pb.RepositoryModelUnloadRequest, context: grpc.aio.ServicerContext
    ):
        name = repository_model_name(request)
        try:
            await self.manager.unload(name)
        except Exception as exc:
            await abort(context, exc)
        return pb.RepositoryModelUnloadResponse(model_name=name, isUnloaded=True)
