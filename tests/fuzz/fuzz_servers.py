"""In-process fuzz targets run as child processes: the activator and `kpa up`'s entry, each with a pod.

    python tests/fuzz/fuzz_servers.py activator|entry

Prints one JSON line ``{"port": N}`` once the target serves (its pod probed healthy), then runs until
SIGTERM. Every log record goes to stderr as ``LEVEL logger message`` (tracebacks included) and the
event loop's exception handler logs ``unhandled ...`` at ERROR, so the fuzzer can count unhandled
errors by reading stderr. The pod is a real loopback server on the queue-proxy's engine that answers
``K-Network-Probe: queue`` as a queue-proxy does and echoes the size of any body it gets; it never
raises, so any traceback here is the target's own.

Why a child and not the fuzzer's own process: a crash (or a hung event loop) of the target must not
take the fuzzer with it, and ``returncode`` says plainly that the target died.
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from activator.config import RevisionConfig
from activator.server import Activator
from autoscaler.actuator import PodInfo
from autoscaler.lifecycle import PROXY, SERVE
from autoscaler.stat import RevisionKey
from httpengine.errors import ClientDisconnected
from httpengine.limits import Limits
from httpengine.request import Request
from httpengine.response import Response
from httpengine.server import HttpServer
from localbackend.entry import Entry

KEY = RevisionKey("default", "hello")
MODE_FLIP_EVERY = 64  # entry: requests between serve-mode and proxy-mode flips, so both paths are fuzzed


async def pod_handler(request: Request, response: Response) -> None:
    """A pod's queue-proxy as the activator sees it: probes answered ``queue``, bodies counted."""
    if request.header(b"k-network-probe") == b"queue":
        response.send(200, b"queue")
        return
    total = 0
    try:
        while chunk := await request.body.read():
            total += len(chunk)
    except ClientDisconnected:
        return
    response.send(200, b"pod got %d body bytes\n" % total)


async def wait_healthy(activator: Activator, timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not activator.revision_status(KEY)["healthy"]:
            await asyncio.sleep(0.01)


async def serve(kind: str) -> None:
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(
        lambda _loop, context: logging.getLogger("fuzz").error(
            "unhandled %s", context.get("message"), exc_info=context.get("exception")
        )
    )
    pod = HttpServer(pod_handler, name="fuzz-pod")
    _, pod_port = await pod.start("127.0.0.1", 0)
    address = f"127.0.0.1:{pod_port}"
    activator = Activator()
    activator.set_revision(RevisionConfig("hello", container_concurrency=8, timeout_seconds=5.0))
    servers = [pod]
    if kind == "activator":
        ports = await activator.start("127.0.0.1", 0)
        port = ports.serving
    elif kind == "entry":
        await activator.start(port=None)
        entry = Entry(activator, [KEY], {KEY: 4})
        entry.set_ready_pods(KEY, [PodInfo("pod-1", KEY, address, "", 0.0, ready=True)])
        served = 0

        def flipping(request: Request, response: Response):  # -> Awaitable[None] | None
            nonlocal served
            served += 1
            if served % MODE_FLIP_EVERY == 0:
                entry.set_mode(KEY, SERVE if (served // MODE_FLIP_EVERY) % 2 else PROXY)
            return entry.handle(request, response)

        server = HttpServer(flipping, limits=Limits(cancel_on_client_eof=True), name="entry")
        _, port = await server.start("127.0.0.1", 0)
        servers.append(server)
    else:
        raise SystemExit(f"fuzz_servers.py: unknown target {kind!r}; use activator or entry")
    activator.set_endpoints(KEY, [address])
    await wait_healthy(activator)
    print(json.dumps({"port": port}), flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await activator.stop(grace=0.5)
    await asyncio.gather(*(s.shutdown(grace=0.5) for s in servers))


def main() -> None:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(name)s %(message)s")
    import uvloop

    uvloop.run(serve(sys.argv[1] if len(sys.argv) > 1 else ""))


if __name__ == "__main__":
    main()
