"""`kpa activator`: run the activator as its own process.

    kpa activator --port 8012 --admin-port 8085 --autoscaler-url http://127.0.0.1:8080/stats \\
        --admin-token-file admin.token \\
        --revisions revisions.yaml --revision hello.default:cc=1,endpoints=127.0.0.1:9001
    kpa activator --kubernetes --kubeconfig ~/.kube/config \\
        --autoscaler-url http://kpa-controller.kpa-system:8080/stats

Revisions come from a YAML/JSON file (``--revisions``, where an entry's ``auth`` turns on data-path
authentication), from ``--revision`` flags, later from the admin API, or — with ``--kubernetes`` —
from the cluster: the revisions the controller scales, their ready pods and this replica's slot among
the activators, all watched (``kubebackend.activator_source``). The admin API listens on
``--admin-host`` (loopback by default, whatever ``--host`` is); its state-changing calls need the
token of ``--admin-token-file`` or ``KPA_ADMIN_TOKEN``, and are all refused when neither is given.
Once listening it prints one JSON line — ``{"event": "listening", "serving_port": ...,
"admin_port": ..., ...}`` — so a parent that passed port 0 learns the real ports. SIGTERM or SIGINT
stops it gracefully: health checks fail, held requests get 503, in-flight requests finish. Tracing is
configured by Knative's ``TRACING_CONFIG_*`` or OpenTelemetry's ``OTEL_EXPORTER_OTLP_ENDPOINT``
variables (docs/tracing.md).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Any

import yaml

from activator.admin import AdminApi
from activator.config import ActivatorConfigError, RevisionConfig, check_activator_slot
from activator.probing import DEFAULT_PROBE_FREQUENCY, DEFAULT_PROBE_TIMEOUT
from activator.revisions import parse_address
from activator.server import Activator
from activator.sinks import HttpStatSink
from autoscaler.config import parse_duration as parse_go_duration
from kubebackend.rbac import ACTIVATOR, SYSTEM_NAMESPACE
from queueproxy.auth import ADMIN_TOKEN_ENV, AuthConfigError, AuthSpec
from queueproxy.gate import AuthGate, load_admin_token
from tracing.config import TracingConfigError, tracing_from_env

DEFAULT_ADMIN_PORT = 8085
_SPEC_KEYS = {"cc": "container_concurrency", "timeout": "timeout_seconds", "queue-bound": "queue_bound"}


def parse_duration(text: str, what: str) -> float:
    """Seconds from plain seconds (``0.2``) or a Go duration as Knative writes them (``200ms``, ``1m30s``);
    ActivatorConfigError names ``what`` otherwise. One grammar with the autoscaler's config
    (``parse_go_duration``)."""
    raw = text.strip().lower()
    try:
        value = float(raw)
    except ValueError:
        try:
            value = parse_go_duration(raw)
        except ValueError:
            message = f"{what}={text!r}: not a duration (use seconds like 0.2, or 200ms, 1m30s)"
            raise ActivatorConfigError(message) from None
    if not value > 0 or value == float("inf"):
        raise ActivatorConfigError(f"{what}={text!r}: must be a positive duration")
    return value


def parse_revision_spec(spec: str) -> tuple[RevisionConfig, list[str]]:
    """``name[.namespace][:cc=N,timeout=S,queue-bound=N,endpoints=HOST:PORT+HOST:PORT]``."""
    head, _, options = spec.partition(":")
    name, _, namespace = head.partition(".")
    doc: dict[str, Any] = {"name": name}
    if namespace:
        doc["namespace"] = namespace
    endpoints: list[str] = []
    for option in filter(None, options.split(",")):
        key, sep, value = option.partition("=")
        if key == "endpoints" and sep:
            endpoints = [a for a in value.split("+") if a]
            continue
        if key not in _SPEC_KEYS or not sep:
            raise ActivatorConfigError(
                f"--revision {spec!r}: bad option {option!r}; use cc=N, timeout=S, queue-bound=N, "
                f"endpoints=HOST:PORT+HOST:PORT"
            )
        try:
            doc[_SPEC_KEYS[key]] = float(value) if key == "timeout" else int(value)
        except ValueError:
            raise ActivatorConfigError(f"--revision {spec!r}: {key}={value!r} is not a number") from None
    return RevisionConfig.from_json(doc), endpoints


Revision = tuple[RevisionConfig, list[str], AuthGate | None]


def load_revisions_file(path: Path) -> list[Revision]:
    """Revision objects (config fields plus ``endpoints`` and ``auth``), bare or under ``revisions:``.

    ``auth`` is the data-path authentication of the revision (see docs/security.md); a relative
    tokens file is read from the revisions file's folder.
    """
    try:
        doc = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ActivatorConfigError(f"--revisions {path}: cannot read it: {exc}") from None
    items = doc.get("revisions") if isinstance(doc, dict) else doc
    if not isinstance(items, list):
        raise ActivatorConfigError(
            f"--revisions {path}: expected a list of revisions (or a 'revisions:' list)"
        )
    loaded = []
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            raise ActivatorConfigError(f"--revisions {path}: entry {index} must be an object")
        fields = dict(item)
        endpoints = fields.pop("endpoints", [])
        auth = fields.pop("auth", None)
        if not isinstance(endpoints, list):
            raise ActivatorConfigError(
                f"--revisions {path}: entry {index} endpoints must be a list of host:port"
            )
        try:
            config = RevisionConfig.from_json(fields)
            gate = None
            if auth is not None:
                spec = AuthSpec.from_json(auth, "auth")
                gate = AuthGate.load(config.name, spec, base=path.resolve().parent)
            loaded.append((config, [str(a) for a in endpoints], gate))
        except (ActivatorConfigError, AuthConfigError) as exc:
            raise ActivatorConfigError(f"--revisions {path}: entry {index}: {exc}") from None
    return loaded


def configure(parser: argparse.ArgumentParser) -> None:
    env = os.environ.get
    parser.add_argument("--host", default="127.0.0.1", help="address of the serving port (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8012, help="serving port (0: pick a free one)")
    parser.add_argument(
        "--admin-port",
        type=int,
        default=DEFAULT_ADMIN_PORT,
        help=f"control API and /metrics port (default {DEFAULT_ADMIN_PORT}; 0: free port)",
    )
    parser.add_argument(
        "--admin-host",
        default="127.0.0.1",
        help="address of the admin port (default 127.0.0.1 whatever --host is; see "
        "docs/security.md before exposing it)",
    )
    parser.add_argument(
        "--admin-token-file",
        default=None,
        metavar="FILE",
        help=f"file whose first line is the admin token (else env {ADMIN_TOKEN_ENV}; with "
        "neither, every state-changing admin call is refused)",
    )
    parser.add_argument(
        "--autoscaler-url",
        default=env("AUTOSCALER_URL"),
        help="where to POST stats, e.g. http://127.0.0.1:8080/stats (env AUTOSCALER_URL)",
    )
    parser.add_argument("--revisions", type=Path, help="YAML/JSON file listing revisions and their endpoints")
    parser.add_argument(
        "--revision",
        action="append",
        default=[],
        metavar="SPEC",
        help="name[.namespace][:cc=N,timeout=S,queue-bound=N,endpoints=H:P+H:P] (repeatable)",
    )
    parser.add_argument(
        "--pod-name",
        default=env("POD_NAME", "activator"),
        help="name in the stats this activator sends (env POD_NAME)",
    )
    parser.add_argument(
        "--probe-frequency",
        default=env("PROBE_FREQUENCY", str(DEFAULT_PROBE_FREQUENCY)),
        help="seconds between probes of a pod not yet healthy (env PROBE_FREQUENCY; 0.2)",
    )
    parser.add_argument(
        "--probe-timeout",
        default=env("PROBE_TIMEOUT", str(DEFAULT_PROBE_TIMEOUT)),
        help="seconds one probe may take (env PROBE_TIMEOUT, default 0.3)",
    )
    parser.add_argument(
        "--activator-index",
        type=int,
        default=-1,
        help="this replica's index among --activator-count replicas (-1: use every pod)",
    )
    parser.add_argument("--activator-count", type=int, default=1)
    kube = parser.add_argument_group(
        "Kubernetes", "with --kubernetes the activator learns revisions, their pods and its own slot "
        "among the activators by watching the cluster (kubebackend.activator_source; docs/kubernetes.md)"
    )  # fmt: skip
    kube.add_argument(
        "--kubernetes",
        action="store_true",
        help="watch the cluster for revisions (their Services and pods) and the activators' EndpointSlices",
    )
    where = kube.add_mutually_exclusive_group()
    where.add_argument("--kubeconfig", metavar="PATH", help="kubeconfig file to reach the API server with")
    where.add_argument(
        "--in-cluster", action="store_true", help="use the pod's ServiceAccount (the default inside a pod)"
    )
    kube.add_argument("--context", help="kubeconfig context (default: its current context)")
    kube.add_argument(
        "--pod-ip",
        default=env("POD_IP") or env("KPA_POD_IP"),
        help="this replica's pod IP, to find its slot (env POD_IP from status.podIP; else it is found "
        "by --pod-name among the endpoints)",
    )
    kube.add_argument(
        "--system-namespace", default=SYSTEM_NAMESPACE, help=f"the activators' namespace ({SYSTEM_NAMESPACE})"
    )
    kube.add_argument(
        "--activator-service", default=ACTIVATOR, help=f"the activators' Service, for the slot ({ACTIVATOR})"
    )
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])


def _settings(args: argparse.Namespace) -> dict[str, Any]:
    for flag, port in (("--port", args.port), ("--admin-port", args.admin_port)):
        if not 0 <= port <= 65535:
            raise ActivatorConfigError(f"{flag}={port}: must be a port in 0..65535 (0 picks a free one)")
    url = args.autoscaler_url
    if url is not None and not url.startswith(("http://", "https://")):
        raise ActivatorConfigError(f"--autoscaler-url={url!r}: must be an http:// or https:// URL")
    check_activator_slot(args.activator_index, args.activator_count)
    revisions = load_revisions_file(args.revisions) if args.revisions else []
    revisions += [(*parse_revision_spec(spec), None) for spec in args.revision]
    for _, endpoints, _ in revisions:
        for address in endpoints:
            parse_address(address)
    try:
        admin_token = load_admin_token(args.admin_token_file, os.environ)
    except AuthConfigError as exc:
        raise ActivatorConfigError(str(exc)) from None
    kube = None
    if args.kubeconfig and not Path(args.kubeconfig).expanduser().is_file():
        raise ActivatorConfigError(
            f"--kubeconfig {args.kubeconfig}: no such file; give the cluster's kubeconfig"
        )
    if args.kubernetes:
        from kubernetes.config import ConfigException

        from kpa.controller import client_configuration

        try:
            kube = client_configuration(args)
        except (ConfigException, OSError) as exc:
            raise ActivatorConfigError(
                f"--kubernetes: cannot reach a cluster: {exc}; give --kubeconfig PATH, or run in a pod"
            ) from None
    elif args.kubeconfig or args.in_cluster:
        raise ActivatorConfigError("--kubeconfig and --in-cluster need --kubernetes")
    tracing = None
    try:
        tracing_config = tracing_from_env(os.environ)
        if tracing_config.enabled:
            from tracing.provider import tracer_for  # OpenTelemetry is imported only when tracing

            tracing = tracer_for(tracing_config, "activator")
    except TracingConfigError as exc:
        raise ActivatorConfigError(str(exc)) from None
    return {
        "tracing": tracing,
        "kube": kube,
        "admin_token": admin_token,
        "probe_frequency": parse_duration(args.probe_frequency, "--probe-frequency"),
        "probe_timeout": parse_duration(args.probe_timeout, "--probe-timeout"),
        "revisions": revisions,
    }


async def _serve(args: argparse.Namespace, settings: dict[str, Any]) -> None:
    sink = HttpStatSink(args.autoscaler_url) if args.autoscaler_url else None
    tracing = settings["tracing"]  # (tracer, provider) or None
    activator = Activator(
        tracer=tracing[0] if tracing else None,
        pod_name=args.pod_name,
        stat_sink=sink,
        probe_frequency=settings["probe_frequency"],
        probe_timeout=settings["probe_timeout"],
        activator_index=args.activator_index,
        activator_count=args.activator_count,
    )
    admin = AdminApi(activator, settings["admin_token"])
    ports = await activator.start(
        args.host,
        args.port,
        admin_port=args.admin_port,
        admin_host=args.admin_host,
        admin_handler=admin.handle,
    )
    for config, endpoints, gate in settings["revisions"]:
        activator.set_revision(config)
        activator.set_endpoints(config.key, endpoints)
        if gate is not None:
            gate.prefetch()
            activator.auth_gates[config.key] = gate
    source = None
    if settings["kube"] is not None:
        from kubernetes.client import ApiClient

        from kubebackend.activator_source import ActivatorSource

        source = ActivatorSource(
            activator,
            ApiClient(settings["kube"]),
            pod_ip=args.pod_ip,
            pod_name=args.pod_name,
            system_namespace=args.system_namespace,
            activator_service=args.activator_service,
        )
        await source.start()
    if sink is None:
        logging.getLogger("activator").warning("no --autoscaler-url: stats are not sent anywhere")
    if settings["admin_token"] is None:
        logging.getLogger("activator").warning(
            "no --admin-token-file or %s: state-changing admin calls are refused", ADMIN_TOKEN_ENV
        )
    print(
        json.dumps(
            {
                "event": "listening",
                "host": args.host,
                "serving_port": ports.serving,
                "admin_host": args.admin_host,
                "admin_port": ports.admin,
                "pid": os.getpid(),
                "revisions": [str(key) for key in activator.revisions()],
            }
        ),
        flush=True,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    if source is not None:
        await source.close()
    await activator.stop()
    if tracing is not None:
        tracing[1].shutdown()  # sends the spans still buffered


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=args.log_level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        settings = _settings(args)
    except ActivatorConfigError as exc:
        print(f"kpa activator: {exc}", file=sys.stderr)
        return 2
    import uvloop

    from httpengine.limits import raise_fd_limit

    raise_fd_limit()  # connection caps are derived from the raised limit
    try:
        uvloop.run(_serve(args, settings))
    except OSError as exc:
        print(f"kpa activator: cannot listen on {args.host}: {exc}", file=sys.stderr)
        return 1
    return 0
