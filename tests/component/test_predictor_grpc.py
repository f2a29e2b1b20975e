"""`kpa predictor --grpc-port`: V2 gRPC beside REST, driven by tritonclient's gRPC client unchanged and by a
client generated from our proto (typed tensor contents), against one real predictor process.

The gRPC calls run in a spawned child (grpc_calls.py says why); the test process reads the answers.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
from grpc_calls import codec_round_trip, in_child, our_stub_infer, triton, triton_infer
from predictor_fixtures import PredictorProcess, Scale, save_torchscript, write_config, write_scale_model
from prometheus_client.parser import text_string_to_metric_families
from tables import named
from torch import nn

MIXED_CONFIG = """
name: "mixed"
input [
  { name: "a" data_type: TYPE_INT32 dims: [2] }, { name: "b" data_type: TYPE_INT64 dims: [2] },
  { name: "c" data_type: TYPE_BOOL dims: [2] }, { name: "d" data_type: TYPE_FP64 dims: [2] },
  { name: "e" data_type: TYPE_UINT8 dims: [2] }
]
output [
  { name: "a1" data_type: TYPE_INT32 dims: [2] }, { name: "b2" data_type: TYPE_INT64 dims: [2] },
  { name: "not_c" data_type: TYPE_BOOL dims: [2] }, { name: "d_half" data_type: TYPE_FP64 dims: [2] },
  { name: "e1" data_type: TYPE_UINT8 dims: [2] }
]
parameters { key: "backend" value { string_value: "eager" } }
"""


HALF_CONFIG = """
input [{ name: "x" data_type: TYPE_FP16 dims: [2] }]
output [{ name: "y" data_type: TYPE_FP16 dims: [2] }]
parameters { key: "backend" value { string_value: "eager" } }
"""


class Mixed(nn.Module):
    """One input and one output of each of several datatypes the typed contents carry."""

    def forward(
        self, a: torch.Tensor, b: torch.Tensor, c: torch.Tensor, d: torch.Tensor, e: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        return a + 1, b * 2, torch.logical_not(c), d / 2, e + 1


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("grpc")
    repository = root / "models"
    write_scale_model(repository, "scale", 1, 2.0)
    write_config(repository / "mixed", MIXED_CONFIG)
    save_torchscript(Mixed(), repository / "mixed" / "1" / "model.pt")
    write_config(repository / "half", HALF_CONFIG)
    save_torchscript(Scale(2.0), repository / "half" / "1" / "model.pt")
    process = PredictorProcess(repository, root / "cache", "--grpc-port", "0").start()
    try:
        yield process
    finally:
        assert process.stop() == 0


@pytest.fixture(scope="module")
def child():
    """For tritonclient's calls."""
    with in_child() as pool:
        yield pool


@pytest.fixture(scope="module")
def ours():
    """For calls through our generated client (it cannot share a process with tritonclient)."""
    with in_child() as pool:
        yield pool


def call(child, function, *args, **kwargs):
    return child.submit(function, *args, **kwargs).result(timeout=60)


@pytest.fixture(scope="module")
def url(server):
    port = server.listening["grpc_port"]  # asked for port 0: the one bound is announced
    assert port > 0 and port != server.port and "modelmesh_port" not in server.listening
    return f"127.0.0.1:{port}"


def test_health_and_metadata_with_tritonclient(child, url):
    assert call(child, triton, url, "is_server_live") is True
    assert call(child, triton, url, "is_server_ready") is True
    assert call(child, triton, url, "is_model_ready", "scale") is True
    server = call(child, triton, url, "get_server_metadata", as_json=True)
    assert server["name"] == "kpa-predictor" and "model_repository" in server["extensions"]
    model = call(child, triton, url, "get_model_metadata", "scale", as_json=True)
    assert model["versions"] == ["1"] and model["platform"] == "pytorch_torchscript"
    assert model["inputs"] == [{"name": "x", "datatype": "FP32", "shape": ["-1", "4"]}]
    assert model["outputs"] == [{"name": "y", "datatype": "FP32", "shape": ["-1", "4"]}]


def test_tritonclient_infers_with_raw_contents_and_gets_what_rest_answers(child, url, server):
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    answer = call(child, triton_infer, url, "scale", [("x", x)])
    np.testing.assert_array_equal(answer["y"], x * 2)
    assert answer["$id"] == "r-1"
    status, rest = server.json(
        "POST",
        "/v2/models/scale/infer",
        {"inputs": [{"name": "x", "shape": [2, 4], "datatype": "FP32", "data": x.tolist()}]},
    )
    assert status == 200 and rest["outputs"][0]["data"] == answer["y"].reshape(-1).tolist()


