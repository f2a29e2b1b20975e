"""V2 gRPC client calls run in a child process (``in_child``), returning plain data.

tritonclient.grpc, kserve and our ``grpc_predict_v2_pb2`` each register the ``inference.*`` protobuf
names in the process-wide descriptor pool, and any two of them in one process fail with "duplicate
symbol"; other test modules import kserve. So the test process imports none of these: each call here
imports what it needs inside a spawned child, one per test module, and hands back numpy arrays, dicts
and ``("ERROR", code name, message)`` triples.
"""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from typing import Any


def in_child() -> ProcessPoolExecutor:
    """One spawned worker process (fresh interpreter: nothing the test process imported)."""
    return ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"))


def _error(exc: Exception) -> tuple[str, str, str]:
    import grpc
    from tritonclient.utils import InferenceServerException

    if isinstance(exc, InferenceServerException):
        return "ERROR", str(exc.status()).removeprefix("StatusCode."), exc.message() or ""
    if isinstance(exc, grpc.RpcError):
        return "ERROR", exc.code().name, exc.details() or ""
    raise exc


def triton(url: str, method: str, *args: Any, **kwargs: Any) -> Any:
    """``tritonclient.grpc.InferenceServerClient(url).<method>(*args, **kwargs)``, JSON answers as dicts."""
    import tritonclient.grpc as grpcclient

    with grpcclient.InferenceServerClient(url) as client:
        try:
            return getattr(client, method)(*args, **kwargs)
        except Exception as exc:
            return _error(exc)


def triton_infer(
    url: str,
    model: str,
    inputs: list[tuple[str, Any]],
    outputs: list[str] | None = None,
    headers: dict[str, str] | None = None,
    datatypes: dict[str, str] | None = None,
) -> Any:
    """Infer with tritonclient (raw tensor contents); {output name: array} or an error triple."""
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import np_to_triton_dtype

    with grpcclient.InferenceServerClient(url) as client:
        tensors = []
        for name, array in inputs:
            datatype = (datatypes or {}).get(name) or np_to_triton_dtype(array.dtype)
            tensor = grpcclient.InferInput(name, list(array.shape), datatype)
            tensor.set_data_from_numpy(array)
            tensors.append(tensor)
        wanted = [grpcclient.InferRequestedOutput(name) for name in outputs] if outputs else None
        try:
            result = client.infer(model, tensors, outputs=wanted, headers=headers, request_id="r-1")
        except Exception as exc:
            return _error(exc)
        response = result.get_response(as_json=True)
        return {o["name"]: result.as_numpy(o["name"]) for o in response["outputs"]} | {"$id": response["id"]}


def our_stub_infer(url: str, request: dict, metadata: tuple[tuple[str, str], ...] = ()) -> Any:
    """ModelInfer with a client generated from our proto (typed contents as given); the response as a
    dict (json_format) or an error triple."""
    import grpc
    from google.protobuf import json_format

    from predictor.protos import grpc_predict_v2_pb2 as pb
    from predictor.protos.grpc_predict_v2_pb2_grpc import GRPCInferenceServiceStub

    with grpc.insecure_channel(url) as channel:
        stub = GRPCInferenceServiceStub(channel)
        try:
            response = stub.ModelInfer(
                json_format.ParseDict(request, pb.ModelInferRequest()), metadata=metadata
            )
        except grpc.RpcError as exc:
            return _error(exc)
    return json_format.MessageToDict(response, preserving_proto_field_name=True)


def codec_round_trip(request: dict, raw_inputs: list[bytes]) -> Any:
    """Decode a request with grpc_tensors and encode its inputs back as a response (typed, then raw):
    what BYTES tensors, which no torch model takes, look like on the wire."""
    from google.protobuf import json_format

    from predictor.grpc_tensors import decode_request, encode_response
    from predictor.protocol import ProtocolError
    from predictor.protos import grpc_predict_v2_pb2 as pb

    message = json_format.ParseDict(request, pb.ModelInferRequest())
    message.raw_input_contents.extend(raw_inputs)
    try:
        decoded = decode_request(message)
    except ProtocolError as exc:
        return "ERROR", "INVALID_ARGUMENT", str(exc)
    typed = encode_response("m", "1", "", decoded.inputs, raw=False)
    raw = encode_response("m", "1", "", decoded.inputs, raw=True)
    return {
        "values": {t.name: t.data.tolist() for t in decoded.inputs},
        "typed": json_format.MessageToDict(typed, preserving_proto_field_name=True),
        "raw": list(raw.raw_output_contents),
    }
