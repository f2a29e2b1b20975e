"""The V2/V1 wire codecs: every datatype round-trips through JSON and the binary extension, and each
kind of malformed request is refused with a message naming the field."""

import struct

import numpy as np
import orjson
import pytest

from predictor import datatypes
from predictor.protocol import (
    ProtocolError,
    Tensor,
    decode_infer_request,
    decode_v1_request,
    encode_infer_response,
    encode_v1_response,
)

# datatype -> values a client may send in JSON
JSON_VALUES = {
    "BOOL": [True, False, True, True],
    "UINT8": [0, 1, 254, 255],
    "UINT16": [0, 1, 65534, 65535],
    "UINT32": [0, 1, 2**32 - 2, 2**32 - 1],
    "UINT64": [0, 1, 2**40, 2**63 - 1],
    "INT8": [-128, -1, 0, 127],
    "INT16": [-32768, -1, 0, 32767],
    "INT32": [-(2**31), -1, 0, 2**31 - 1],
    "INT64": [-(2**63), -1, 0, 2**63 - 1],
    "FP16": [0.5, -2.0, 1024.0, 0.0],
    "FP32": [0.25, -1.5, 3.0e10, 0.0],
    "FP64": [0.1, -1e300, 2.5, 0.0],
    "BF16": [1.0, -2.0, 0.5, 256.0],
    "BYTES": ["a", "", "héllo", "xyz"],
}


def _request(inputs, **extra) -> bytes:
    return orjson.dumps({"inputs": inputs, **extra})


def _binary_request(tensors: list[tuple[str, str, list[int], bytes]], **extra) -> tuple[bytearray, int]:
    header = orjson.dumps(
        {
            "inputs": [
                {"name": n, "datatype": t, "shape": s, "parameters": {"binary_data_size": len(raw)}}
                for n, t, s, raw in tensors
            ],
            **extra,
        }
    )
    return bytearray(header + b"".join(raw for *_, raw in tensors)), len(header)


def _raw(datatype: str, values: list) -> bytes:
    if datatype == "BYTES":
        return b"".join(struct.pack("<I", len(v.encode())) + v.encode() for v in values)
    if datatype == "BF16":
        return datatypes.bf16_from_floats(np.array(values)).tobytes()
    return np.array(values, dtype=datatypes.BY_NAME[datatype].numpy).tobytes()


@pytest.mark.parametrize("datatype", sorted(JSON_VALUES))
def test_every_datatype_decodes_the_same_from_json_and_binary(datatype):
    values = JSON_VALUES[datatype]
    from_json = decode_infer_request(
        _request([{"name": "x", "datatype": datatype, "shape": [2, 2], "data": values}]), None
    )
    body, length = _binary_request([("x", datatype, [2, 2], _raw(datatype, values))])
    from_binary = decode_infer_request(body, length)
    a, b = from_json.inputs[0], from_binary.inputs[0]
    assert a.shape == b.shape == (2, 2)
    assert a.datatype == b.datatype == datatype
    assert a.data.tolist() == b.data.tolist()


@pytest.mark.parametrize("datatype", sorted(JSON_VALUES))
def test_every_datatype_encodes_to_json_and_binary_that_decode_back(datatype):
    values = JSON_VALUES[datatype]
    decoded = decode_infer_request(
        _request([{"name": "x", "datatype": datatype, "shape": [4], "data": values}]), None
    )
    tensor = Tensor("y", datatype, decoded.inputs[0].data)
    body, length = encode_infer_response("m", "1", "id-7", [tensor], [False])
    assert length is None
    doc = orjson.loads(body)
    assert doc["id"] == "id-7" and doc["model_version"] == "1"
    out = doc["outputs"][0]
    assert (out["name"], out["datatype"], out["shape"]) == ("y", datatype, [4])
    if datatype in ("FP16", "BF16", "FP32"):
        np.testing.assert_allclose(out["data"], values, rtol=1e-2)
    else:
        assert out["data"] == values
    body, length = encode_infer_response("m", "1", None, [tensor], [True])
    header = orjson.loads(body[:length])
    assert "data" not in header["outputs"][0]
    assert body[length:] == _raw(datatype, values)


def test_bf16_rounds_to_nearest_even_and_keeps_nan():
    bits = datatypes.bf16_from_floats(
        np.array([1.0, 1.00390625, 1.01171875, np.nan, np.inf], dtype=np.float32)
    )
    widened = datatypes.bf16_to_floats(bits)
    assert widened[:3].tolist() == [1.0, 1.0, 1.015625]
    assert np.isnan(widened[3]) and widened[4] == np.inf


