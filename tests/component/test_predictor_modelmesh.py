"""`kpa predictor --modelmesh-port`: ModelMesh's model-runtime SPI, driven by a client generated from our
model-runtime.proto, with inference addressed by ``mm-model-id`` through tritonclient (in a child process:
grpc_calls.py says why), against one real predictor process.
"""

from __future__ import annotations

import grpc
import numpy as np
import pytest
from grpc_calls import in_child, triton_infer
from predictor_fixtures import PredictorProcess, write_scale_model

from predictor.protos import model_runtime_pb2 as mm
from predictor.protos.model_runtime_pb2_grpc import ModelRuntimeStub


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("modelmesh")
    repository = root / "models"
    write_scale_model(repository, "scale", 1, 2.0)
    write_scale_model(repository / "pulled", "triple", 1, 3.0)  # where a puller put it: not a top-level model
    (repository / "pulled" / "empty").mkdir()
    (root / "outside").mkdir()
    process = PredictorProcess(
        repository, root / "cache", "--modelmesh-port", "0", "--grpc-port", "0", "--memory-budget", "256Mi"
    )
    process.start()
    process.repository = repository
    try:
        yield process
    finally:
        assert process.stop() == 0


@pytest.fixture(scope="module")
def runtime(server):
    with grpc.insecure_channel(f"127.0.0.1:{server.listening['modelmesh_port']}") as channel:
        yield ModelRuntimeStub(channel)


@pytest.fixture(scope="module")
def child():
    with in_child() as pool:
        yield pool


def infer(child, server, model_id: str, x: np.ndarray):
    """tritonclient with ModelMesh's routing header and a model name that is not the model's."""
    url = f"127.0.0.1:{server.listening['modelmesh_port']}"
    future = child.submit(triton_infer, url, "ignored", [("x", x)], headers={"mm-model-id": model_id})
    return future.result(timeout=60)


def code_of(call) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as raised:
        call()
    return raised.value.code(), raised.value.details()


def test_runtime_status_says_how_to_treat_this_runtime(runtime):
    status = runtime.runtimeStatus(mm.RuntimeStatusRequest(), timeout=10)
    assert status.status == mm.RuntimeStatusResponse.READY
    assert status.capacityInBytes == 256 << 20  # --memory-budget
    assert status.defaultModelSizeInBytes == 64 << 20
    assert status.maxLoadingConcurrency == 1 and status.modelLoadingTimeoutMs == 120_000
    assert status.runtimeVersion and not status.limitModelConcurrency
    assert {k: list(v.idInjectionPath) for k, v in status.methodInfos.items()} == {
        "inference.GRPCInferenceService/ModelInfer": [1],
        "inference.GRPCInferenceService/ModelMetadata": [1],
        "inference.GRPCInferenceService/ModelReady": [1],
    }


def test_load_under_a_model_id_infer_by_mm_model_id_then_unload(runtime, child, server):
    """Under --memory-budget, as ModelMesh runtimes run; the mesh's id routes the call, not its name."""
    model_id = "triple__isvc-6b2eb0b8bf"
    path = str(server.repository / "pulled" / "triple")
    predicted = runtime.predictModelSize(
        mm.PredictModelSizeRequest(modelId=model_id, modelPath=path)
    ).sizeInBytes
    loaded = runtime.loadModel(mm.LoadModelRequest(modelId=model_id, modelType="pytorch", modelPath=path))
    assert 0 < loaded.sizeInBytes <= predicted
    assert runtime.modelSize(mm.ModelSizeRequest(modelId=model_id)).sizeInBytes == loaded.sizeInBytes
    x = np.arange(4, dtype=np.float32).reshape(1, 4)
    np.testing.assert_array_equal(infer(child, server, model_id, x)["y"], x * 3)
    np.testing.assert_array_equal(infer(child, server, "scale", x)["y"], x * 2)  # the id wins over the name
    assert runtime.unloadModel(mm.UnloadModelRequest(modelId=model_id)) == mm.UnloadModelResponse()
    assert not (server.repository / model_id).exists(), "the alias directory is removed with the model"
    assert infer(child, server, model_id, x)[1] in {"UNAVAILABLE", "NOT_FOUND"}
    code, _ = code_of(lambda: runtime.modelSize(mm.ModelSizeRequest(modelId=model_id)))
    assert code in {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.NOT_FOUND}
    runtime.unloadModel(mm.UnloadModelRequest(modelId=model_id))  # again: not loaded is no error
    runtime.unloadModel(mm.UnloadModelRequest(modelId="never-loaded"))


def test_a_model_named_by_its_id_loads_in_place(runtime, child, server):
    path = str(server.repository / "scale")
    assert runtime.loadModel(mm.LoadModelRequest(modelId="scale", modelPath=path)).sizeInBytes > 0
    x = np.ones((2, 4), np.float32)
    np.testing.assert_array_equal(infer(child, server, "scale", x)["y"], x * 2)


@pytest.mark.parametrize(
    ("label", "model_id", "path", "message"),
    [
        ("outside the repository", "m1", "../outside", "is outside the model repository"),
        ("no config.pbtxt", "m2", "pulled/empty", "is not a model directory"),
        ("an id that cannot be a model name", "../up", "pulled/triple", "model name '../up' is not allowed"),
        ("an id taken by another model", "scale", "pulled/triple", "is taken by another directory"),
    ],
)
def test_a_load_that_is_not_tried_is_invalid_argument(label, model_id, path, message, runtime, server):
    request = mm.LoadModelRequest(modelId=model_id, modelPath=path)
    code, details = code_of(lambda: runtime.loadModel(request))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and message in details
    assert not (server.repository / model_id).exists() or model_id == "scale"


def test_runtime_status_purges_what_the_mesh_loaded_before_it_restarted(runtime, server):
    model_id = "purged-on-status"
    runtime.loadModel(mm.LoadModelRequest(modelId=model_id, modelPath="pulled/triple"))
    runtime.runtimeStatus(mm.RuntimeStatusRequest())
    code, _ = code_of(lambda: runtime.modelSize(mm.ModelSizeRequest(modelId=model_id)))
    assert code in {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.NOT_FOUND}
    assert not (server.repository / model_id).exists()


def test_the_spi_is_not_served_on_the_inference_port(server):
    with grpc.insecure_channel(f"127.0.0.1:{server.listening['grpc_port']}") as channel:
        code, _ = code_of(
            lambda: ModelRuntimeStub(channel).runtimeStatus(mm.RuntimeStatusRequest(), timeout=10)
        )
    assert code == grpc.StatusCode.UNIMPLEMENTED
