"""`kpa controller`: the command shell of the Kubernetes backend's controller (``kubebackend.controller``).

    kpa controller [--kubeconfig PATH | --in-cluster] [--config-namespace kpa-system]
                   [--activator-service kpa-system/kpa-activator] [--host 0.0.0.0] [--port 8080]

It watches the cluster, scales enrolled Deployments and KServe predictors through their scale
subresource, flips each revision's EndpointSlice between the activators and the pods, and serves
``/status``, ``/stats``, ``/metrics`` and ``/healthz`` on ``--port`` (docs/kubernetes.md). Without
``--kubeconfig`` or ``--in-cluster`` it runs in-cluster when ``KUBERNETES_SERVICE_HOST`` is set (a
pod) and from ``~/.kube/config`` otherwise. SIGTERM or Ctrl-C stops it: watches end, writes under way
finish or are dropped, nothing is left running.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys

from kubebackend.rbac import ACTIVATOR, CONFIG_MAP, SYSTEM_NAMESPACE

log = logging.getLogger("kpa.controller")

DEFAULT_PORT = 8080


def namespaced_name(text: str) -> tuple[str, str]:
    """``namespace/name`` (a flag naming a Service); argparse reports the error with the flag's name."""
    namespace, slash, name = text.partition("/")
    if not slash or not namespace or not name or "/" in name:
        raise argparse.ArgumentTypeError(
            f"{text!r}: give namespace/name, e.g. {SYSTEM_NAMESPACE}/{ACTIVATOR}"
        )
    return namespace, name


def configure(parser: argparse.ArgumentParser) -> None:
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--kubeconfig", metavar="PATH", help="kubeconfig file to reach the API server with")
    where.add_argument(
        "--in-cluster", action="store_true", help="use the pod's ServiceAccount (the default inside a pod)"
    )
    parser.add_argument("--context", help="kubeconfig context (default: its current context)")
    parser.add_argument(
        "--config-namespace",
        default=SYSTEM_NAMESPACE,
        help=f"namespace of the {CONFIG_MAP} ConfigMap (default {SYSTEM_NAMESPACE})",
    )
    parser.add_argument(
        "--config-name", default=CONFIG_MAP, help=f"name of the autoscaler ConfigMap (default {CONFIG_MAP})"
    )
    parser.add_argument(
        "--activator-service",
        type=namespaced_name,
        default=(SYSTEM_NAMESPACE, ACTIVATOR),
        metavar="NAMESPACE/NAME",
        help=f"the activators' Service, whose EndpointSlices proxy mode points at "
        f"(default {SYSTEM_NAMESPACE}/{ACTIVATOR})",
    )
    parser.add_argument("--host", default="0.0.0.0", help="address of the status API (default 0.0.0.0)")
    parser.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help=f"status API port (default {DEFAULT_PORT}; 0 = any)"
    )
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])


def client_configuration(args: argparse.Namespace):
    """The official client's Configuration from the flags; raises ConfigException naming the problem."""
    from kubernetes import client, config

    configuration = client.Configuration()
    in_cluster = args.in_cluster or (not args.kubeconfig and "KUBERNETES_SERVICE_HOST" in os.environ)
    if in_cluster:
        config.load_incluster_config(client_configuration=configuration)
    else:
        config.load_kube_config(
            config_file=args.kubeconfig, context=args.context, client_configuration=configuration
        )
    return configuration


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
        stream=sys.stderr,
    )
    for noisy in ("httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    from kubernetes.config import ConfigException

    try:
        configuration = client_configuration(args)
    except (ConfigException, OSError) as exc:
        print(
            f"kpa controller: cannot reach a cluster: {exc}; give --kubeconfig PATH, or run in a pod "
            f"(--in-cluster)",
            file=sys.stderr,
        )
        return 2
    import uvloop

    try:
        return uvloop.run(_main(args, configuration))
    except KeyboardInterrupt:
        return 130


async def _main(args: argparse.Namespace, configuration) -> int:
    from kubebackend.controller import Controller, ControllerOptions

    activator_namespace, activator_service = args.activator_service
    options = ControllerOptions(
        config_namespace=args.config_namespace,
        config_name=args.config_name,
        activator_namespace=activator_namespace,
        activator_service=activator_service,
        host=args.host,
        port=args.port,
    )
    try:
        controller = Controller(configuration, options)
    except OSError as exc:
        print(f"kpa controller: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        starting = asyncio.create_task(controller.start(lead=True))
        stopped = asyncio.create_task(stop.wait())
        await asyncio.wait([starting, stopped], return_when=asyncio.FIRST_COMPLETED)
        if starting.done():
            starting.result()
            print(
                f"kpa controller: leading; status on {controller.status_server.url}/status "
                f"(kpa status --controller {controller.status_server.url})",
                file=sys.stderr,
            )
            await stopped
        else:
            starting.cancel()
    finally:
        log.info("stopping")
        await controller.stop()
    print("kpa controller: stopped", file=sys.stderr)
    return 0
