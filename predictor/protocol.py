"""Wire codecs: KServe V2 (Open Inference Protocol) inference requests/responses and KServe V1 predict.

V2 bodies are JSON, optionally followed by raw tensor bytes (the binary tensor data extension that
tritonclient and the kserve SDK use for large tensors): the request header ``Inference-Header-Content-Length``
says how many leading bytes are JSON, each binary input carries ``parameters.binary_data_size`` instead of
``data``, and the bytes follow in input order. Outputs come back binary when the output asks for
``binary_data`` or the request sets ``binary_data_output``.

Everything here is pure: bytes in, numpy arrays out and back. Anything a client must fix raises
``ProtocolError`` (HTTP 400) with a message that names the offending field.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from predictor import datatypes
from predictor.datatypes import DataType

HEADER_LENGTH = "inference-header-content-length"
_JSON_OPTIONS = orjson.OPT_SERIALIZE_NUMPY


class ProtocolError(ValueError):
    """A malformed request: the client has to change it (HTTP 400)."""


@dataclass
class Tensor:
    name: str
    datatype: str
    data: np.ndarray  # shaped; BF16 as uint16 bit patterns, BYTES as an object array of bytes

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.data.shape)


@dataclass(frozen=True)
class OutputRequest:
    name: str
    binary: bool


@dataclass
class InferRequest:
    id: str | None
    inputs: list[Tensor]
    outputs: list[OutputRequest] | None  # None: every output of the model
    binary_outputs: bool  # the request-wide default for outputs that do not say
    parameters: dict[str, Any] = field(default_factory=dict)

    def output_is_binary(self, name: str) -> bool:
        for requested in self.outputs or ():
            if requested.name == name:
                return requested.binary
        return self.binary_outputs


# --- V2 request ---------------------------------------------------------------------------------


def decode_infer_request(body: bytes | bytearray | memoryview, header_length: int | None) -> InferRequest:
    """Parse a V2 inference request; ``header_length`` is the Inference-Header-Content-Length value."""
    view = memoryview(body)
    if header_length is None:
        json_part, binary = view, view[:0]
    else:
        if not 0 < header_length <= len(view):
            raise ProtocolError(
                f"Inference-Header-Content-Length is {header_length} but the body has {len(view)} bytes"
            )
        json_part, binary = view[:header_length], view[header_length:]
    doc = _load_json(json_part)
    if not isinstance(doc, dict):
        raise ProtocolError("request body must be a JSON object with an 'inputs' list")
    raw_inputs = doc.get("inputs")
    if not isinstance(raw_inputs, list) or not raw_inputs:
        raise ProtocolError("request needs a non-empty 'inputs' list")
    parameters = _parameters(doc.get("parameters"), "request")
    inputs: list[Tensor] = []
    offset = 0
    for index, raw in enumerate(raw_inputs):
        tensor, offset = _decode_input(raw, index, binary, offset)
        inputs.append(tensor)
    if offset != len(binary):
        raise ProtocolError(
            f"{len(binary) - offset} bytes of binary data after the JSON header are not claimed by any "
            "input's binary_data_size"
        )
    request_id = doc.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise ProtocolError(f"request 'id' must be a string, got {type(request_id).__name__}")
    binary_outputs = parameters.get("binary_data_output", False)
    if not isinstance(binary_outputs, bool):
        raise ProtocolError("parameter 'binary_data_output' must be true or false")
    return InferRequest(
        id=request_id,
        inputs=inputs,
        outputs=_decode_outputs(doc.get("outputs"), binary_outputs),
        binary_outputs=binary_outputs,
        parameters=parameters,
    )


def _load_json(data: memoryview | bytes | bytearray) -> Any:
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise ProtocolError(f"body is not valid JSON: {exc}") from None


def _parameters(raw: Any, where: str) -> dict[str, Any]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ProtocolError(f"{where} 'parameters' must be an object")
    return raw


def _decode_input(raw: Any, index: int, binary: memoryview, offset: int) -> tuple[Tensor, int]:
    if not isinstance(raw, dict):
        raise ProtocolError(f"inputs[{index}] must be an object with name, shape, datatype and data")
    name = raw.get("name")
    if not isinstance(name, str) or not name:
        raise ProtocolError(f"inputs[{index}] needs a non-empty string 'name'")
    try:
        dtype = datatypes.lookup(raw.get("datatype"))
    except KeyError as exc:
        raise ProtocolError(f"input {name!r}: {exc.args[0]}") from None
    shape = _shape(raw.get("shape"), f"input {name!r}")
    count = math.prod(shape)
    parameters = _parameters(raw.get("parameters"), f"input {name!r}")
    size = parameters.get("binary_data_size")
    if size is not None:
        if "data" in raw:
            raise ProtocolError(f"input {name!r} has both 'data' and parameters.binary_data_size; send one")
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise ProtocolError(f"input {name!r}: binary_data_size must be a non-negative integer")
        if offset + size > len(binary):
            raise ProtocolError(
                f"input {name!r}: binary_data_size {size} runs past the end of the body "
                f"({len(binary) - offset} bytes of binary data left)"
            )
        values = from_binary(dtype, binary[offset : offset + size], count, name)
        offset += size
    elif "data" in raw:
        values = json_array(dtype, raw["data"], name).reshape(-1)
        if values.size != count:
            raise ProtocolError(
                f"input {name!r}: shape {list(shape)} needs {count} values but 'data' has {values.size}"
            )
    else:
        raise ProtocolError(f"input {name!r} has neither 'data' nor parameters.binary_data_size")
    return Tensor(name, dtype.name, values.reshape(shape)), offset


def _shape(raw: Any, where: str) -> tuple[int, ...]:
    if type(raw) is list:
        for d in raw:
            if type(d) is not int or d < 0:  # JSON integers only: neither booleans nor floats
                break
        else:
            return tuple(raw)
    raise ProtocolError(f"{where}: 'shape' must be a list of non-negative integers, got {raw!r}")


def from_binary(
    dtype: DataType, chunk: memoryview, count: int, name: str, field: str = "binary_data_size"
) -> np.ndarray:
    """``count`` values of input ``name`` from raw little-endian bytes (BYTES: 4-byte length prefixes),
    as the binary extension and V2 gRPC's ``raw_input_contents`` (``field``, in errors) carry them."""
    if dtype.name == "BYTES":
        return _unpack_bytes(chunk, count, name)
    expected = count * dtype.itemsize
    if len(chunk) != expected:
        raise ProtocolError(
            f"input {name!r}: {field} is {len(chunk)} bytes but {count} {dtype.name} values take {expected}"
        )
    values = np.frombuffer(chunk, dtype=dtype.numpy)
    if not values.flags.aligned:  # the JSON header has any length: realign for the kernels
        values = values.copy()
    return values