def test_datatypes_round_trip_raw_through_tritonclient(child, url):
    inputs = [
        ("a", np.array([1, -2], np.int32)), ("b", np.array([3, 1 << 40], np.int64)),
        ("c", np.array([True, False])), ("d", np.array([1.5, -3.0])), ("e", np.array([0, 254], np.uint8)),
    ]  # fmt: skip
    answer = call(child, triton_infer, url, "mixed", inputs, outputs=["b2", "not_c", "e1"])
    assert set(answer) == {"b2", "not_c", "e1", "$id"}  # only what was asked for
    np.testing.assert_array_equal(answer["b2"], [6, 1 << 41])
    np.testing.assert_array_equal(answer["not_c"], [False, True])
    np.testing.assert_array_equal(answer["e1"], np.array([1, 255], np.uint8))
    half = call(child, triton_infer, url, "half", [("x", np.array([0.5, 2.0], np.float16))])
    np.testing.assert_array_equal(half["y"], np.array([1.0, 4.0], np.float16))


def typed_request(**overrides) -> dict:
    tensors = {
        "a": ("INT32", {"int_contents": [1, -2]}), "b": ("INT64", {"int64_contents": ["3", "-4"]}),
        "c": ("BOOL", {"bool_contents": [True, False]}), "d": ("FP64", {"fp64_contents": [1.5, -3.0]}),
        "e": ("UINT8", {"uint_contents": [0, 254]}),
    }  # fmt: skip
    inputs = [{"name": n, "datatype": t, "shape": ["2"], "contents": c} for n, (t, c) in tensors.items()]
    return {"model_name": "mixed", "id": "typed", "inputs": inputs, **overrides}


def test_typed_contents_in_typed_contents_out_with_our_generated_client(ours, url):
    answer = call(ours, our_stub_infer, url, typed_request())
    assert "raw_output_contents" not in answer
    assert answer["id"] == "typed" and answer["model_name"] == "mixed" and answer["model_version"] == "1"
    assert {o["name"]: o["contents"] for o in answer["outputs"]} == {
        "a1": {"int_contents": [2, -1]}, "b2": {"int64_contents": ["6", "-8"]},
        "not_c": {"bool_contents": [False, True]}, "d_half": {"fp64_contents": [0.75, -1.5]},
        "e1": {"uint_contents": [1, 255]},
    }  # fmt: skip


def test_fp16_has_no_typed_field(ours, url):
    tensor = {"name": "x", "datatype": "FP16", "shape": ["2"], "contents": {"fp32_contents": [1, 2]}}
    request = {"model_name": "half", "inputs": [tensor]}
    code, message = call(ours, our_stub_infer, url, request)[1:]
    assert code == "INVALID_ARGUMENT"
    assert "FP16 has no typed contents field; send it in raw_input_contents" in message


ERRORS = [
    # label, model, request tensors (name, shape, datatype, contents), code, message fragment
    ("unknown model", "nope", [("x", [1, 4], "FP32", {"fp32_contents": [1, 2, 3, 4]})], "NOT_FOUND",
     "model 'nope' is not in the repository"),
    ("bad shape", "scale", [("x", [1, 3], "FP32", {"fp32_contents": [1, 2, 3]})], "INVALID_ARGUMENT",
     "input 'x': shape [1, 3] does not match [batch, 4]"),
    ("unknown datatype", "scale", [("x", [1, 4], "FP8", {"fp32_contents": [1, 2, 3, 4]})], "INVALID_ARGUMENT",
     "unknown datatype 'FP8'"),
    ("datatype not the model's", "scale", [("x", [1, 4], "INT32", {"int_contents": [1, 2, 3, 4]})],
     "INVALID_ARGUMENT", "datatype INT32 does not match the model's FP32"),
    ("values in another type's field", "scale", [("x", [1, 4], "FP32", {"int_contents": [1, 2, 3, 4]})],
     "INVALID_ARGUMENT", "FP32 values go in contents.fp32_contents, not contents.int_contents"),
    ("fewer values than the shape", "scale", [("x", [2, 4], "FP32", {"fp32_contents": [1, 2, 3, 4]})],
     "INVALID_ARGUMENT", "shape [2, 4] needs 8 values but contents.fp32_contents has 4"),
    ("out of range for INT8", "scale", [("x", [1, 2], "INT8", {"int_contents": [1, 300]})],
     "INVALID_ARGUMENT", "values out of range for INT8"),
    ("batch above max_batch_size", "scale", [("x", [9, 4], "FP32", {"fp32_contents": [0.0] * 36})],
     "INVALID_ARGUMENT", "max_batch_size 8"),
    ("invalid model name", "-bad", [("x", [1, 4], "FP32", {"fp32_contents": [1, 2, 3, 4]})],
     "INVALID_ARGUMENT", "model name '-bad' is not allowed"),
]  # fmt: skip


GRPC_ONLY = {"values in another type's field"}  # JSON has no per-datatype fields
WORDED_FOR_GRPC = {"fewer values than the shape"}  # the message names contents.fp32_contents, not 'data'


@pytest.mark.parametrize(("label", "model", "tensors", "code", "message"), named(ERRORS))
def test_errors_carry_the_rest_status_as_a_grpc_code_and_the_same_message(
    label, model, tensors, code, message, ours, url, server
):
    inputs = [
        {"name": n, "shape": [str(d) for d in s], "datatype": t, "contents": c} for n, s, t, c in tensors
    ]
    answer = call(ours, our_stub_infer, url, {"model_name": model, "inputs": inputs})
    assert answer[:2] == ("ERROR", code) and message in answer[2], answer
    if label in GRPC_ONLY:
        return
    rest_inputs = [
        {"name": n, "shape": s, "datatype": t, "data": v} for n, s, t, c in tensors for v in c.values()
    ]
    status, rest = server.json("POST", f"/v2/models/{model}/infer", {"inputs": rest_inputs})
    assert {400: "INVALID_ARGUMENT", 404: "NOT_FOUND", 503: "UNAVAILABLE"}[status] == code
    if label not in WORDED_FOR_GRPC:
        assert rest["error"] == answer[2]


