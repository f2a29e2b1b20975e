"""gRPC protocols the predictor serves, and the Python generated from them (committed, like
``predictor/model_config_pb2.py``, so an install needs no protoc).

* ``grpc_predict_v2.proto``: the V2 (Open Inference Protocol) ``inference.GRPCInferenceService``.
* ``model-runtime.proto``: ModelMesh's ``mmesh.ModelRuntime`` SPI (module ``model_runtime_pb2``).

After changing a .proto, regenerate from the repository root (grpcio-tools, whose protoc matches the
protobuf runtime pinned in pyproject.toml)::

    .venv/bin/python -m grpc_tools.protoc -I. --python_out=. --pyi_out=. --grpc_python_out=. \\
        predictor/protos/grpc_predict_v2.proto predictor/protos/model-runtime.proto

tests/unit/test_grpc_protos.py fails while the generated modules lag their .proto, and checks both
protocols against the published files in tests/data/published_protos/.

Note: ``inference.*`` message names are global in protobuf's default descriptor pool, and tritonclient's
and kserve's Python packages register them too, so importing ``grpc_predict_v2_pb2`` in a process that
has imported ``tritonclient.grpc`` or ``kserve`` fails ("duplicate symbol"): those packages also clash
with each other. The predictor process imports none of them.
"""
