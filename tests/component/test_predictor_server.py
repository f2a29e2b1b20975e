"""`kpa predictor` as a real process on loopback, driven by the real clients users bring: tritonclient
(JSON and the binary tensor extension) and the kserve SDK (V2 and V1). Outputs must equal eager torch;
bad requests must get the right status and a message naming the problem; the server must survive them."""

from __future__ import annotations

import asyncio
import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest
import torch
import tritonclient.http as triton
from kserve import InferenceRESTClient, InferInput, InferRequest, RESTConfig
from predictor_fixtures import PredictorProcess, save_torchscript, write_config, write_scale_model
from torch import nn
from tritonclient.utils import InferenceServerException

from predictor.demo_models import DEMO_MODELS, build_demo_repository

pytestmark = pytest.mark.timeout(120)


EAGER = 'parameters { key: "backend" value { string_value: "eager" } }\n'  # no compiling in these tests


class AllTypes(nn.Module):
    """One input and one output per datatype torch computes with."""

    def forward(self, f16, bf16, f64, i8, i16, i32, u8, flags):
        return f16 * 2, bf16 + 1, f64 / 2, i8 - 1, i16 * 3, i32 + 7, u8 + 1, ~flags


ALL_TYPES = [  # (name, config type, V2 datatype)
    ("f16", "TYPE_FP16", "FP16"),
    ("bf16", "TYPE_BF16", "BF16"),
    ("f64", "TYPE_FP64", "FP64"),
    ("i8", "TYPE_INT8", "INT8"),
    ("i16", "TYPE_INT16", "INT16"),
    ("i32", "TYPE_INT32", "INT32"),
    ("u8", "TYPE_UINT8", "UINT8"),
    ("flags", "TYPE_BOOL", "BOOL"),
]


class Slow(nn.Module):
    """Half a second of matrix products per call: far too slow to run on the event loop."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = torch.full((384, 384), 1e-3)
        work = torch.ones(384, 384)
        for _ in range(300):
            work = torch.tanh(work @ weight)
        return x + work[0, 0]


class Fragile(nn.Module):
    """Fails inside the model for negative inputs: a 500 that must carry the exception text."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if bool((x < 0).any()):
            raise ValueError("negative values are not allowed")
        return x + 1


def _all_types_config() -> str:
    inputs = ", ".join(f'{{ name: "{n}" data_type: {t} dims: [3] }}' for n, t, _ in ALL_TYPES)
    outputs = ", ".join(f'{{ name: "out_{n}" data_type: {t} dims: [3] }}' for n, t, _ in ALL_TYPES)
    return f'name: "alltypes"\nmax_batch_size: 0\ninput [{inputs}]\noutput [{outputs}]\n{EAGER}'


@pytest.fixture(scope="module")
def repository(tmp_path_factory) -> Path:
    root = build_demo_repository(tmp_path_factory.mktemp("repo"), formats=("torchscript",))
    write_config(root / "alltypes", _all_types_config())
    save_torchscript(AllTypes(), root / "alltypes" / "1" / "model.pt")
    write_config(
        root / "fragile",
        'max_batch_size: 4\ninput [{ name: "x" data_type: TYPE_FP32 dims: [2] }]\n'
        'output [{ name: "y" data_type: TYPE_FP32 dims: [2] }]\n' + EAGER,
    )
    save_torchscript(Fragile(), root / "fragile" / "1" / "model.pt")
    write_config(
        root / "slow",
        'max_batch_size: 0\ninput [{ name: "x" data_type: TYPE_FP32 dims: [1] }]\n'
        'output [{ name: "y" data_type: TYPE_FP32 dims: [1] }]\n' + EAGER,
    )
    save_torchscript(Slow(), root / "slow" / "1" / "model.pt")
    # batches requests that arrive within 50 ms of each other
    write_scale_model(
        root,
        "batched",
        1,
        3.0,
        max_batch_size=16,
        extra="dynamic_batching { max_queue_delay_microseconds: 50000 }",
    )
    broken = root / "broken"
    write_config(
        broken,
        'input [{ name: "x" data_type: TYPE_FP32 dims: [1] }]\n'
        'output [{ name: "y" data_type: TYPE_FP32 dims: [1] }]\n' + EAGER,
    )
    (broken / "1").mkdir()
    (broken / "1" / "model.pt").write_bytes(b"this is not a torchscript archive")
    return root


@pytest.fixture(scope="module")
def server(repository, tmp_path_factory):
    process = PredictorProcess(repository, tmp_path_factory.mktemp("cache")).start()
    yield process
    assert process.stop() == 0


@pytest.fixture(scope="module")
def client(server):
    connection = triton.InferenceServerClient(server.url, concurrency=8)
    yield connection
    connection.close()