def test_tritonclient_errors_for_unknown_model_and_wrong_shape(child, url):
    x = np.zeros((1, 3), np.float32)
    assert call(child, triton_infer, url, "nope", [("x", x)])[:2] == ("ERROR", "NOT_FOUND")
    code, message = call(child, triton_infer, url, "scale", [("x", x)])[1:]
    assert code == "INVALID_ARGUMENT" and "does not match [batch, 4]" in message


def test_repository_unload_and_load_with_tritonclient(child, url):
    x = np.ones((1, 4), np.float32)
    assert call(child, triton, url, "unload_model", "scale") is None
    assert call(child, triton, url, "is_model_ready", "scale") is False
    code, message = call(child, triton_infer, url, "scale", [("x", x)])[1:]
    assert code == "UNAVAILABLE" and "unloaded by request" in message
    assert call(child, triton, url, "load_model", "scale") is None
    np.testing.assert_array_equal(call(child, triton_infer, url, "scale", [("x", x)])["y"], x * 2)
    assert call(child, triton, url, "load_model", "absent")[1] == "NOT_FOUND"
    assert call(child, triton, url, "unload_model", "absent")[1] == "NOT_FOUND"


def test_bytes_tensors_typed_and_raw():
    """No torch model takes BYTES, so the codec is checked on its own (in a child, like every user of
    our inference proto here): typed bytes_contents and length-prefixed raw contents, both ways."""
    words = [b"cat", b"", "dög".encode()]
    raw = b"".join(len(w).to_bytes(4, "little") + w for w in words)
    typed = {"name": "t", "datatype": "BYTES", "shape": ["3"], "contents": {"bytes_contents": [
        "Y2F0", "", "ZMO2Zw=="]}}  # fmt: skip
    with in_child() as pool:
        from_typed = call(pool, codec_round_trip, {"inputs": [typed]}, [])
        from_raw = call(
            pool, codec_round_trip, {"inputs": [{"name": "t", "datatype": "BYTES", "shape": ["3"]}]}, [raw]
        )
        short = call(
            pool, codec_round_trip, {"inputs": [{"name": "t", "datatype": "BYTES", "shape": ["4"]}]}, [raw]
        )
    assert from_typed["values"] == from_raw["values"] == {"t": words}
    assert from_typed["typed"]["outputs"][0]["contents"] == typed["contents"]
    assert from_typed["raw"] == [raw]
    assert short[:2] == ("ERROR", "INVALID_ARGUMENT") and "BYTES data ends after 3 of 4 elements" in short[2]


@pytest.mark.parametrize("value", ["70000", "-1"])
def test_a_grpc_port_out_of_range_is_refused_before_anything_starts(value, tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "kpa", "predictor", "--model-repository", str(tmp_path), "--grpc-port", value],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2 and f"--grpc-port {value} is not a port number (0-65535)" in result.stderr


def samples(server) -> dict[tuple[str, str, str], float]:
    """(sample name, model, response code or "") -> value, from the REST port's /metrics."""
    status, _, body = server.request("GET", "/metrics")
    assert status == 200
    return {
        (s.name, s.labels.get("model_name", ""), s.labels.get("response_code", "")): s.value
        for family in text_string_to_metric_families(body.decode())
        for s in family.samples
        if s.name.startswith(("kpa_predictor_requests", "request_")) and "le" not in s.labels
    }


def test_grpc_inference_is_counted_and_timed_in_the_same_metrics_as_rest(child, url, server):
    before = samples(server)
    x = np.arange(4, dtype=np.float32).reshape(1, 4)
    for _ in range(3):
        np.testing.assert_array_equal(call(child, triton_infer, url, "scale", [("x", x)])["y"], x * 2)
    assert (
        call(child, triton_infer, url, "scale", [("x", np.zeros((1, 3), np.float32))])[1]
        == "INVALID_ARGUMENT"
    )
    assert call(child, triton_infer, url, "nope", [("x", x)])[1] == "NOT_FOUND"
    after = samples(server)

    def added(name: str, code: str = "") -> float:
        return after.get((name, "scale", code), 0.0) - before.get((name, "scale", code), 0.0)

    assert added("kpa_predictor_requests_total", "200") == 3
    assert added("kpa_predictor_requests_total", "400") == 1  # as REST would have answered it
    assert not any(model == "nope" for _, model, _ in after)  # an unknown model is no series (as REST)
    assert added("request_preprocess_seconds_count") == 3  # the 400 failed in decode, as in REST
    assert added("request_predict_seconds_count") == 3 and added("request_predict_seconds_sum") > 0
    assert added("request_postprocess_seconds_count") == 3
