"""The fake API server with the official ``kubernetes`` client pointed at it, for component tests.

``Kube`` starts a ``FakeApiServer`` on a free loopback port and builds the typed APIs on one
``ApiClient``; it also makes the server's configuration the client's default, because
``watch.Watch`` and the leader-election locks build their own ``ApiClient()`` from it (reference §6.1).
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from kubernetes import client, watch
from kubernetes.client import ApiException

from fakecluster import FakeApiServer
from fakecluster.kubelet import Kubelet

NAMESPACE = "ns"


class Kube:
    """A running fake API server and the client APIs on it; use as a context manager."""

    def __init__(self, **server_options: Any) -> None:
        self.server = FakeApiServer(**server_options)

    def __enter__(self) -> Kube:
        self.server.start()
        self._previous_default = client.Configuration.get_default_copy()
        configuration = self.server.configuration()
        client.Configuration.set_default(configuration)
        self.api_client = client.ApiClient(configuration)
        self.core = client.CoreV1Api(self.api_client)
        self.apps = client.AppsV1Api(self.api_client)
        self.custom = client.CustomObjectsApi(self.api_client)
        self.discovery = client.DiscoveryV1Api(self.api_client)
        self.coordination = client.CoordinationV1Api(self.api_client)
        self.admission = client.AdmissionregistrationV1Api(self.api_client)
        self.events = client.EventsV1Api(self.api_client)
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.api_client.close()
        self.server.stop()
        client.Configuration.set_default(self._previous_default)


@contextlib.contextmanager
def with_node(**kubelet_options: Any) -> Iterator[tuple[Kubelet, Kube]]:
    """The fake API server with its node (``fakecluster.kubelet``): Deployments get pods, pods run as
    local processes on their own loopback addresses, Services with a selector get EndpointSlices.
    The kubelet is entered first, so its pods are stopped after the server, however the test ends."""
    with Kubelet(**kubelet_options) as kubelet, Kube(controllers=kubelet.controllers) as kube:
        yield kubelet, kube


def write_kubeconfig(path: Path, server: str) -> Path:
    """A kubeconfig file for ``server`` (plain HTTP, no credentials), for a process of ours to use
    with ``--kubeconfig`` (a pod on the fake node reaches the API server at 127.0.0.1 as well)."""
    cluster = {"name": "fake", "cluster": {"server": server}}
    context = {"name": "fake", "context": {"cluster": "fake", "user": "test"}}
    document = {"apiVersion": "v1", "kind": "Config", "clusters": [cluster], "contexts": [context]}
    path.write_text(
        json.dumps({**document, "users": [{"name": "test", "user": {}}], "current-context": "fake"})
    )
    return path


def deployment(name: str = "d", replicas: int = 1, **spec: Any) -> dict[str, Any]:
    """A minimal valid Deployment with one container, ``user``."""
    return {
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "user", "image": "user:1"}]},
            },
            **spec,
        },
    }


def config_map(name: str, **labels: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "labels": labels}, "data": {"k": "v"}}


def status_of(error: ApiException) -> dict[str, Any]:
    """The Status body of a refused request."""
    return json.loads(error.body)


class Collected:
    """Events of a ``Watch().stream`` gathered on a thread until ``stop_when`` holds (or it ends)."""

    def __init__(
        self,
        list_call: Callable[..., Any],
        stop_when: Callable[[list[dict[str, Any]]], bool],
        *args: Any,
        **kwargs: Any,
    ) -> None:
        self.events: list[dict[str, Any]] = []
        self.error: BaseException | None = None
        self.watch = watch.Watch()
        kwargs.setdefault("_request_timeout", 10)
        self._thread = threading.Thread(
            target=self._run, args=(list_call, stop_when, args, kwargs), daemon=True
        )
        self._thread.start()

    def _run(
        self,
        list_call: Callable[..., Any],
        stop_when: Callable[[list[dict[str, Any]]], bool],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> None:
        try:
            for event in self.watch.stream(list_call, *args, **kwargs):
                self.events.append(event)
                if stop_when(self.events):
                    self.watch.stop()
                    return
        except BaseException as error:  # handed to the test thread by wait()
            self.error = error

    def wait(self, timeout: float = 10.0) -> list[dict[str, Any]]:
        self._thread.join(timeout)
        assert not self._thread.is_alive(), f"the watch did not finish within {timeout} s: {self.summary()}"
        return self.events

    def summary(self) -> list[tuple[str, str | None, str]]:
        """(type, name, resourceVersion) of each event, for assertions and failure messages."""
        return [
            (
                event["type"],
                event["raw_object"]["metadata"].get("name"),
                event["raw_object"]["metadata"]["resourceVersion"],
            )
            for event in self.events
        ]


def watch_names(events: list[dict[str, Any]]) -> Iterator[tuple[str, str]]:
    for event in events:
        if event["type"] != "BOOKMARK":
            yield event["type"], event["raw_object"]["metadata"]["name"]