def _eager(name: str, inputs: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return DEMO_MODELS[name].build()(torch.from_numpy(inputs)).numpy()


def _triton_infer(client, name: str, batch: np.ndarray, binary: bool) -> np.ndarray:
    model = DEMO_MODELS[name]
    tensor = triton.InferInput(
        model.input_name, list(batch.shape), "FP32" if batch.dtype == np.float32 else "INT64"
    )
    tensor.set_data_from_numpy(batch, binary_data=binary)
    output = triton.InferRequestedOutput(model.output_name, binary_data=binary)
    return client.infer(name, [tensor], outputs=[output]).as_numpy(model.output_name)


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
@pytest.mark.parametrize("name", ["cnn", "transformer"])
def test_tritonclient_outputs_equal_eager_torch(client, name, binary):
    batch = DEMO_MODELS[name].inputs(3, seed=11)
    np.testing.assert_allclose(
        _triton_infer(client, name, batch, binary), _eager(name, batch), rtol=1e-5, atol=1e-6
    )


def test_tritonclient_default_outputs_come_back_binary(client):
    batch = DEMO_MODELS["cnn"].inputs(1, seed=2)
    tensor = triton.InferInput("image", list(batch.shape), "FP32")
    tensor.set_data_from_numpy(batch)
    result = client.infer("cnn", [tensor], request_id="req-1")
    assert result.get_response()["id"] == "req-1"
    assert result.get_output("logits")["parameters"]["binary_data_size"] == 40
    np.testing.assert_allclose(result.as_numpy("logits"), _eager("cnn", batch), rtol=1e-5, atol=1e-6)


def test_every_torch_datatype_round_trips_through_tritonclient(client):
    rng = np.random.default_rng(5)
    arrays = {
        "f16": rng.standard_normal(3).astype(np.float16),
        "bf16": np.array([1.5, -2.0, 8.0], dtype=ml_dtypes.bfloat16),
        "f64": rng.standard_normal(3),
        "i8": np.array([-128, 0, 127], np.int8),
        "i16": np.array([-3, 0, 1000], np.int16),
        "i32": np.array([-(2**31), 0, 5], np.int32),
        "u8": np.array([0, 7, 254], np.uint8),
        "flags": np.array([True, False, True]),
    }
    inputs = []
    for name, _, datatype in ALL_TYPES:
        tensor = triton.InferInput(name, [3], datatype)
        tensor.set_data_from_numpy(arrays[name], binary_data=True)
        inputs.append(tensor)
    result = client.infer("alltypes", inputs)
    with torch.no_grad():
        expected = AllTypes()(
            *(
                torch.from_numpy(a.astype(np.float32)).to(torch.bfloat16)
                if n == "bf16"
                else torch.from_numpy(a)
                for n, a in arrays.items()
            )
        )
    for (name, _, datatype), want in zip(ALL_TYPES, expected, strict=True):
        got = result.as_numpy(f"out_{name}")
        assert result.get_output(f"out_{name}")["datatype"] == datatype
        np.testing.assert_array_equal(got.astype(np.float64), want.to(torch.float64).numpy())


def test_kserve_rest_client_v2_and_v1_match_eager(server):
    batch = DEMO_MODELS["transformer"].inputs(2, seed=4)
    expected = _eager("transformer", batch)

    async def run() -> tuple:
        v2 = InferenceRESTClient(RESTConfig(protocol="v2", retries=0))
        v1 = InferenceRESTClient(RESTConfig(protocol="v1", retries=0))
        base = f"http://{server.url}"
        try:
            tensor = InferInput("tokens", list(batch.shape), "INT64")
            tensor.set_data_from_numpy(batch, binary_data=False)
            json_response = await v2.infer(
                base, InferRequest("transformer", [tensor]), model_name="transformer"
            )
            binary_tensor = InferInput("tokens", list(batch.shape), "INT64")
            binary_tensor.set_data_from_numpy(batch, binary_data=True)
            binary_response = await v2.infer(
                base, InferRequest("transformer", [binary_tensor]), model_name="transformer"
            )
            predicted = await v1.infer(base, {"instances": batch.tolist()}, model_name="transformer")
            readiness = (
                await v2.is_server_live(base),
                await v2.is_server_ready(base),
                await v2.is_model_ready(base, "transformer"),
                await v1.is_model_ready(base, "transformer"),
                await v2.is_model_ready(base, "broken"),
            )
            return json_response, binary_response, predicted, readiness
        finally:
            await v2.close()
            await v1.close()

    json_response, binary_response, predicted, readiness = asyncio.run(run())
    for response in (json_response, binary_response):
        assert response.model_name == "transformer"
        np.testing.assert_allclose(response.outputs[0].as_numpy(), expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.array(predicted["predictions"]), expected, rtol=1e-5, atol=1e-6)
    assert readiness == (True, True, True, True, False)


def test_metadata_reports_signature_backend_and_state(client, server):
    metadata = client.get_model_metadata("cnn")
    assert metadata["inputs"] == [{"name": "image", "datatype": "FP32", "shape": [-1, 3, 64, 64]}]
    assert metadata["outputs"] == [{"name": "logits", "datatype": "FP32", "shape": [-1, 10]}]
    assert (metadata["versions"], metadata["platform"], metadata["backend"]) == (
        ["1"],
        "pytorch_torchscript",
        "eager",
    )
    assert client.get_model_config("cnn")["max_batch_size"] == 32
    assert client.get_server_metadata()["extensions"] == [
        "binary_tensor_data",
        "model_repository",
        "statistics",
    ]
    assert client.is_server_live() and client.is_server_ready()
    status, body = server.json("GET", "/v1/models/cnn")
    assert (status, body) == (200, {"name": "cnn", "ready": True})


def test_broken_model_shows_its_reason_while_the_others_serve(client, server):
    assert not client.is_model_ready("broken")
    status, body = server.json("GET", "/v2/models/broken")
    assert status == 200 and body["state"] == "UNAVAILABLE"
    assert "version 1" in body["reason"] and "RuntimeError" in body["reason"]
    index = {row["name"]: row for row in client.get_model_repository_index()}
    assert index["broken"]["state"] == "UNAVAILABLE" and index["cnn"]["state"] == "READY"
    status, body = server.json("POST", "/v2/models/broken/infer", {"inputs": []})
    assert status == 503 and "broken" in body["error"]
    assert client.is_model_ready("cnn")


def test_inference_failure_is_500_with_the_exception_text(server):
    good = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 2], "data": [1, 2]}]}
    bad = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 2], "data": [1, -2]}]}
    status, body = server.json("POST", "/v2/models/fragile/infer", bad)
    assert status == 500 and "negative values are not allowed" in body["error"]
    status, body = server.json("POST", "/v2/models/fragile/infer", good)
    assert status == 200 and body["outputs"][0]["data"] == [2.0, 3.0]


