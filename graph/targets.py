"""Where a step's request goes: host, port, path and Host header, resolved once when the router starts.

* ``serviceUrl``: as written (KServe calls it with POST, unchanged).
* ``serviceName``: a revision, reached through the stack's entry or the revision's Service, so a
  step at zero pods is held and woken like any request. KServe resolves an InferenceService to its
  predictor URL plus the protocol's predict path with the model named after the service; here the
  same: ``/v1/models/<name>:predict`` (v1) or ``/v2/models/<name>/infer`` (v2). With an ``entry``
  (``kpa up``'s entry URL) the request goes there with ``Host: <name>``; without one, to
  ``service_url`` with ``{name}`` filled in (on Kubernetes: ``http://{name}-kpa``, the controller's
  Service of the revision).
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from graph.spec import Graph, Step

DEFAULT_SERVICE_URL = "http://{name}-kpa"


class TargetError(ValueError):
    """An entry or service URL template the router cannot call; the message names the option."""


@dataclass(frozen=True, slots=True)
class Target:
    host: str
    port: int
    path: bytes
    host_header: bytes  # what the Host header says (the revision name through an entry)
    url: str  # for errors and logs


def predict_path(name: str, protocol: str) -> str:
    return f"/v1/models/{name}:predict" if protocol == "v1" else f"/v2/models/{name}/infer"


def _split(url: str, what: str) -> tuple[str, int, str]:
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        raise TargetError(f"{what} {url!r}: must be an http:// URL with a host")
    try:
        port = parts.port or 80
    except ValueError:
        raise TargetError(f"{what} {url!r}: the port is not a number in [0, 65535]") from None
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return parts.hostname, port, path


def resolve(step: Step, graph: Graph, entry: str | None, service_url: str = DEFAULT_SERVICE_URL) -> Target:
    """The target of a serviceName or serviceUrl step (a nodeName step has none)."""
    if step.service_url is not None:
        host, port, path = _split(step.service_url, f"{step.path}.serviceUrl")
        netloc = urlsplit(step.service_url).netloc
        return Target(host, port, path.encode(), netloc.encode(), step.service_url)
    if step.service_name is None:
        raise ValueError(f"{step.path}: a nodeName step has no service to call")
    name = step.service_name
    path = predict_path(name, graph.protocol)
    if entry is not None:
        host, port, _ = _split(entry, "--entry")
        return Target(host, port, path.encode(), name.encode(), f"{entry.rstrip('/')}{path} (Host: {name})")
    if "{name}" not in service_url:
        raise TargetError(f"--service-url {service_url!r}: must contain {{name}}, e.g. {DEFAULT_SERVICE_URL}")
    url = service_url.replace("{name}", name).rstrip("/")
    host, port, _ = _split(url, "--service-url")
    return Target(host, port, path.encode(), urlsplit(url).netloc.encode(), url + path)


def resolve_all(graph: Graph, entry: str | None, service_url: str = DEFAULT_SERVICE_URL) -> dict[str, Target]:
    """Every service step's target, keyed by the step's path; raises TargetError naming the option."""
    return {
        step.path: resolve(step, graph, entry, service_url)
        for node in graph.nodes.values()
        for step in node.steps
        if step.node_name is None
    }
