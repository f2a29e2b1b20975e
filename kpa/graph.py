"""`kpa graph GRAPH.yaml`: run KServe's InferenceGraph router on our HTTP engine (docs/inference-graph.md).

    kpa graph graph.yaml --port 8080 --entry http://127.0.0.1:8080   # serviceName steps through kpa up
    kpa graph graph.yaml --service-url 'http://{name}-kpa'           # on Kubernetes (the default)

In a `kpa up` stack (a revision with ``graph: graph.yaml``) the port comes from ``$PORT`` and the
entry from ``$KPA_ENTRY_URL``, which the stack gives every user container. Prints one JSON line,
``{"event": "listening", "port": N}``, once it listens; stops on SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import sys
from pathlib import Path

from graph.router import DEFAULT_MAX_BODY_BYTES, DEFAULT_MAX_CONCURRENT_STEPS, GraphRouter
from graph.spec import GraphSpecError, load_graph_text
from graph.targets import DEFAULT_SERVICE_URL, TargetError
from httpengine.limits import Limits, raise_fd_limit
from httpengine.server import HttpServer
from localbackend.pod import ENTRY_URL_ENV as ENTRY_ENV

PROPAGATE_ENV = "PROPAGATE_HEADERS"  # KServe's router: comma-separated header-name patterns


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "graph", nargs="?", help="a YAML file holding one InferenceGraph (serving.kserve.io/v1alpha1)"
    )
    parser.add_argument(
        "--write-demo", metavar="DIR", type=Path,
        help="write the cat/dog pipeline (two small models, graph.yaml, stack.yaml for kpa up) and exit",
    )  # fmt: skip
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (in a pod: 0.0.0.0)")
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8080")),
                        help="port to listen on; 0 picks a free one (default $PORT, else 8080)")  # fmt: skip
    parser.add_argument("--entry", default=os.environ.get(ENTRY_ENV) or None,
                        help=f"kpa up's entry URL: serviceName steps go there with Host: <name> "
                        f"(default ${ENTRY_ENV})")  # fmt: skip
    parser.add_argument("--service-url", default=DEFAULT_SERVICE_URL,
                        help="without --entry: where serviceName steps go, {name} being the step's "
                        f"serviceName (default {DEFAULT_SERVICE_URL})")  # fmt: skip
    parser.add_argument("--propagate-header", action="append", dest="propagate",
                        default=[p for p in os.environ.get(PROPAGATE_ENV, "").split(",") if p],
                        help="a regular expression of request header names passed on to every step; "
                        f"repeatable (default ${PROPAGATE_ENV}, comma-separated, as KServe's)")  # fmt: skip
    parser.add_argument("--max-body-bytes", type=int, default=DEFAULT_MAX_BODY_BYTES,
                        help="largest request body and step answer, bytes")  # fmt: skip
    parser.add_argument("--max-concurrent-steps", type=int, default=DEFAULT_MAX_CONCURRENT_STEPS,
                        help="step calls in flight at once across all requests; more wait")  # fmt: skip


def run(args: argparse.Namespace) -> int:
    if args.write_demo is not None:
        from kpa.graph_demo import write_demo

        stack = write_demo(args.write_demo)
        request = '{"instances": [[0, 0.1, 2, 0.5]]}'
        print(f"kpa graph: wrote {stack}; now: kpa up {stack} & then\n"
              f"  curl -H 'Host: pipeline' localhost:8080/ -d '{request}'")  # fmt: skip
        return 0
    if args.graph is None:
        print("kpa graph: give an InferenceGraph file (or --write-demo DIR)", file=sys.stderr)
        return 2
    path = Path(args.graph)
    try:
        graph = load_graph_text(path.read_text(), str(path))
        router = GraphRouter(
            graph,
            entry=args.entry,
            service_url=args.service_url,
            propagate=args.propagate,
            max_body_bytes=args.max_body_bytes,
            max_concurrent_steps=args.max_concurrent_steps,
        )
    except OSError as exc:
        print(f"kpa graph: cannot read {path}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    except (GraphSpecError, TargetError) as exc:
        print(f"kpa graph: {exc}", file=sys.stderr)
        return 2
    except re.error as exc:
        print(
            f"kpa graph: --propagate-header {exc.pattern!r}: not a regular expression: {exc}", file=sys.stderr
        )
        return 2
    raise_fd_limit()
    asyncio.run(_serve(router, args.host, args.port))
    return 0


async def _serve(router: GraphRouter, host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    limits = Limits(max_body_bytes=router.max_body_bytes)
    server = HttpServer(router, limits=limits, name="graph")
    _, bound = await server.start(host, port)
    print(json.dumps({"event": "listening", "port": bound, "graph": router.graph.name}), flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.shutdown(grace=5.0)
    router.close()