CNN_OK = {"name": "image", "datatype": "FP32", "shape": [1, 3, 64, 64], "data": [0.0] * (3 * 64 * 64)}


@pytest.mark.parametrize(
    ("method", "path", "body", "headers", "status", "message"),
    [
        ("POST", "/v2/models/cnn/infer", b"{oops", {}, 400, "not valid JSON"),
        (
            "POST",
            "/v2/models/cnn/infer",
            json.dumps(
                {"inputs": [{**CNN_OK, "shape": [1, 3, 64, 63], "data": [0.0] * (3 * 64 * 63)}]}
            ).encode(),
            {},
            400,
            "does not match [batch, 3, 64, 64]",
        ),
        (
            "POST",
            "/v2/models/cnn/infer",
            json.dumps({"inputs": [{**CNN_OK, "datatype": "FP64"}]}).encode(),
            {},
            400,
            "datatype FP64 does not match the model's FP32",
        ),
        (
            "POST",
            "/v2/models/cnn/infer",
            json.dumps({"inputs": [{**CNN_OK, "name": "img"}]}).encode(),
            {},
            400,
            "has no input 'img'",
        ),
        (
            "POST",
            "/v2/models/cnn/infer",
            json.dumps(
                {"inputs": [{**CNN_OK, "shape": [64, 3, 64, 64], "data": [0.0] * (64 * 3 * 64 * 64)}]}
            ).encode(),
            {},
            400,
            "max_batch_size 32",
        ),
        (
            "POST",
            "/v2/models/cnn/infer",
            json.dumps({"inputs": [CNN_OK], "outputs": [{"name": "probs"}]}).encode(),
            {},
            400,
            "has no output 'probs'",
        ),
        (
            "POST",
            "/v2/models/cnn/infer",
            b"{}",
            {"Inference-Header-Content-Length": "abc"},
            400,
            "not an integer",
        ),
        ("POST", "/v2/models/cnn/infer", b"{}", {"Content-Encoding": "br"}, 400, "not supported"),
        ("POST", "/v2/models/nope/infer", b"{}", {}, 404, "model 'nope' is not in the repository"),
        ("POST", "/v2/models/cnn/versions/7/infer", b"{}", {}, 404, "no version 7 (serving: 1)"),
        ("POST", "/v2/models/cnn/versions/x1/infer", b"{}", {}, 400, "not a positive integer"),
        ("GET", "/v2/models/..%2F..%2Fetc/ready", None, {}, 400, "model name '../../etc' is not allowed"),
        ("POST", "/v2/repository/models/%2E%2E/load", None, {}, 400, "model name '..' is not allowed"),
        ("POST", "/v2/repository/models/ghost/load", None, {}, 404, "not in the repository"),
        ("GET", "/v2/models/cnn/infer", None, {}, 405, "use POST"),
        ("GET", "/v3/anything", None, {}, 404, "no route for GET /v3/anything"),
        (
            "POST",
            "/v1/models/cnn:predict",
            b'{"instances": [[1, 2]]}',
            {},
            400,
            "does not match [batch, 3, 64, 64]",
        ),
    ],
    ids=[
        "body-not-json",
        "wrong-shape",
        "wrong-datatype",
        "unknown-input",
        "batch-past-max",
        "unknown-output",
        "binary-header-length-not-a-number",
        "unknown-content-encoding",
        "unknown-model",
        "unknown-version",
        "version-not-a-number",
        "model-name-escaping-the-repository",
        "load-name-dot-dot",
        "load-unknown-model",
        "infer-with-get",
        "unknown-route",
        "v1-wrong-shape",
    ],
)
def test_bad_requests_get_the_right_status_and_message(server, method, path, body, headers, status, message):
    got_status, got_headers, got_body = server.request(method, path, body, headers)
    assert got_status == status
    assert got_headers["content-type"] == "application/json"
    assert message in json.loads(got_body)["error"]
    assert server.request("GET", "/v2/health/live")[0] == 200


