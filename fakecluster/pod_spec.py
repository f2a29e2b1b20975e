"""What the fake kubelet runs for a pod, read from the pod's JSON: pure.

Images are ignored: a container is its ``command`` + ``args`` run as a local process (the host's
environment stands in for the image's ``ENV``; ``workingDir`` or the kubelet's directory for its
``WORKDIR``). A container without ``command`` runs its image's entrypoint when the kubelet was told
one (``entrypoints``: image -> argv, the image's ``ENTRYPOINT``), and otherwise cannot run and says so.

Every pod gets its own loopback address, and that address is the pod's whole network: on a cluster
``0.0.0.0``, ``127.0.0.1`` and ``localhost`` inside a pod all mean the pod itself, so here each of
them, written as a whole host in a container's ``command``, ``args`` or a literal ``env`` value, is
replaced by the pod IP (:func:`pod_local`); the pod IP is also in ``KPA_POD_IP``. Values that come
from the downward API (``fieldRef``) are not rewritten: ``status.hostIP`` (the node, 127.0.0.1,
where the test and the API server listen) stays reachable. Then ``$(VAR)`` references expand as
kubelet expands them (``$$`` escapes, an unknown name stays as written).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

POD_IP_ENV = "KPA_POD_IP"
_LOOPBACK = re.compile(r"(?<![\w.-])(?:0\.0\.0\.0|127\.0\.0\.1|localhost)(?![\w-]|\.[\w-])")
_REFERENCE = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")
ConfigMapLookup = Callable[[str, str], Mapping[str, str] | None]  # (namespace, name) -> data
Entrypoints = Mapping[str, Sequence[str]]  # image -> what a container of it without `command` runs


class PodSpecError(ValueError):
    """A pod the fake kubelet cannot run; the message names the field and what to write instead."""


@dataclass(frozen=True, slots=True)
class Probe:
    """A readiness probe or lifecycle hook as kubelet runs it from the node."""

    kind: str  # "http", "tcp", "exec", "sleep" or "unsupported"
    host: str = ""
    port: int = 0
    path: str = "/"
    scheme: str = "HTTP"
    headers: tuple[tuple[str, str], ...] = ()
    command: tuple[str, ...] = ()
    seconds: float = 0.0  # a sleep hook's length
    initial_delay_s: float = 0.0
    period_s: float = 10.0
    timeout_s: float = 1.0
    success_threshold: int = 1
    failure_threshold: int = 3
    why: str = ""  # what is unsupported about it


@dataclass(frozen=True, slots=True)
class Launch:
    """One container as a local process."""

    name: str
    image: str
    argv: tuple[str, ...]
    env: Mapping[str, str] = field(default_factory=dict)
    cwd: str | None = None
    readiness: Probe | None = None
    pre_stop: Probe | None = None


def pod_local(text: str, pod_ip: str) -> str:
    """``text`` with every whole-host ``0.0.0.0``, ``127.0.0.1`` or ``localhost`` made ``pod_ip``."""
    return _LOOPBACK.sub(pod_ip, text)


def expand(text: str, env: Mapping[str, str]) -> str:
    """Kubernetes' ``$(VAR)`` expansion: known names replaced, ``$$`` a literal ``$``, others kept."""

    def one(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        return env.get(match.group(1), match.group(0))

    return _REFERENCE.sub(one, text)


def _where(pod: Mapping[str, Any], container: str | None = None) -> str:
    meta = pod.get("metadata") or {}
    where = f"pod {meta.get('namespace', '?')}/{meta.get('name', '?')}"
    return f"{where} container {container!r}" if container else where


def field_value(pod: Mapping[str, Any], path: str) -> str | None:
    """A downward-API ``fieldRef.fieldPath`` of ``pod``; None for a path kubelet does not offer."""
    meta, spec, status = pod.get("metadata") or {}, pod.get("spec") or {}, pod.get("status") or {}
    simple = {
        "metadata.name": meta.get("name"),
        "metadata.namespace": meta.get("namespace"),
        "metadata.uid": meta.get("uid"),
        "spec.nodeName": spec.get("nodeName"),
        "spec.serviceAccountName": spec.get("serviceAccountName", "default"),
        "status.podIP": status.get("podIP"),
        "status.hostIP": status.get("hostIP"),
        "status.podIPs": ",".join(entry.get("ip", "") for entry in status.get("podIPs") or []),
        "status.hostIPs": ",".join(entry.get("ip", "") for entry in status.get("hostIPs") or []),
    }
    if path in simple:
        value = simple[path]
        return "" if value is None else str(value)
    found = re.fullmatch(r"metadata\.(labels|annotations)\['([^']*)'\]", path)
    if found:
        return str((meta.get(found.group(1)) or {}).get(found.group(2), ""))
    return None


def _env(
    pod: Mapping[str, Any],
    container: Mapping[str, Any],
    pod_ip: str,
    base: Mapping[str, str],
    config_maps: ConfigMapLookup,
) -> dict[str, str]:
    name = container.get("name", "?")
    namespace = (pod.get("metadata") or {}).get("namespace", "")
    env = dict(base)
    env.update({POD_IP_ENV: pod_ip, "HOSTNAME": str((pod.get("metadata") or {}).get("name", ""))})
    for source in container.get("envFrom") or []:
        ref = source.get("configMapRef")
        if not ref:
            raise PodSpecError(
                f"{_where(pod, name)}: envFrom {source!r}: only configMapRef is served by the fake cluster"
            )
        data = config_maps(namespace, ref.get("name", ""))
        if data is None and not ref.get("optional"):
            raise PodSpecError(f"{_where(pod, name)}: envFrom configMap {ref.get('name')!r} does not exist")
        env.update({source.get("prefix", "") + key: value for key, value in (data or {}).items()})
    defined = dict(env)  # $(VAR) in a value sees only what was defined before it
    for entry in container.get("env") or []:
        key = entry.get("name", "")
        if "value" in entry or "valueFrom" not in entry:
            value = expand(pod_local(str(entry.get("value", "")), pod_ip), defined)
        else:
            value = _value_from(pod, name, key, entry["valueFrom"], config_maps)
        env[key] = defined[key] = value
    return env


def _value_from(
    pod: Mapping[str, Any], container: str, key: str, source: Mapping[str, Any], config_maps: ConfigMapLookup
) -> str:
    where = f"{_where(pod, container)} env {key}"
    if "fieldRef" in source:
        path = (source["fieldRef"] or {}).get("fieldPath", "")
        value = field_value(pod, path)
        if value is None:
            raise PodSpecError(f"{where}: fieldRef {path!r} is not one the fake kubelet offers")
        return value
    if "configMapKeyRef" in source:
        ref = source["configMapKeyRef"] or {}
        data = config_maps((pod.get("metadata") or {}).get("namespace", ""), ref.get("name", ""))
        if data is not None and ref.get("key") in data:
            return data[ref["key"]]
        if ref.get("optional"):
            return ""
        raise PodSpecError(f"{where}: configMap {ref.get('name')!r} has no key {ref.get('key')!r}")
    raise PodSpecError(f"{where}: valueFrom {sorted(source)}: only fieldRef and configMapKeyRef are served")


def _port(container: Mapping[str, Any], value: Any, where: str) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    for port in container.get("ports") or []:
        if port.get("name") == value and isinstance(port.get("containerPort"), int):
            return int(port["containerPort"])
    raise PodSpecError(f"{where}: port {value!r} is neither a number nor a named port of the container")


def _timing(doc: Mapping[str, Any]) -> dict[str, Any]:
    def number(key: str, default: float) -> float:
        value = doc.get(key)
        return float(value) if isinstance(value, int | float) and value > 0 else default

    return {
        "initial_delay_s": number("initialDelaySeconds", 0.0),
        "period_s": number("periodSeconds", 10.0),
        "timeout_s": number("timeoutSeconds", 1.0),
        "success_threshold": int(number("successThreshold", 1)),
        "failure_threshold": int(number("failureThreshold", 3)),
    }


def probe_of(
    doc: Mapping[str, Any], container: Mapping[str, Any], pod_ip: str, env: Mapping[str, str], where: str
) -> Probe:
    """A probe or handler (``httpGet``, ``tcpSocket``, ``exec``, ``sleep``) as kubelet runs it."""
    timing = _timing(doc)
    if isinstance(doc.get("httpGet"), Mapping):
        get = doc["httpGet"]
        headers = tuple(
            (str(h.get("name", "")), str(h.get("value", ""))) for h in get.get("httpHeaders") or []
        )
        return Probe(
            "http",
            host=str(get.get("host") or pod_ip),
            port=_port(container, get.get("port"), f"{where} httpGet"),
            path=str(get.get("path") or "/"),
            scheme=str(get.get("scheme") or "HTTP").upper(),
            headers=headers,
            **timing,
        )
    if isinstance(doc.get("tcpSocket"), Mapping):
        tcp = doc["tcpSocket"]
        port = _port(container, tcp.get("port"), f"{where} tcpSocket")
        return Probe("tcp", host=str(tcp.get("host") or pod_ip), port=port, **timing)
    if isinstance(doc.get("exec"), Mapping):
        command = tuple(
            expand(pod_local(str(part), pod_ip), env) for part in doc["exec"].get("command") or []
        )
        if not command:
            raise PodSpecError(f"{where} exec: command is empty")
        return Probe("exec", command=command, **timing)
    if isinstance(doc.get("sleep"), Mapping):
        return Probe("sleep", seconds=float(doc["sleep"].get("seconds") or 0), **timing)
    return Probe("unsupported", why=f"{where}: {sorted(doc)} is not run by the fake kubelet", **timing)


def launches(
    pod: Mapping[str, Any],
    pod_ip: str,
    base_env: Mapping[str, str],
    config_maps: ConfigMapLookup = lambda namespace, name: None,
    entrypoints: Entrypoints | None = None,
) -> list[Launch]:
    """Every container of ``pod`` (already bound, its IPs in ``status``) as a process to start; a
    container without ``command`` runs ``entrypoints[image]`` (as a runtime runs the image's
    ``ENTRYPOINT``) followed by its ``args``."""
    spec = pod.get("spec") or {}
    if spec.get("initContainers"):
        raise PodSpecError(
            f"{_where(pod)}: spec.initContainers are not run by the fake kubelet; run their work "
            "before creating the pod, or in the container's own command"
        )
    containers = spec.get("containers") or []
    if not containers:
        raise PodSpecError(f"{_where(pod)}: spec.containers is empty")
    result = []
    for container in containers:
        name = str(container.get("name", "?"))
        where = _where(pod, name)
        command = container.get("command") or (entrypoints or {}).get(str(container.get("image", "")))
        if not command:
            raise PodSpecError(
                f"{where}: no command; the fake kubelet ignores images (here {container.get('image')!r}), "
                "so give the container its command (and args) to run as a local process, or the "
                "kubelet the image's entrypoint (Kubelet(entrypoints=...))"
            )
        env = _env(pod, container, pod_ip, base_env, config_maps)
        argv = tuple(
            expand(pod_local(str(part), pod_ip), env) for part in [*command, *(container.get("args") or [])]
        )
        readiness = container.get("readinessProbe")
        pre_stop = (container.get("lifecycle") or {}).get("preStop")
        result.append(
            Launch(
                name=name,
                image=str(container.get("image", "")),
                argv=argv,
                env=env,
                cwd=container.get("workingDir") or None,
                readiness=probe_of(readiness, container, pod_ip, env, f"{where} readinessProbe")
                if isinstance(readiness, Mapping)
                else None,
                pre_stop=probe_of(pre_stop, container, pod_ip, env, f"{where} preStop")
                if isinstance(pre_stop, Mapping)
                else None,
            )
        )
    return result
