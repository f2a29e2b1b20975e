"""Section 2 of bench_predictor.py: a 1 MB FP32 tensor through an identity model, tritonclient JSON vs
the binary tensor extension (client p50), and the codec alone in process.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
from bench_predictor_backends import median_ms
from bench_predictor_servers import start_ours

ECHO_CONFIG = """
max_batch_size: 0
input [{ name: "x" data_type: TYPE_FP32 dims: [262144] }]
output [{ name: "y" data_type: TYPE_FP32 dims: [262144] }]
parameters { key: "backend" value { string_value: "eager" } }
"""


def bench_protocol(work: Path, requests: int) -> dict:
    import tritonclient.http as triton

    from predictor.protocol import decode_infer_request, encode_infer_response

    tensor = np.random.default_rng(0).standard_normal(262144).astype(np.float32)  # 1 MiB
    json_body = json.dumps(
        {"inputs": [{"name": "x", "datatype": "FP32", "shape": [262144], "data": tensor.tolist()}]}
    ).encode()
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "x",
                    "datatype": "FP32",
                    "shape": [262144],
                    "parameters": {"binary_data_size": 1 << 20},
                }
            ]
        }
    ).encode()
    binary_body = bytearray(header + tensor.tobytes())
    codec: dict[str, list[float]] = {"json": [], "binary": []}
    for _ in range(15):
        for kind, body, length in (("json", json_body, None), ("binary", binary_body, len(header))):
            began = time.perf_counter()
            request = decode_infer_request(body, length)
            encode_infer_response("echo", "1", None, request.inputs, [kind == "binary"])
            codec[kind].append(time.perf_counter() - began)

    repo = work / "echo-repo"
    (repo / "echo" / "1").mkdir(parents=True)
    (repo / "echo" / "config.pbtxt").write_text(ECHO_CONFIG)
    import torch

    torch.jit.save(torch.jit.script(torch.nn.Identity()), str(repo / "echo" / "1" / "model.pt"))
    server = start_ours(repo, work / "echo-cache")
    client = triton.InferenceServerClient(f"127.0.0.1:{server.port}")
    e2e: dict[str, list[float]] = {"json": [], "binary": []}
    try:
        for index in range(requests + 2):
            for kind in ("json", "binary"):
                request = triton.InferInput("x", [262144], "FP32")
                request.set_data_from_numpy(tensor, binary_data=kind == "binary")
                output = triton.InferRequestedOutput("y", binary_data=kind == "binary")
                began = time.perf_counter()
                result = client.infer("echo", [request], outputs=[output])
                elapsed = time.perf_counter() - began
                assert np.array_equal(result.as_numpy("y"), tensor)
                if index >= 2:
                    e2e[kind].append(elapsed)
    finally:
        client.close()
        server.stop()
    return {
        "codec_ms": {k: round(median_ms(v), 2) for k, v in codec.items()},
        "client_p50_ms": {k: round(median_ms(v), 2) for k, v in e2e.items()},
        "json_body_bytes": len(json_body),
    }