def test_gzip_request_bodies_are_accepted(client):
    batch = DEMO_MODELS["cnn"].inputs(1, seed=3)
    tensor = triton.InferInput("image", list(batch.shape), "FP32")
    tensor.set_data_from_numpy(batch)
    result = client.infer("cnn", [tensor], request_compression_algorithm="gzip")
    np.testing.assert_allclose(result.as_numpy("logits"), _eager("cnn", batch), rtol=1e-5, atol=1e-6)


def test_concurrent_requests_all_get_their_own_answers(server):
    batches = {i: DEMO_MODELS["transformer"].inputs(1 + i % 3, seed=100 + i) for i in range(48)}

    def call(i: int) -> tuple[int, np.ndarray]:
        connection = triton.InferenceServerClient(server.url)
        try:
            return i, _triton_infer(connection, "transformer", batches[i], binary=i % 2 == 0)
        finally:
            connection.close()

    with ThreadPoolExecutor(12) as pool:
        results = dict(pool.map(call, batches))
    for i, got in results.items():
        np.testing.assert_allclose(got, _eager("transformer", batches[i]), rtol=1e-5, atol=1e-6)


def test_health_probes_are_answered_while_a_slow_model_computes(server):
    doc = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1], "data": [1.0]}]}
    assert server.json("POST", "/v2/models/slow/infer", doc)[0] == 200  # now its call time is known
    with ThreadPoolExecutor(1) as pool:
        slow = pool.submit(server.json, "POST", "/v2/models/slow/infer", doc)
        # A head start (nothing outside says "computing"): the slow call runs 0.5 s, so the probe
        # lands during it; were the slow request late, the probe would merely come first, not fail.
        time.sleep(0.1)
        assert server.request("GET", "/v2/health/live")[0] == 200
        assert not slow.done(), "the probe waited for the model: it ran on the event loop"
        status, body = slow.result()
    assert status == 200 and len(body["outputs"][0]["data"]) == 1


def test_dynamic_batching_combines_concurrent_requests(client, server):
    rows = [np.full((1, 4), float(i), np.float32) for i in range(12)]

    def call(row: np.ndarray) -> np.ndarray:
        doc = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": row.ravel().tolist()}]}
        status, body = server.json("POST", "/v2/models/batched/infer", doc)
        assert status == 200, body
        return np.array(body["outputs"][0]["data"], np.float32).reshape(1, 4)

    with ThreadPoolExecutor(12) as pool:
        outputs = list(pool.map(call, rows))
    for row, out in zip(rows, outputs, strict=True):
        np.testing.assert_array_equal(out, row * 3)
    stats = client.get_inference_statistics("batched")["model_stats"][0]
    assert stats["request_count"] == 12
    assert stats["execution_count"] < 12
    assert max(int(size) for size in stats["batch_sizes"]) > 1
    assert stats["recent_compute_ms"]["calls"] == stats["execution_count"]
    assert 0 < stats["recent_compute_ms"]["p50"] <= stats["recent_compute_ms"]["p99"]


def test_unload_then_load_through_the_repository_api(client):
    client.unload_model("alltypes")
    assert not client.is_model_ready("alltypes")
    index = {row["name"]: row for row in client.get_model_repository_index()}
    assert index["alltypes"]["reason"] == "unloaded by request"
    with pytest.raises(InferenceServerException, match="not ready"):
        client.infer("alltypes", [triton.InferInput("f16", [3], "FP16")])
    client.load_model("alltypes")
    assert client.is_model_ready("alltypes")