def _unpack_bytes(chunk: memoryview, count: int, name: str) -> np.ndarray:
    items = np.empty(count, dtype=object)
    offset = 0
    for i in range(count):
        if offset + 4 > len(chunk):
            raise ProtocolError(f"input {name!r}: BYTES data ends after {i} of {count} elements")
        (length,) = struct.unpack_from("<I", chunk, offset)
        offset += 4
        if offset + length > len(chunk):
            raise ProtocolError(f"input {name!r}: BYTES element {i} claims {length} bytes past the end")
        items[i] = bytes(chunk[offset : offset + length])
        offset += length
    if offset != len(chunk):
        raise ProtocolError(f"input {name!r}: {len(chunk) - offset} stray bytes after {count} BYTES elements")
    return items


_KINDS_ACCEPTED = {"b": "b", "u": "iu", "i": "iu", "f": "iuf"}


def json_array(dtype: DataType, data: Any, name: str) -> np.ndarray:
    """Convert JSON values (nested lists, row-major) to an array of ``dtype``, refusing lossy guesses."""
    if dtype.name == "BYTES":
        return _json_bytes(data, name)
    try:
        values = np.asarray(data)
    except (ValueError, TypeError):
        raise ProtocolError(f"input {name!r}: 'data' is not a rectangular array of values") from None
    if values.size == 0:
        return values.astype(dtype.numpy)
    target_kind = "f" if dtype.name == "BF16" else dtype.numpy.kind
    if values.dtype.kind not in _KINDS_ACCEPTED[target_kind]:
        raise ProtocolError(
            f"input {name!r}: {dtype.name} needs {_kind_words(target_kind)}, "
            f"'data' holds {_kind_words(values.dtype.kind)}"
        )
    if target_kind in "iu":
        info = np.iinfo(dtype.numpy)
        if values.min() < info.min or values.max() > info.max:
            raise ProtocolError(f"input {name!r}: values out of range for {dtype.name}")
    if dtype.name == "BF16":
        return datatypes.bf16_from_floats(values)
    return values.astype(dtype.numpy, copy=False)


