"""`kpa controller`: the command shell of the Kubernetes backend's controller (``kubebackend.controller``).

    kpa controller [--kubeconfig PATH | --in-cluster] [--config-namespace kpa-system]
                   [--activator-service kpa-system/kpa-activator] [--host 0.0.0.0] [--port 8080]
                   [--webhook-port 8443] [--webhook-certs {self,cert-manager}] [--queue-proxy-image IMAGE]
                   [--lease-duration 15] [--renew-deadline 10] [--retry-period 2]

It watches the cluster, serves ``/status``, ``/stats``, ``/metrics`` and ``/healthz`` on ``--port``
and the sidecar injector on ``--webhook-port`` (HTTPS, ``kubebackend.webhook_certs``) at once, and
campaigns for Lease ``kpa-controller`` (``kubebackend.leader_election``; identity and pod label from
``POD_NAME``, the Lease, Secret and webhook in ``POD_NAMESPACE``, default kpa-system). While it
leads it scales enrolled Deployments and KServe predictors and flips their EndpointSlices
(docs/kubernetes.md); when it stops leading it stops writing at once and campaigns again. The injected
queue-proxy's image is ``--queue-proxy-image``, by default this pod's own image (its pod read through
``POD_NAME``); its tracing settings are config-tracing's, which this process reads at start as
``TRACING_CONFIG_*``/``OTEL_EXPORTER_OTLP_*`` variables (docs/tracing.md). The webhook's certificate is
made, rotated and its caBundle patched by the controller (``--webhook-certs self``), or made by
cert-manager and only read from its Secret (``--webhook-certs cert-manager``, manifests/cert-manager).
Without ``--kubeconfig`` or ``--in-cluster`` it runs in-cluster when ``KUBERNETES_SERVICE_HOST`` is set
(a pod) and from ``KUBECONFIG`` or ``~/.kube/config`` otherwise.
SIGTERM or Ctrl-C stops it: it stops leading and releases the Lease (the standby takes over within
one retry period), then watches end, the webhook and the status API stop, nothing is left running.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from typing import Any

from kubebackend.leader import Durations
from kubebackend.rbac import ACTIVATOR, CONFIG_MAP, SYSTEM_NAMESPACE
from tracing.config import TracingConfig, TracingConfigError, tracing_from_env

log = logging.getLogger("kpa.controller")

DEFAULT_PORT = 8080
WEBHOOK_PORT = 8443
CONTROLLER_CONTAINER = "controller"  # the manifest's name for this container, when a pod has several
IMAGE_TRIES = 5


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
    parser.add_argument(
        "--host", default="0.0.0.0", help="address of the status API and the webhook (default 0.0.0.0)"
    )
    parser.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help=f"status API port (default {DEFAULT_PORT}; 0 = any)"
    )
    parser.add_argument(
        "--webhook-port",
        type=int,
        default=WEBHOOK_PORT,
        help=f"the sidecar injector's HTTPS port (default {WEBHOOK_PORT}; 0 = any)",
    )
    parser.add_argument(
        "--webhook-certs",
        choices=["self", "cert-manager"],
        default="self",
        help="who makes the webhook's certificate: self (this controller makes and rotates Secret "
        "kpa-webhook-certs and patches the caBundle; the default) or cert-manager (its Certificate "
        "writes the Secret and its cainjector the caBundle; the controller only reads the Secret)",
    )
    parser.add_argument(
        "--queue-proxy-image",
        metavar="IMAGE",
        help="image of the queue-proxy the webhook injects (default: this pod's own image, read from "
        "its pod named by POD_NAME in POD_NAMESPACE)",
    )
    defaults = Durations()
    for flag, default, what in (
        ("--lease-duration", defaults.lease, "how long a standby waits for a silent leader (whole s)"),
        ("--renew-deadline", defaults.renew_deadline, "how long a leader leads without a renewal"),
        ("--retry-period", defaults.retry, "how often each replica reads or renews the Lease"),
    ):
        parser.add_argument(
            flag, type=float, default=default, metavar="SECONDS", help=f"{what} (default {default:g})"
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


def durations(args: argparse.Namespace) -> Durations:
    """The election's durations from the flags; ValueError says which constraint they break."""
    return Durations(lease=args.lease_duration, renew_deadline=args.renew_deadline, retry=args.retry_period)


def own_image(pod: Any) -> str:
    """The image of this controller's container in its pod (a ``V1Pod``): the only container's, or
    the one named ``controller``; ValueError otherwise."""
    containers = list(pod.spec.containers or [])
    if len(containers) > 1:
        containers = [c for c in containers if c.name == CONTROLLER_CONTAINER]
    if len(containers) != 1 or not containers[0].image:
        raise ValueError(
            f"pod {pod.metadata.name} has no single {CONTROLLER_CONTAINER!r} container with an image"
        )
    return str(containers[0].image)