def test_nested_json_data_is_accepted_row_major():
    request = decode_infer_request(
        _request([{"name": "x", "datatype": "INT32", "shape": [2, 3], "data": [[1, 2, 3], [4, 5, 6]]}]), None
    )
    assert request.inputs[0].data.tolist() == [[1, 2, 3], [4, 5, 6]]


def test_binary_inputs_mix_with_json_inputs_in_order():
    header = orjson.dumps(
        {
            "inputs": [
                {"name": "a", "datatype": "FP32", "shape": [2], "parameters": {"binary_data_size": 8}},
                {"name": "b", "datatype": "INT64", "shape": [1], "data": [9]},
                {"name": "c", "datatype": "UINT8", "shape": [3], "parameters": {"binary_data_size": 3}},
            ]
        }
    )
    body = header + np.array([1.5, 2.5], np.float32).tobytes() + bytes([7, 8, 9])
    request = decode_infer_request(body, len(header))
    assert [t.data.tolist() for t in request.inputs] == [[1.5, 2.5], [9], [7, 8, 9]]


def test_misaligned_binary_data_is_realigned_for_the_kernels():
    for pad in range(8):
        body, length = _binary_request([("x", "FP64", [2], np.array([1.0, 2.0]).tobytes())], id="p" * pad)
        data = decode_infer_request(body, length).inputs[0].data
        assert data.ctypes.data % 8 == 0 and data.tolist() == [1.0, 2.0]


def test_output_binary_flags_follow_output_then_request_defaults():
    request = decode_infer_request(
        _request(
            [{"name": "x", "datatype": "FP32", "shape": [1], "data": [1]}],
            outputs=[{"name": "a", "parameters": {"binary_data": False}}, {"name": "b"}],
            parameters={"binary_data_output": True},
        ),
        None,
    )
    assert [request.output_is_binary(n) for n in ("a", "b", "c")] == [False, True, True]


@pytest.mark.parametrize(
    ("body", "header_length", "message"),
    [
        (b"{not json", None, "not valid JSON"),
        (b"[1, 2]", None, "must be a JSON object"),
        (b'{"inputs": []}', None, "non-empty 'inputs'"),
        (_request([{"datatype": "FP32", "shape": [1], "data": [1]}]), None, "non-empty string 'name'"),
        (
            _request([{"name": "x", "datatype": "FP33", "shape": [1], "data": [1]}]),
            None,
            "unknown datatype 'FP33'",
        ),
        (
            _request([{"name": "x", "datatype": "FP32", "shape": [-1], "data": [1]}]),
            None,
            "non-negative integers",
        ),
        (
            _request([{"name": "x", "datatype": "FP32", "shape": [True], "data": [1]}]),
            None,
            "non-negative integers",
        ),
        (
            _request([{"name": "x", "datatype": "FP32", "shape": [1.0], "data": [1]}]),
            None,
            "non-negative integers",
        ),
        (
            _request([{"name": "x", "datatype": "FP32", "shape": 1, "data": [1]}]),
            None,
            "non-negative integers",
        ),
        (_request([{"name": "x", "datatype": "FP32", "shape": [3], "data": [1, 2]}]), None, "needs 3 values"),
        (
            _request([{"name": "x", "datatype": "FP32", "shape": [2], "data": [[1], [2, 3]]}]),
            None,
            "rectangular",
        ),
        (_request([{"name": "x", "datatype": "FP32", "shape": [1], "data": ["1.5"]}]), None, "holds strings"),
        (_request([{"name": "x", "datatype": "INT32", "shape": [1], "data": [1.5]}]), None, "needs integers"),
        (_request([{"name": "x", "datatype": "INT8", "shape": [1], "data": [300]}]), None, "out of range"),
        (_request([{"name": "x", "datatype": "BOOL", "shape": [1], "data": [1]}]), None, "booleans"),
        (
            _request([{"name": "x", "datatype": "BYTES", "shape": [1], "data": [5]}]),
            None,
            "must hold strings",
        ),
        (_request([{"name": "x", "datatype": "FP32", "shape": [1]}]), None, "neither 'data' nor"),
        (
            _request([{"name": "x", "datatype": "FP32", "shape": [1], "data": [1]}], id=5),
            None,
            "'id' must be",
        ),
        (
            _request(
                [{"name": "x", "datatype": "FP32", "shape": [1], "data": [1]}],
                outputs=[{"name": "y", "parameters": {"classification": 2}}],
            ),
            None,
            "classification extension",
        ),
        (b'{"inputs": 1}', 99, "body has 13 bytes"),
    ],
    ids=[
        "not-json",
        "not-an-object",
        "no-inputs",
        "input-without-name",
        "unknown-datatype",
        "negative-dim",
        "boolean-dim",
        "float-dim",
        "shape-not-a-list",
        "too-few-values",
        "ragged-data",
        "strings-for-floats",
        "floats-for-ints",
        "int8-out-of-range",
        "ints-for-bools",
        "numbers-for-bytes",
        "no-data",
        "id-not-a-string",
        "classification-asked",
        "binary-length-past-the-body",
    ],
)
def test_malformed_requests_are_refused_with_the_field_named(body, header_length, message):
    with pytest.raises(ProtocolError, match=message):
        decode_infer_request(body, header_length)


