"""Serve mode has its own bound: a pod that cannot answer (hung, stopped) still yields a 504, never a hang."""

import os
import signal
import time

import httpx
from stack_fixtures import REVISION, row, run, running_stack, stack_text
from waiting import wait_until


def test_a_stopped_pod_in_serve_mode_is_answered_504_just_after_the_revision_timeout(tmp_path):
    """SIGSTOP the only pod's queue-proxy: the kernel still accepts connections for it, so only a
    deadline tells a hung pod from a slow one. The queue-proxy cannot answer its own 504, so the entry
    does, one second after the revision timeout (2 s here)."""

    async def scenario():
        text = stack_text(
            delay=0.01,
            cc=4,
            annotations={"min-scale": "1", "max-scale": "1"},
            config={"target-burst-capacity": "0"},
        ).replace("timeoutSeconds: 30", "timeoutSeconds: 2")
        async with running_stack(text, tmp_path) as stack:
            await wait_until(
                lambda: row(stack)["mode"] == "serve" and row(stack)["ready_pods"] == 1,
                20,
                "serve mode with one ready pod",
            )
            entry = httpx.AsyncClient(base_url=stack.entry_url, headers={"host": "hello"}, timeout=10)
            async with entry as c:
                assert (await c.get("/")).status_code == 200
                (pid,) = [p for p in stack.actuator.process_ids() if "queue-proxy" in _cmdline(p)]
                os.kill(pid, signal.SIGSTOP)
                try:
                    started = time.monotonic()
                    reply = await c.get("/")
                    took = time.monotonic() - started
                finally:
                    os.kill(pid, signal.SIGCONT)
            assert reply.status_code == 504, reply.text
            assert "did not answer within 3s" in reply.text
            assert 2.9 < took < 5.0
            assert stack.entry.served_direct >= 1
            assert REVISION in stack.entry.backends

    run(scenario())


def _cmdline(pid: int) -> str:
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        return f.read().replace(b"\0", b" ").decode()
