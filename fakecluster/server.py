"""The fake API server's lifecycle: the routes on uvicorn (h11, not our own engine: a fake must not
run on the HTTP code it helps test) on a thread of its own, on a free 127.0.0.1 port.

``FakeApiServer`` is what tests and benchmarks hold: its URL, a client ``Configuration`` for it,
the cluster behind it, and the fault-injection switches (docs/fake-cluster.md).
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterable
from types import TracebackType
from typing import TYPE_CHECKING, Self

import uvicorn

from fakecluster.admission import MutatingAdmission
from fakecluster.cluster import Cluster, Controller
from fakecluster.controllers import settle_deployments
from fakecluster.routes import ServeOptions, create_app

if TYPE_CHECKING:
    from kubernetes.client import Configuration

START_TIMEOUT_S = 10.0


class FakeApiServer:
    """An in-process Kubernetes API server on 127.0.0.1, plain HTTP; use as a context manager.

    ``controllers`` run after every write (default: Deployments' status follows their spec at
    once); ``history_limit`` bounds the changes kept for watches from an old resourceVersion.
    """

    def __init__(
        self,
        *,
        token: str | None = None,
        controllers: Iterable[Controller] = (settle_deployments,),
        history_limit: int = 10_000,
        watch_timeout_s: float = 1800.0,
        bookmark_every_s: float = 60.0,
    ) -> None:
        self.cluster = Cluster(controllers, history_limit)
        self.options = ServeOptions(token, watch_timeout_s, bookmark_every_s)
        app = create_app(self.cluster, self.options, MutatingAdmission(self.cluster))
        config = uvicorn.Config(
            app,
            http="h11",
            loop="asyncio",
            lifespan="off",
            log_level="warning",
            timeout_graceful_shutdown=1,
            access_log=False,
        )
        self._server = uvicorn.Server(config)
        # IPPROTO_TCP spelled out: asyncio sets TCP_NODELAY only on sockets whose proto says TCP, and
        # create_server's proto 0 left Nagle on, adding 40 ms (a delayed ACK) to every answer.
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind(("127.0.0.1", 0))
        self._socket.listen(128)
        self.port: int = self._socket.getsockname()[1]
        self._thread = threading.Thread(target=self._run, name=f"fakecluster:{self.port}", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _run(self) -> None:
        asyncio.run(self._server.serve(sockets=[self._socket]))

    def start(self) -> Self:
        """Serve until ``stop``; returns once the server accepts requests."""
        self._thread.start()
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(
                    f"the fake API server on port {self.port} did not start within {START_TIMEOUT_S} s"
                )
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        """End every watch, then the server; returns once its thread is gone."""
        self.cluster.drop_watches()
        self._server.should_exit = True
        if self._thread.is_alive():
            self._thread.join(START_TIMEOUT_S)
        self._socket.close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def configuration(self) -> Configuration:
        """A ``kubernetes.client.Configuration`` for this server (token set when the server has one,
        no proxy), for ``ApiClient(configuration)`` and ``Configuration.set_default``."""
        from kubernetes.client import Configuration

        configuration = Configuration(host=self.url)
        configuration.proxy = None
        if self.options.token:
            configuration.api_key = {"BearerToken": self.options.token}
            configuration.api_key_prefix = {"BearerToken": "Bearer"}
        return configuration

    # -- faults and counts, for tests and benchmarks ---------------------------------------------

    def fail_next(self, times: int, verb: str = "*", resource: str = "*", code: int = 500) -> None:
        """Answer the next ``times`` requests of ``verb`` on ``resource`` (``deployments/scale`` for a
        subresource, ``*`` for any) with ``code`` (409, 429, 500, 503 or 504) and its Status."""
        self.cluster.faults.fail_next(times, verb, resource, code)

    def drop_watches(self) -> int:
        """End every open watch stream cleanly, as an API server restart does; returns how many."""
        return self.cluster.drop_watches()

    def compact(self) -> None:
        """Forget the change history: a watch from any earlier resourceVersion gets 410 Expired."""
        self.cluster.compact()

    def requests(self, verb: str = "*", resource: str = "*") -> int:
        """How many API requests matching ``verb`` and ``resource`` the server has answered."""
        return self.cluster.faults.count(verb, resource)
