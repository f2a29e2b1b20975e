"""V2 gRPC tensors to and from the codec's ``Tensor``: the gRPC face of ``predictor.protocol``.

A gRPC input carries its values either in the typed ``InferTensorContents`` field of its datatype or,
for every input of the request at once, in ``raw_input_contents`` — little-endian bytes laid out as the
REST binary extension lays them out, so ``protocol.from_binary`` reads them. FP16 and BF16 have no typed
field and travel raw only. Typed values pass through ``protocol.json_array``, the REST path's check, so
300 for an INT8 input is refused here as it is there.

Answers mirror the request, as KServe's server does: raw outputs for a raw request (what tritonclient
sends and reads), typed ``contents`` otherwise — unless an output has no typed field (FP16, BF16), since
one response uses raw contents for all outputs or for none.

Pure: messages in, tensors out and back; a client's mistake raises ``ProtocolError`` naming the input.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from predictor import datatypes
from predictor.datatypes import DataType
from predictor.protocol import ProtocolError, Tensor, from_binary, json_array, to_binary
from predictor.protos.grpc_predict_v2_pb2 import ModelInferRequest, ModelInferResponse

TYPED_FIELDS = {
    "BOOL": "bool_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}  # FP16 and BF16: raw_input_contents / raw_output_contents only
_FIELD_DTYPES = {
    "bool_contents": np.bool_,
    "uint_contents": np.uint32,
    "uint64_contents": np.uint64,
    "int_contents": np.int32,
    "int64_contents": np.int64,
    "fp32_contents": np.float32,
    "fp64_contents": np.float64,
}


@dataclass
class DecodedRequest:
    inputs: list[Tensor]
    outputs: list[str] | None  # None: every output of the model
    raw: bool  # the inputs came in raw_input_contents: answer in raw_output_contents


def decode_request(request: ModelInferRequest) -> DecodedRequest:
    if not request.inputs:
        raise ProtocolError("request needs at least one input")
    raw = request.raw_input_contents
    if raw and len(raw) != len(request.inputs):
        raise ProtocolError(
            f"raw_input_contents has {len(raw)} entries for {len(request.inputs)} inputs: "
            "give one per input, in input order"
        )
    inputs = [_decode_input(tensor, i, raw[i] if raw else None) for i, tensor in enumerate(request.inputs)]
    outputs = None
    if request.outputs:
        outputs = []
        for output in request.outputs:
            if "classification" in output.parameters:
                raise ProtocolError(f"output {output.name!r}: the classification extension is not supported")
            outputs.append(output.name)
    return DecodedRequest(inputs, outputs, bool(raw))


def _decode_input(tensor: ModelInferRequest.InferInputTensor, index: int, raw: bytes | None) -> Tensor:
    name = tensor.name
    if not name:
        raise ProtocolError(f"inputs[{index}] needs a non-empty name")
    try:
        dtype = datatypes.lookup(tensor.datatype)
    except KeyError as exc:
        raise ProtocolError(f"input {name!r}: {exc.args[0]}") from None
    shape = tuple(tensor.shape)
    if any(d < 0 for d in shape):
        raise ProtocolError(f"input {name!r}: shape {list(shape)} must hold non-negative sizes")
    count = math.prod(shape)
    typed = [field.name for field, _ in tensor.contents.ListFields()]
    if raw is not None:
        if typed:
            raise ProtocolError(
                f"input {name!r} has contents.{typed[0]} but the request uses raw_input_contents; "
                "send every input one way"
            )
        values = from_binary(dtype, memoryview(raw), count, name, f"raw_input_contents[{index}]")
    else:
        values = _typed_values(tensor, dtype, count, typed)
    return Tensor(name, dtype.name, values.reshape(shape))


def _typed_values(
    tensor: ModelInferRequest.InferInputTensor, dtype: DataType, count: int, present: list[str]
) -> np.ndarray:
    name = tensor.name
    field = TYPED_FIELDS.get(dtype.name)
    if field is None:
        raise ProtocolError(
            f"input {name!r}: {dtype.name} has no typed contents field; send it in raw_input_contents"
        )
    stray = [other for other in present if other != field]
    if stray:
        raise ProtocolError(
            f"input {name!r}: {dtype.name} values go in contents.{field}, not contents.{stray[0]}"
        )
    values = getattr(tensor.contents, field)
    if len(values) != count:
        raise ProtocolError(
            f"input {name!r}: shape {list(tensor.shape)} needs {count} values "
            f"but contents.{field} has {len(values)}"
        )
    if dtype.name == "BYTES":
        items = np.empty(count, dtype=object)
        items[:] = list(values)
        return items
    return json_array(dtype, np.asarray(values, dtype=_FIELD_DTYPES[field]), name)


def encode_response(
    model_name: str, model_version: str, request_id: str, outputs: Sequence[Tensor], raw: bool
) -> ModelInferResponse:
    response = ModelInferResponse(model_name=model_name, model_version=model_version, id=request_id)
    typed = not raw and all(tensor.datatype in TYPED_FIELDS for tensor in outputs)
    for tensor in outputs:
        entry = response.outputs.add(name=tensor.name, datatype=tensor.datatype, shape=tensor.shape)
        if typed:
            flat = np.ascontiguousarray(tensor.data).reshape(-1)
            getattr(entry.contents, TYPED_FIELDS[tensor.datatype]).extend(flat.tolist())
    if not typed:
        response.raw_output_contents.extend(to_binary(tensor) for tensor in outputs)
    return response