@pytest.mark.parametrize(
    ("tensors", "trailing", "message"),
    [
        ([("x", "FP32", [2], b"\0" * 4)], b"", "take 8"),
        ([("x", "FP32", [1], b"\0" * 4)], b"\0", "not claimed"),
        ([("x", "BYTES", [2], struct.pack("<I", 1) + b"a")], b"", "ends after 1 of 2"),
        ([("x", "BYTES", [1], struct.pack("<I", 9) + b"a")], b"", "past the end"),
    ],
    ids=["short-payload", "unclaimed-trailing-bytes", "bytes-end-early", "bytes-length-past-the-end"],
)
def test_inconsistent_binary_payloads_are_refused(tensors, trailing, message):
    body, length = _binary_request(tensors)
    with pytest.raises(ProtocolError, match=message):
        decode_infer_request(body + trailing, length)


def test_binary_size_past_the_end_of_the_body_is_refused():
    body, length = _binary_request([("x", "FP32", [2], b"\0" * 8)])
    with pytest.raises(ProtocolError, match="runs past the end"):
        decode_infer_request(body[:-1], length)


INPUT_TYPES = {"image": datatypes.BY_NAME["FP32"], "mask": datatypes.BY_NAME["BOOL"]}


def test_v1_instances_stack_into_a_batch_and_predictions_come_back_per_row():
    request = decode_v1_request(
        orjson.dumps({"instances": [[1, 2], [3, 4], [5, 6]]}), {"x": datatypes.BY_NAME["FP32"]}
    )
    assert request.row_format and request.inputs[0].shape == (3, 2)
    out = Tensor("y", "FP32", request.inputs[0].data * 2)
    assert orjson.loads(encode_v1_response([out], True)) == {"predictions": [[2, 4], [6, 8], [10, 12]]}


def test_v1_named_instances_feed_several_inputs_and_columnar_outputs_are_named():
    body = orjson.dumps({"instances": [{"image": [1.0], "mask": [True]}, {"image": [2.0], "mask": [False]}]})
    request = decode_v1_request(body, INPUT_TYPES)
    assert [t.data.tolist() for t in request.inputs] == [[[1.0], [2.0]], [[True], [False]]]
    columnar = decode_v1_request(orjson.dumps({"inputs": {"image": [[1.0]], "mask": [[True]]}}), INPUT_TYPES)
    assert not columnar.row_format
    outputs = [Tensor("a", "FP32", np.array([[1.0]], np.float32)), Tensor("b", "INT64", np.array([[7]]))]
    assert orjson.loads(encode_v1_response(outputs, False)) == {"outputs": {"a": [[1.0]], "b": [[7]]}}
    assert orjson.loads(encode_v1_response(outputs, True)) == {"predictions": [{"a": [1.0], "b": [7]}]}


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"instances": [[1]], "inputs": [[1]]}, "exactly one of"),
        ({"instances": []}, "non-empty list"),
        ({"instances": [[1.0]]}, "give each instance as an object"),
        ({"instances": [{"image": [1.0]}]}, "needs all model inputs"),
        ({"inputs": {"image": [[1.0]]}}, "lacks mask"),
        ({"inputs": {"image": [["a"]], "mask": [[True]]}}, "holds strings"),
    ],
    ids=[
        "instances-and-inputs",
        "no-instances",
        "instance-not-an-object",
        "instance-missing-an-input",
        "inputs-missing-one",
        "strings-for-floats",
    ],
)
def test_v1_malformed_requests_are_refused(doc, message):
    with pytest.raises(ProtocolError, match=message):
        decode_v1_request(orjson.dumps(doc), INPUT_TYPES)