def _kind_words(kind: str) -> str:
    return {
        "b": "booleans (true/false)",
        "i": "integers",
        "u": "integers",
        "f": "numbers",
        "U": "strings",
        "O": "mixed or nested values",
    }.get(kind, f"values of kind {kind!r}")


def _json_bytes(data: Any, name: str) -> np.ndarray:
    flat: list[bytes] = []

    def walk(node: Any) -> None:
        if isinstance(node, list):
            for item in node:
                walk(item)
        elif isinstance(node, str):
            flat.append(node.encode())
        else:
            raise ProtocolError(f"input {name!r}: BYTES 'data' must hold strings, got {type(node).__name__}")

    walk(data)
    items = np.empty(len(flat), dtype=object)
    items[:] = flat
    return items


def _decode_outputs(raw: Any, default_binary: bool) -> list[OutputRequest] | None:
    if raw is None:
        return None
    if not isinstance(raw, list):
        raise ProtocolError("'outputs' must be a list of {name, parameters} objects")
    requested = []
    for index, item in enumerate(raw):
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise ProtocolError(f"outputs[{index}] needs a string 'name'")
        parameters = _parameters(item.get("parameters"), f"output {item['name']!r}")
        if "classification" in parameters:
            raise ProtocolError(f"output {item['name']!r}: the classification extension is not supported")
        binary = parameters.get("binary_data", default_binary)
        if not isinstance(binary, bool):
            raise ProtocolError(f"output {item['name']!r}: binary_data must be true or false")
        requested.append(OutputRequest(item["name"], binary))
    return requested


# --- V2 response --------------------------------------------------------------------------------


def encode_infer_response(
    model_name: str,
    model_version: str,
    request_id: str | None,
    outputs: Sequence[Tensor],
    binary: Sequence[bool],
) -> tuple[bytes, int | None]:
    """Serialize a V2 response; returns the body and, when binary data follows the JSON, the JSON length."""
    entries = []
    chunks: list[bytes] = []
    for tensor, as_binary in zip(outputs, binary, strict=True):
        entry: dict[str, Any] = {"name": tensor.name, "datatype": tensor.datatype, "shape": tensor.shape}
        if as_binary:
            raw = to_binary(tensor)
            entry["parameters"] = {"binary_data_size": len(raw)}
            chunks.append(raw)
        else:
            entry["data"] = json_values(tensor)
        entries.append(entry)
    doc: dict[str, Any] = {"model_name": model_name, "model_version": model_version, "outputs": entries}
    if request_id is not None:
        doc["id"] = request_id
    header = orjson.dumps(doc, option=_JSON_OPTIONS)
    if not chunks:
        return header, None
    return b"".join([header, *chunks]), len(header)


