"""The predictor's gRPC servers (grpcio's asyncio server, on the predictor's own event loop).

* ``--grpc-port``: ``inference.GRPCInferenceService`` (V2 gRPC; KServe's default port is 8081).
* ``--modelmesh-port``: ModelMesh's ``mmesh.ModelRuntime`` SPI, plus the inference service, so a
  ServingRuntime may name this port as its ``grpcEndpoint`` alone (ModelMesh dials 8085 by default).

Each is a separate server so that the model-loading SPI is never reachable on the inference port.
Messages are bounded like REST bodies (``Limits.max_body_bytes``; grpcio answers RESOURCE_EXHAUSTED
past it). Both bind before any model loads and report their ports on the "listening" line.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import grpc

from predictor.manager import ModelManager
from predictor.metrics import PredictorMetrics

GRPC_PORT = 8081  # KServe's default for --grpc-port given without a number
MODELMESH_PORT = 8085  # where ModelMesh dials its runtime by default


@dataclass
class GrpcServers:
    servers: list[grpc.aio.Server] = field(default_factory=list)
    ports: dict[str, int] = field(default_factory=dict)  # "grpc_port" / "modelmesh_port" -> bound port

    async def stop(self, grace: float) -> None:
        """Stop accepting; calls in progress get ``grace`` seconds to finish."""
        for server in self.servers:
            await server.stop(grace)


async def start_grpc(
    manager: ModelManager,
    host: str,
    grpc_port: int | None,
    modelmesh_port: int | None,
    max_message_bytes: int,
    metrics: PredictorMetrics,
    capacity_bytes: int | None = None,
) -> GrpcServers:
    """Bind and start the servers asked for (a port of None: that server is off; 0: a free port).
    Inference is counted into ``metrics``, the REST app's. ``capacity_bytes`` is the memory ModelMesh
    may fill here (``--memory-budget``; None: the default)."""
    started = GrpcServers()
    if grpc_port is None and modelmesh_port is None:
        return started
    # Imported only when a gRPC server is asked for: the generated messages register `inference.*` in
    # protobuf's default pool, as kserve's and tritonclient.grpc's do, and two such registrations in one
    # process fail ("duplicate symbol"). A process embedding the predictor without gRPC can import those.
    from predictor.grpc_inference import InferenceServicer
    from predictor.modelmesh import ModelRuntime
    from predictor.protos.grpc_predict_v2_pb2_grpc import add_GRPCInferenceServiceServicer_to_server
    from predictor.protos.model_runtime_pb2_grpc import add_ModelRuntimeServicer_to_server

    options = [
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.max_send_message_length", max_message_bytes),
    ]
    inference = InferenceServicer(manager, metrics)
    try:
        for key, port in (("grpc_port", grpc_port), ("modelmesh_port", modelmesh_port)):
            if port is None:
                continue
            server = grpc.aio.server(options=options)
            add_GRPCInferenceServiceServicer_to_server(inference, server)
            if key == "modelmesh_port":
                add_ModelRuntimeServicer_to_server(ModelRuntime(manager, capacity_bytes), server)
            address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
            try:
                bound = server.add_insecure_port(address)
            except RuntimeError:
                bound = 0
            if bound == 0:
                raise OSError(f"cannot bind gRPC (--{key.replace('_', '-')}) to {address}")
            await server.start()
            started.servers.append(server)
            started.ports[key] = bound
    except BaseException:
        await started.stop(0)
        raise
    return started
