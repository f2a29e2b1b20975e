"""`kpa queue-proxy`: run the sidecar in front of one user container.

Settings come from Knative's environment variables (``CONTAINER_CONCURRENCY``, ``QUEUE_SERVING_PORT``,
``USER_PORT``, ``REVISION_TIMEOUT_SECONDS``, ``REVISION_RESPONSE_START_TIMEOUT_SECONDS``,
``REVISION_IDLE_TIMEOUT_SECONDS``, ``SERVING_READINESS_PROBE``, ``SERVING_POD``) so the same
container spec works here and under Knative; flags override them. On start it prints one JSON line
with the bound ports (useful with port 0).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from queueproxy.config import ENV_NAMES, FLAG_NAMES, QueueProxyConfigError, load_config

_HELP = {
    "container_concurrency": "hard limit of requests at the user container; 0 = unlimited, no breaker",
    "queue_depth": "requests allowed to wait for a slot (default 10 x container concurrency)",
    "serving_port": "port proxied to the user container (default 8012)",
    "admin_port": "port of GET /wait-for-drain (default 8022)",
    "stats_port": "port of GET /stats, the autoscaler's JSON stat (default 9090)",
    "metrics_port": "port of GET /metrics, Prometheus text (default 9091)",
    "host": "address the serving port listens on (default 127.0.0.1; use 0.0.0.0 in a pod)",
    "admin_host": "address of the admin and metrics ports (default 127.0.0.1, whatever --host is)",
    "stats_host": "address of the stats port (default 127.0.0.1; the pod IP or 0.0.0.0 on Kubernetes, "
    "where the autoscaler scrapes it; it serves read-only GET /stats)",
    "user_host": "address of the user container (default 127.0.0.1)",
    "user_port": "port of the user container (default 8080)",
    "revision_timeout": "seconds a request may take in all before 504 (default 300)",
    "response_start_timeout": "seconds until the first response byte before 504 (default 0 = off)",
    "idle_timeout": "seconds without a response byte before 504 (default 0 = off)",
    "drain_timeout": "quiet period after SIGTERM before stopping (default 30)",
    "pod_name": "pod name reported in stats (default: the host name)",
    "revision": "revision name, the realm of authentication challenges and a /metrics label",
    "namespace": "namespace of the revision (a /metrics label)",
    "configuration": "configuration of the revision (a /metrics label; default: from the revision name)",
    "service": "service of the revision (a /metrics label; default: the configuration)",
    "auth_bearer_tokens_file": "file of bearer tokens (one a line) a request may carry (docs/security.md)",
    "auth_jwks_url": "JWKS URL whose keys sign the JWTs a request may carry instead",
    "auth_jwt_issuer": "required JWT iss claim (with --auth-jwks-url)",
    "auth_jwt_audience": "required JWT aud claim (with --auth-jwks-url)",
    "logger_url": "log requests/responses as CloudEvents to this http:// sink, as KServe's logger "
    "(docs/payload-logging.md; default: off)",
    "logger_mode": "what to log: all (default), request or response",
    "logger_source_uri": "the events' ce-source (default http://localhost:<serving port>/)",
    "logger_inference_service": "the events' ce-inferenceservicename (default: the revision)",
    "logger_component": "the events' ce-component (default predictor)",
    "logger_endpoint": "the events' ce-endpoint (default empty)",
    "logger_buffer_events": "events waiting for the sender at most; more are dropped (default 100)",
    "logger_buffer_bytes": "payload bytes waiting for the sender at most (default 16 MiB)",
    "logger_max_payload_bytes": "a larger request or response body is not logged (default 1 MiB)",
    "logger_timeout": "seconds one POST to the sink may take (default 2)",
    "logger_retries": "more tries after a failed POST, at most (default 2)",
}


def configure(parser: argparse.ArgumentParser) -> None:
    for dest, flag in FLAG_NAMES.items():
        env = ENV_NAMES.get(dest)
        help_text = _HELP[dest] + (f"; env {env}" if env else "")
        parser.add_argument(flag, dest=dest, default=None, metavar="VALUE", help=help_text)
    parser.add_argument(
        "--readiness-probe",
        dest="readiness_probe",
        default=None,
        metavar="JSON",
        help="user container readiness probe in Knative's JSON form; env SERVING_READINESS_PROBE "
        "(default: TCP on the user port, probed every 50 ms until it answers)",
    )
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s queue-proxy %(levelname)s %(message)s",
        stream=sys.stderr,
    )
    try:
        config = load_config(os.environ, vars(args))
    except QueueProxyConfigError as exc:
        print(f"kpa queue-proxy: {exc}", file=sys.stderr)
        return 2

    import uvloop

    from httpengine.limits import raise_fd_limit
    from queueproxy.app import serve

    raise_fd_limit()  # connection caps are derived from the raised limit

    def announce(line: str) -> None:
        print(line, flush=True)

    try:
        return uvloop.run(serve(config, announce))
    except QueueProxyConfigError as exc:
        print(f"kpa queue-proxy: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"kpa queue-proxy: {exc}", file=sys.stderr)
        return 1