def json_values(tensor: Tensor) -> Any:
    """Row-major flat values of ``tensor`` in a form orjson serializes natively."""
    flat = np.ascontiguousarray(tensor.data).reshape(-1)
    if tensor.datatype == "BF16":
        return datatypes.bf16_to_floats(flat)
    if tensor.datatype == "BYTES":
        try:
            return [item.decode() for item in flat]
        except UnicodeDecodeError:
            raise ProtocolError(
                f"output {tensor.name!r} holds bytes that are not UTF-8; ask for it with binary_data"
            ) from None
    return flat


def to_binary(tensor: Tensor) -> bytes:
    """The raw little-endian bytes of ``tensor``, laid out as ``from_binary`` reads them."""
    if tensor.datatype == "BYTES":
        return b"".join(struct.pack("<I", len(item)) + item for item in tensor.data.reshape(-1))
    return np.ascontiguousarray(tensor.data).tobytes()


def encode_error(message: str) -> bytes:
    return orjson.dumps({"error": message})


def encode_json(doc: Any) -> bytes:
    return orjson.dumps(doc, option=_JSON_OPTIONS)


# --- V1 -----------------------------------------------------------------------------------------


@dataclass
class V1Request:
    inputs: list[Tensor]
    row_format: bool  # "instances" in, "predictions" out; otherwise columnar "inputs"/"outputs"


def decode_v1_request(body: bytes | bytearray, input_types: Mapping[str, DataType]) -> V1Request:
    """Parse ``{"instances": [...]}`` (one entry per batch row) or ``{"inputs": ...}`` (columnar).

    ``input_types`` maps the model's input names, in order, to their datatypes: V1 carries no types.
    """
    doc = _load_json(body)
    if not isinstance(doc, dict) or ("instances" in doc) == ("inputs" in doc):
        raise ProtocolError("V1 request must be a JSON object with exactly one of 'instances' or 'inputs'")
    names = list(input_types)
    if "instances" in doc:
        instances = doc["instances"]
        if not isinstance(instances, list) or not instances:
            raise ProtocolError("'instances' must be a non-empty list, one entry per example")
        if all(isinstance(row, dict) for row in instances):
            columns = {n: [row.get(n) for row in instances] for n in names}
            if any(v is None for n in names for v in columns[n]):
                raise ProtocolError(f"every instance needs all model inputs: {', '.join(names)}")
        elif len(names) == 1:
            columns = {names[0]: instances}
        else:
            raise ProtocolError(f"the model takes inputs {', '.join(names)}: give each instance as an object")
        row_format = True
    else:
        raw = doc["inputs"]
        if isinstance(raw, dict):
            missing = [n for n in names if n not in raw]
            if missing:
                raise ProtocolError(f"'inputs' lacks {', '.join(missing)}")
            columns = {n: raw[n] for n in names}
        elif len(names) == 1:
            columns = {names[0]: raw}
        else:
            raise ProtocolError(f"the model takes inputs {', '.join(names)}: give 'inputs' as an object")
        row_format = False
    tensors = [Tensor(n, input_types[n].name, json_array(input_types[n], columns[n], n)) for n in names]
    return V1Request(tensors, row_format)


def encode_v1_response(outputs: Sequence[Tensor], row_format: bool) -> bytes:
    def values(tensor: Tensor) -> Any:
        return (
            json_values(tensor).reshape(tensor.shape) if tensor.datatype != "BYTES" else json_values(tensor)
        )

    if row_format:
        if len(outputs) == 1:
            return encode_json({"predictions": values(outputs[0])})
        rows = len(outputs[0].data)
        columns = {t.name: values(t) for t in outputs}
        return encode_json({"predictions": [{n: c[i] for n, c in columns.items()} for i in range(rows)]})
    if len(outputs) == 1:
        return encode_json({"outputs": values(outputs[0])})
    return encode_json({"outputs": {t.name: values(t) for t in outputs}})
