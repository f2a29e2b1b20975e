"""`kpa predictor`: serve a model repository over KServe V2/V1 (and build the demo repository)."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

DEFAULT_PORT = 8080


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model-repository", type=Path, metavar="DIR", help="the model repository to serve")
    parser.add_argument("--watch", action="store_true", help="load, reload and unload models as files change")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument(
        "--port",
        type=int,
        default=None,
        help=f"port to bind; 0 picks a free one (default: $PORT, else {DEFAULT_PORT})",
    )
    parser.add_argument(
        "--grpc-port",
        type=int,
        nargs="?",
        const=8081,
        default=None,
        help="also serve V2 gRPC (inference.GRPCInferenceService) on this port; alone: 8081, KServe's "
        "default; 0 picks a free one (default: off)",
    )
    parser.add_argument(
        "--modelmesh-port",
        type=int,
        nargs="?",
        const=8085,
        default=None,
        help="also serve ModelMesh's model-runtime SPI (and V2 gRPC) on this port; alone: 8085, where "
        "ModelMesh dials its runtime (default: off)",
    )
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    parser.add_argument("--interop-threads", type=int, default=1, help="torch inter-op threads (default 1)")
    parser.add_argument(
        "--cpu-affinity",
        metavar="CPUS",
        default=None,
        help="run on these CPUs only, e.g. 1 or 0-1 or 0,2 (default: wherever the OS schedules); "
        "with one intra-op thread, one CPU makes the event loop and the model's thread hand off requests "
        "without cross-CPU wake-ups",
    )
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=None,
        help="compiled-model cache (default $KPA_PREDICTOR_CACHE or ~/.cache/kpa-emulator/predictor)",
    )
    parser.add_argument(
        "--build-demo-repo",
        type=Path,
        metavar="DIR",
        help="write the demo models (cnn, transformer) into DIR, then exit (or serve --model-repository)",
    )
    parser.add_argument(
        "--demo-backend",
        default="eager",
        choices=("auto", "eager", "inductor", "zentorch"),
        help="backend written into the demo configs (default eager: no compile time)",
    )
    parser.add_argument(
        "--memory-budget",
        metavar="BYTES",
        default=None,
        help="many models per pod: load models on first request and unload the least recently used to stay "
        "within BYTES of resident models (e.g. 512Mi, 2G); see docs/predictor.md 'Many models per pod'",
    )
    parser.add_argument(
        "--max-models", type=int, default=None, metavar="N", help="the same, keeping at most N models loaded"
    )
    parser.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=args.log_level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    if args.threads < 1 or args.interop_threads < 1:
        print("kpa predictor: --threads and --interop-threads must be >= 1", file=sys.stderr)
        return 2
    port = args.port if args.port is not None else _env_port()
    if port is None:
        return 2
    for flag, value in (("--grpc-port", args.grpc_port), ("--modelmesh-port", args.modelmesh_port)):
        if value is not None and not 0 <= value <= 65535:
            print(f"kpa predictor: {flag} {value} is not a port number (0-65535)", file=sys.stderr)
            return 2
    from predictor.model_cache import Budget, parse_bytes

    try:
        memory = None if args.memory_budget is None else parse_bytes(args.memory_budget, "--memory-budget")
    except ValueError as exc:
        print(f"kpa predictor: {exc}", file=sys.stderr)
        return 2
    if memory == 0 or (args.max_models is not None and args.max_models < 1):
        print(
            "kpa predictor: --memory-budget and --max-models must be > 0 (leave them out: no budget)",
            file=sys.stderr,
        )
        return 2
    from tracing.config import TracingConfigError, tracing_from_env

    try:
        tracing = tracing_from_env(os.environ)  # TRACING_CONFIG_*, OTEL_EXPORTER_OTLP_* (docs/tracing.md)
    except TracingConfigError as exc:
        print(f"kpa predictor: tracing: {exc}", file=sys.stderr)
        return 2
    if args.cpu_affinity is not None:
        allowed = sorted(os.sched_getaffinity(0))
        try:
            os.sched_setaffinity(0, parse_cpus(args.cpu_affinity))
        except ValueError as exc:
            print(f"kpa predictor: --cpu-affinity {args.cpu_affinity!r}: {exc}", file=sys.stderr)
            return 2
        except OSError as exc:
            print(
                f"kpa predictor: --cpu-affinity {args.cpu_affinity!r}: {exc.strerror}; "
                f"this process may use CPUs {','.join(map(str, allowed))}",
                file=sys.stderr,
            )
            return 2
    import torch  # after argument checks: importing torch takes a second or two

    torch.set_num_threads(args.threads)
    torch.set_num_interop_threads(args.interop_threads)
    repository = args.model_repository
    if args.build_demo_repo is not None:
        from predictor.demo_models import build_demo_repository

        build_demo_repository(args.build_demo_repo, backend=args.demo_backend)
        print(f"demo repository written to {args.build_demo_repo}", file=sys.stderr)
        if repository is None:
            return 0
    if repository is None:
        print("kpa predictor: --model-repository DIR is required", file=sys.stderr)
        return 2
    if not repository.is_dir():
        print(f"kpa predictor: --model-repository {str(repository)!r} is not a directory", file=sys.stderr)
        return 2

    import uvloop

    from httpengine.limits import raise_fd_limit
    from predictor.compile_cache import default_cache_dir
    from predictor.server import ServerOptions, serve

    raise_fd_limit()  # the connection cap is derived from the raised limit

    options = ServerOptions(
        repository=repository,
        cache_dir=args.cache_dir or default_cache_dir(),
        host=args.host,
        port=port,
        watch=args.watch,
        grpc_port=args.grpc_port,
        modelmesh_port=args.modelmesh_port,
        budget=Budget(memory, args.max_models),
    )
    traced = None
    if tracing.enabled:
        from tracing.provider import tracer_for  # OpenTelemetry is imported only when tracing

        try:
            traced = tracer_for(tracing, "predictor")
        except TracingConfigError as exc:  # its exporter is not installed
            print(f"kpa predictor: tracing: {exc}", file=sys.stderr)
            return 2
    try:
        uvloop.run(serve(options, tracer=traced[0] if traced else None))
    except OSError as exc:
        print(f"kpa predictor: cannot serve on {args.host}:{port}: {exc}", file=sys.stderr)
        return 1
    finally:
        if traced is not None:
            traced[1].shutdown()  # sends the spans still buffered
    return 0


def _env_port() -> int | None:
    raw = os.environ.get("PORT")
    if raw is None or raw == "":
        return DEFAULT_PORT
    try:
        port = int(raw)
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        print(f"kpa predictor: environment PORT={raw!r} is not a port number (0-65535)", file=sys.stderr)
        return None
    return port


def parse_cpus(text: str) -> set[int]:
    """CPU numbers from a list like ``0,2-3``."""
    cpus: set[int] = set()
    for part in text.split(","):
        first, _, last = part.strip().partition("-")
        if not first.isdigit() or (last and not last.isdigit()):
            raise ValueError("expected CPU numbers and ranges like 0,2-3")
        cpus.update(range(int(first), int(last or first) + 1))
    if not cpus:
        raise ValueError("no CPUs given")
    return cpus
