"""ModelMesh's model-runtime SPI (``mmesh.ModelRuntime``): the predictor as a ModelMesh serving runtime.

The mesh decides which models live in which pod and calls ``loadModel``/``unloadModel`` here; its
requests then arrive on ``inference.GRPCInferenceService`` with ``mm-model-id`` metadata naming the model
(``grpc_inference``). ``runtimeStatus`` says how to treat this runtime: the memory it may fill, loads at a
time (one: the manager loads on one thread), the load timeout, and which inference methods the mesh may
forward, with where in the request it writes the model id (``idInjectionPath``: ``model_name`` / ``name``
is field 1 of ModelInfer's, ModelMetadata's and ModelReady's requests).

``modelPath`` names a model directory in this repository's layout (``config.pbtxt`` and version
directories) and must lie inside ``--model-repository``, like every path the predictor reads — point
ModelMesh's puller at the same directory. A directory named by its model id loads as it is; another
one is served under the id through an alias directory ``<repository>/<modelId>/`` (the config with its
name set to the id, and links to the version directories), removed again by ``unloadModel``.

A model's size is the bytes of its served model files (a TorchScript or export archive holds the
weights); ``predictModelSize`` adds up every file of the directory, a conservative estimate.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
from pathlib import Path

import grpc
from google.protobuf import text_format

from predictor.grpc_inference import abort
from predictor.http_app import SERVER_VERSION
from predictor.manager import ModelManager, ModelNotFound, ModelNotReady
from predictor.model_config_pb2 import ModelConfig
from predictor.protocol import ProtocolError
from predictor.protos import model_runtime_pb2 as mm
from predictor.protos.model_runtime_pb2_grpc import ModelRuntimeServicer
from predictor.repository import CONFIG_FILE, check_model_name

log = logging.getLogger("predictor")
DEFAULT_CAPACITY_BYTES = 1 << 30  # memory the mesh may fill with models here without --memory-budget
DEFAULT_MODEL_BYTES = 64 << 20  # what the mesh assumes of a model before its size is known
LOAD_TIMEOUT_MS = 120_000  # loads run eagerly; a compile for inductor/zentorch follows in the background
MAX_LOADING_CONCURRENCY = 1  # the manager loads on one thread
INJECTED_METHODS = ("ModelInfer", "ModelMetadata", "ModelReady")
METHOD_INFOS = {
    f"inference.GRPCInferenceService/{method}": mm.RuntimeStatusResponse.MethodInfo(idInjectionPath=[1])
    for method in INJECTED_METHODS
}


def model_directory(root: Path, model_path: str, model_id: str) -> Path:
    """The model directory ``modelPath`` names (empty: ``<root>/<modelId>``), checked to be a model
    directory inside the repository; ``ProtocolError`` (INVALID_ARGUMENT: nothing loaded) otherwise."""
    path = Path(model_path) if model_path else Path(model_id)
    directory = (path if path.is_absolute() else root / path).resolve()
    if not directory.is_relative_to(root):
        raise ProtocolError(
            f"modelPath {model_path!r} is outside the model repository {str(root)!r}: have ModelMesh's "
            "puller write models into the directory given as --model-repository"
        )
    if not (directory / CONFIG_FILE).is_file():
        raise ProtocolError(
            f"modelPath {model_path!r} is not a model directory: it needs {CONFIG_FILE} and version "
            "directories (docs/predictor.md, Model repository)"
        )
    return directory


def write_alias(root: Path, source: Path, model_id: str) -> Path:
    """``<root>/<model_id>/`` serving ``source`` under the id: its config renamed, its versions linked.
    Built under a hidden name (the repository skips those) and renamed into place in one step."""
    target = root / model_id
    if target.exists():
        raise ProtocolError(
            f"model id {model_id!r} is taken by another directory of the repository than modelPath "
            f"{str(source)!r}"
        )
    config = ModelConfig()
    try:
        text_format.Parse((source / CONFIG_FILE).read_text(), config)
    except text_format.ParseError as exc:
        raise ProtocolError(f"{source / CONFIG_FILE}: {exc}") from None
    config.name = model_id
    staging = root / f".{model_id}.alias"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    (staging / CONFIG_FILE).write_text(text_format.MessageToString(config))
    for version in source.iterdir():
        if version.name.isdigit() and version.is_dir():
            (staging / version.name).symlink_to(version.resolve(), target_is_directory=True)
    staging.rename(target)
    return target


def directory_bytes(directory: Path) -> int:
    """Bytes of every file under ``directory``, links followed once (an alias counts its targets)."""
    return sum(path.stat().st_size for path in directory.rglob("*") if path.is_file())


class ModelRuntime(ModelRuntimeServicer):
    def __init__(self, manager: ModelManager, capacity_bytes: int | None = None):
        self.manager = manager
        self.capacity_bytes = capacity_bytes or DEFAULT_CAPACITY_BYTES
        self.root = manager.repository.root
        self.loaded: set[str] = set()  # ids the mesh loaded here
        self.aliases: dict[str, Path] = {}  # id -> alias directory this runtime wrote

    async def runtimeStatus(self, request: mm.RuntimeStatusRequest, context: grpc.aio.ServicerContext):
        """Asked at the mesh's startup: a mesh that restarted has forgotten what it loaded here, so
        those models are unloaded before this says READY."""
        for model_id in sorted(self.loaded):
            await self._unload(model_id)
        status = mm.RuntimeStatusResponse.READY if self.manager.started else mm.RuntimeStatusResponse.STARTING
        return mm.RuntimeStatusResponse(
            status=status,
            capacityInBytes=self.capacity_bytes,
            maxLoadingConcurrency=MAX_LOADING_CONCURRENCY,
            modelLoadingTimeoutMs=LOAD_TIMEOUT_MS,
            defaultModelSizeInBytes=DEFAULT_MODEL_BYTES,
            runtimeVersion=SERVER_VERSION,
            methodInfos=METHOD_INFOS,
            limitModelConcurrency=False,
        )

    async def loadModel(self, request: mm.LoadModelRequest, context: grpc.aio.ServicerContext):
        model_id = request.modelId
        try:
            check_model_name(model_id)
            directory = model_directory(self.root, request.modelPath, model_id)
            if directory != self.root / model_id and model_id not in self.aliases:
                self.aliases[model_id] = write_alias(self.root, directory, model_id)
            self.loaded.add(model_id)
            entry = await self.manager.load(model_id)
            if not entry.versions:
                raise ModelNotReady(f"model {model_id!r} did not load: {entry.reason}")
        except Exception as exc:
            await abort(context, exc)
        log.info("modelmesh: loaded %s from %s", model_id, request.modelPath or model_id)
        return mm.LoadModelResponse(sizeInBytes=self._size(model_id))

    async def unloadModel(self, request: mm.UnloadModelRequest, context: grpc.aio.ServicerContext):
        try:
            await self._unload(request.modelId)
        except Exception as exc:
            await abort(context, exc)
        return mm.UnloadModelResponse()

    async def _unload(self, model_id: str) -> None:
        """Stop serving ``model_id`` and remove its alias; a model not loaded is no error (the SPI)."""
        with contextlib.suppress(ModelNotFound):
            await self.manager.unload(model_id)
        self.loaded.discard(model_id)
        alias = self.aliases.pop(model_id, None)
        if alias is not None:
            shutil.rmtree(alias, ignore_errors=True)

    async def predictModelSize(self, request: mm.PredictModelSizeRequest, context: grpc.aio.ServicerContext):
        try:
            directory = model_directory(self.root, request.modelPath, request.modelId)
        except Exception as exc:
            await abort(context, exc)
        return mm.PredictModelSizeResponse(sizeInBytes=directory_bytes(directory))

    async def modelSize(self, request: mm.ModelSizeRequest, context: grpc.aio.ServicerContext):
        try:
            size = self._size(request.modelId)
        except Exception as exc:
            await abort(context, exc)
        return mm.ModelSizeResponse(sizeInBytes=size)

    def _size(self, model_id: str) -> int:
        entry = self.manager.entry(model_id)
        if not entry.versions:
            raise ModelNotReady(f"model {model_id!r} is not loaded ({entry.state}): {entry.reason}")
        files = [version.source.model_file for version in entry.versions.values()]
        return sum(path.stat().st_size for path in files if path is not None)