async def queue_proxy_image(args: argparse.Namespace, api_client: Any, stop: asyncio.Event) -> str | None:
    """``--queue-proxy-image``, else this pod's image (``POD_NAME`` in ``POD_NAMESPACE``), read with a
    few retries; None (said on stderr) when neither can be had or ``stop`` came first."""
    if args.queue_proxy_image:
        return str(args.queue_proxy_image)
    pod_name = os.environ.get("POD_NAME")
    namespace = os.environ.get("POD_NAMESPACE") or SYSTEM_NAMESPACE
    if not pod_name:
        print(
            "kpa controller: give --queue-proxy-image IMAGE (outside a pod there is no own image to "
            "default to: POD_NAME is not set)",
            file=sys.stderr,
        )
        return None
    from kubernetes.client import CoreV1Api

    from kubebackend.retry import describe

    core = CoreV1Api(api_client)
    for attempt in range(1, IMAGE_TRIES + 1):
        try:
            pod = await asyncio.to_thread(core.read_namespaced_pod, pod_name, namespace, _request_timeout=10)
            image = own_image(pod)
            log.info("the webhook injects the queue-proxy image %s (this pod's own)", image)
            return image
        except Exception as error:
            log.warning(
                "reading pod %s/%s for its image failed (try %d): %s",
                namespace,
                pod_name,
                attempt,
                describe(error),
            )
        if stop.is_set():
            return None
        await asyncio.sleep(min(2.0**attempt, 10.0))
    print(
        f"kpa controller: cannot read pod {namespace}/{pod_name} for its image; give --queue-proxy-image",
        file=sys.stderr,
    )
    return None


def run(args: argparse.Namespace) -> int:
    try:
        durations(args)
    except ValueError as exc:
        print(f"kpa controller: leader election: {exc}", file=sys.stderr)
        return 2
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
    try:
        tracing = tracing_from_env(os.environ)  # config-tracing, for the queue-proxies the webhook injects
    except TracingConfigError as exc:
        print(f"kpa controller: tracing (config-tracing): {exc}", file=sys.stderr)
        return 2
    import uvloop

    try:
        return uvloop.run(_main(args, configuration, tracing))
    except KeyboardInterrupt:
        return 130


async def _main(args: argparse.Namespace, configuration, tracing: TracingConfig) -> int:
    from kubebackend.controller import Controller, ControllerOptions
    from kubebackend.leader_election import LeaderElector
    from kubebackend.webhook_certs import run_webhook

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
    namespace = os.environ.get("POD_NAMESPACE") or SYSTEM_NAMESPACE
    webhook_stop = asyncio.Event()
    webhook: asyncio.Task[None] | None = None
    elector: LeaderElector | None = None
    try:
        image = await queue_proxy_image(args, controller.api_client, stop)
        if image is None:
            return 0 if stop.is_set() else 2

        def serving(server: Any) -> None:
            controller.webhook_serving = True
            print(
                f"kpa controller: webhook on https://{args.host}:{server.port}/mutate-pods", file=sys.stderr
            )

        # The webhook from the start: it makes the certificate and patches the caBundle while the
        # watches list, and refuses pods (retryably) until they have; /readyz waits for both.
        controller.webhook_expected = True
        webhook = asyncio.create_task(
            run_webhook(
                controller.api_client,
                controller.sidecar_lookup(image, tracing),
                args.webhook_port,
                namespace,
                webhook_stop,
                host=args.host,
                certificates=args.webhook_certs,
                on_serving=serving,
            )
        )
        starting = asyncio.create_task(controller.start(lead=False))
        stopped = asyncio.create_task(stop.wait())
        await asyncio.wait([starting, stopped], return_when=asyncio.FIRST_COMPLETED)
        if starting.done():
            starting.result()
            elector = LeaderElector.from_environment(
                controller.api_client,
                controller.became_leader,
                controller.stopped_leading,
                durations=durations(args),
            )
            elector.start()
            print(
                f"kpa controller: started as {elector.identity}, campaigning for Lease "
                f"{elector.namespace}/kpa-controller; status on {controller.status_server.url}/status "
                f"(kpa status --controller {controller.status_server.url})",
                file=sys.stderr,
            )
            await stopped
        else:
            starting.cancel()
    finally:
        log.info("stopping")
        if elector is not None:
            await elector.close()  # stops leading first, then hands the Lease over
        webhook_stop.set()
        if webhook is not None:
            await webhook
        await controller.stop()
    print("kpa controller: stopped", file=sys.stderr)
    return 0
