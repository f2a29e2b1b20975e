"""The kube-proxy stand-in (``fakecluster.service_proxy``): each new connection goes to one random
ready endpoint of the Service's EndpointSlices and stays there; slice changes apply to new
connections; no ready endpoint, or a dead one, resets the client unread and is recorded as such; an
end or a reset on one side reaches the other."""

from __future__ import annotations

import asyncio
import random
import socket
import threading
from collections import Counter
from typing import Any

import pytest
from fakecluster_fixtures import Kube
from waiting import wait_until

from fakecluster.service_proxy import DELIVERED, REFUSED, UNREACHABLE, ServiceProxy

pytestmark = pytest.mark.timeout(60)

NS = "demo"


def loopback_ips(count: int) -> list[str]:
    base = random.randint(1, 254)
    return [f"127.{base}.{random.randint(1, 254)}.{i + 2}" for i in range(count)]


def endpoint_slice(
    name: str, ips: list[str], port: int, *, not_ready: tuple[str, ...] = (), **ports: int
) -> dict:
    return {
        "metadata": {"name": name, "labels": {"kubernetes.io/service-name": "web"}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": [ip], "conditions": {"ready": ip not in not_ready}} for ip in ips],
        "ports": [{"name": "http", "port": port}] + [{"name": n, "port": p} for n, p in ports.items()],
    }


class Backends:
    """Line servers on several loopback IPs, one port: each answers ``<ip> <line>`` per line;
    a line ``die`` resets the connection, ``bye`` answers and ends it cleanly."""

    def __init__(self, ips: list[str]) -> None:
        self.ips = ips
        self.port = 0
        self.accepted: Counter[str] = Counter()
        self._servers: list[asyncio.Server] = []

    async def __aenter__(self) -> Backends:
        for ip in self.ips:
            server = await asyncio.start_server(lambda r, w, ip=ip: self._serve(ip, r, w), ip, self.port)
            self.port = server.sockets[0].getsockname()[1]
            self._servers.append(server)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        for server in self._servers:
            server.close()

    async def _serve(self, ip: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted[ip] += 1
        try:
            while line := await reader.readline():
                if line.strip() == b"die":
                    sock = writer.get_extra_info("socket")
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                    writer.transport.abort()
                    return
                writer.write(ip.encode() + b" " + line)
                await writer.drain()
                if line.strip() == b"bye":
                    break
        except ConnectionError:
            pass
        writer.close()


async def talk(proxy: ServiceProxy, *lines: str) -> tuple[list[str], Any, int]:
    """Send ``lines`` on one connection; the answers, how it ended (b"" or an exception), the source port."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))  # the source port known before connecting: a reset may fail the connect
    sock.setblocking(False)
    client_port = sock.getsockname()[1]
    try:
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", proxy.port))
        reader, writer = await asyncio.open_connection(sock=sock)
    except ConnectionError as error:
        sock.close()
        return [], error, client_port
    answers: list[str] = []
    ended: Any = None
    try:
        for line in lines:
            writer.write(line.encode() + b"\n")
            await writer.drain()
            answer = await reader.readline()
            if not answer:
                ended = b""
                break
            answers.append(answer.decode().strip())
        else:
            writer.write_eof()
            ended = await reader.read()
    except ConnectionError as error:
        ended = error
    finally:
        writer.close()
    return answers, ended, client_port


def test_each_connection_goes_to_one_random_ready_endpoint_and_stays_on_it():
    async def body(kube: Kube) -> None:
        ips = loopback_ips(3)
        async with Backends(ips) as backends:
            kube.discovery.create_namespaced_endpoint_slice(
                NS, endpoint_slice("web-a", ips, backends.port, not_ready=(ips[2],))
            )
            with ServiceProxy(kube.server, NS, "web") as proxy:
                assert sorted(proxy.endpoints()) == sorted(f"{ip}:{backends.port}" for ip in ips[:2])
                talks = await asyncio.gather(*(talk(proxy, "a", "b", "c") for _ in range(40)))
                for answers, ended, client_port in talks:
                    servers = {answer.split()[0] for answer in answers}
                    assert len(answers) == 3 and len(servers) == 1 and ended == b"", (answers, ended)
                    record = proxy.connection(client_port)
                    assert record is not None and record.outcome == DELIVERED
                    assert record.endpoint == f"{servers.pop()}:{backends.port}"
                per_server = Counter(answers[0].split()[0] for answers, _, _ in talks)
                assert set(per_server) == set(ips[:2]) and sum(per_server.values()) == 40, per_server
                assert backends.accepted[ips[2]] == 0  # not ready: never sent a connection
                assert sum(proxy.delivered().values()) == 40
                await wait_until(lambda: proxy.open_to(ips[0]) + proxy.open_to(ips[1]) == 0, 2.0)

    with Kube() as kube:
        asyncio.run(body(kube))


def test_slice_changes_apply_to_new_connections_while_an_open_one_stays_where_it_is():
    async def body(kube: Kube) -> None:
        first, second = loopback_ips(2)
        async with Backends([first, second]) as backends:
            kube.discovery.create_namespaced_endpoint_slice(
                NS, endpoint_slice("web-a", [first], backends.port + 1, metrics=backends.port)
            )
            with ServiceProxy(kube.server, NS, "web", port_name="metrics") as proxy:
                reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
                writer.write(b"before\n")
                assert await reader.readline() == f"{first} before\n".encode()  # on the port named metrics

                moved = endpoint_slice("web-a", [second], backends.port + 1, metrics=backends.port)
                kube.discovery.replace_namespaced_endpoint_slice(
                    "web-a", NS, {**moved, "metadata": {**moved["metadata"], "resourceVersion": None}}
                )
                await wait_until(lambda: proxy.endpoints() == [f"{second}:{backends.port}"], 2.0)
                answers, _, _ = await talk(proxy, "after")
                assert answers == [f"{second} after"]
                writer.write(b"still\n")  # the connection made before the change stays on its endpoint
                assert await reader.readline() == f"{first} still\n".encode()
                writer.close()

                kube.discovery.delete_namespaced_endpoint_slice("web-a", NS)
                await wait_until(lambda: proxy.endpoints() == [], 2.0)
                answers, ended, client_port = await talk(proxy, "gone")
                assert answers == [] and isinstance(ended, ConnectionResetError), ended
                assert proxy.connection(client_port).outcome == REFUSED and proxy.refused == 1

    with Kube() as kube:
        asyncio.run(body(kube))


def test_no_ready_endpoint_or_a_dead_one_resets_the_client_unread_and_is_recorded():
    async def body(kube: Kube) -> None:
        (dead,) = loopback_ips(1)
        with ServiceProxy(kube.server, NS, "web") as proxy:
            answers, ended, client_port = await talk(proxy, "hello")
            assert answers == [] and isinstance(ended, ConnectionResetError), ended
            assert proxy.connection(client_port).outcome == REFUSED

            kube.discovery.create_namespaced_endpoint_slice(NS, endpoint_slice("web-a", [dead], 9))
            await wait_until(lambda: proxy.endpoints() == [f"{dead}:9"], 2.0)
            answers, ended, client_port = await talk(proxy, "hello")  # nothing listens there
            assert answers == [] and isinstance(ended, ConnectionResetError), ended
            record = proxy.connection(client_port)
            assert (record.outcome, record.endpoint) == (UNREACHABLE, f"{dead}:9")
            assert (proxy.refused, proxy.unreachable, proxy.delivered()) == (1, 1, {})

    with Kube() as kube:
        asyncio.run(body(kube))


def test_an_end_or_a_reset_from_the_server_reaches_the_client_and_the_connection_is_delivered():
    async def body(kube: Kube) -> None:
        (ip,) = loopback_ips(1)
        async with Backends([ip]) as backends:
            kube.discovery.create_namespaced_endpoint_slice(NS, endpoint_slice("web-a", [ip], backends.port))
            with ServiceProxy(kube.server, NS, "web") as proxy:
                await wait_until(lambda: proxy.endpoints() != [], 2.0)
                answers, ended, _ = await talk(proxy, "hi", "bye", "more")  # the server ends after bye
                assert answers == [f"{ip} hi", f"{ip} bye"] and ended == b""

                answers, ended, client_port = await talk(proxy, "hi", "die", "more")  # reset mid-talk
                assert answers == [f"{ip} hi"]
                assert ended == b"" or isinstance(ended, ConnectionResetError), ended
                assert proxy.connection(client_port).outcome == DELIVERED
                await wait_until(lambda: proxy.open_to(ip) == 0, 2.0)

    with Kube() as kube:
        asyncio.run(body(kube))


def test_close_cuts_open_connections_and_leaves_no_thread_or_listener():
    async def body(kube: Kube) -> None:
        (ip,) = loopback_ips(1)
        async with Backends([ip]) as backends:
            kube.discovery.create_namespaced_endpoint_slice(NS, endpoint_slice("web-a", [ip], backends.port))
            proxy = ServiceProxy(kube.server, NS, "web").start()
            reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
            writer.write(b"hi\n")
            assert await reader.readline() == f"{ip} hi\n".encode()
            await asyncio.to_thread(proxy.close)
            with pytest.raises(ConnectionError):
                if not await reader.read():
                    raise ConnectionResetError("ended")
            writer.close()
            with pytest.raises(OSError):
                await asyncio.open_connection("127.0.0.1", proxy.port)
            assert not [t for t in threading.enumerate() if t.name.startswith("service-proxy")]
            assert kube.server.cluster.open_watches() == 0

    with Kube() as kube:
        asyncio.run(body(kube))
