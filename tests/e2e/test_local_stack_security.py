"""`kpa up` closed by default: the admin port on loopback behind a token written to a private ready
file, pods that do not inherit the token, and a revision with data-path authentication that an
unauthenticated request cannot wake from zero (checked at the entry and again by its queue-proxy)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest
from stack_fixtures import REVISION, row, run, running_stack, stack_text
from waiting import wait_until

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "component"))
from auth_fixtures import AUDIENCE, ISSUER, JwksServer, SigningKey, bearer

pytestmark = pytest.mark.timeout(90)
STAT = [
    {
        "namespace": "default",
        "revision": "hello",
        "stat": {"pod_name": "x"},
    }
]


def listening(pid: int) -> set[tuple[str, int]]:
    process = psutil.Process(pid)
    connections = getattr(process, "net_connections", None) or process.connections
    return {(c.laddr.ip, c.laddr.port) for c in connections("tcp") if c.status == psutil.CONN_LISTEN}


def test_kpa_up_admin_is_private_and_needs_the_token_from_its_ready_file(tmp_path):
    """Regression: anyone who reached the admin port could POST /stats and scale a revision."""
    stack_file = tmp_path / "stack.yaml"
    stack_file.write_text(stack_text(delay=0.0, cc=1))
    ready_file = tmp_path / "ready.json"
    up = subprocess.Popen(
        [sys.executable, "-m", "kpa", "up", str(stack_file), "--host", "0.0.0.0", "--port", "0",
         "--admin-port", "0", "--max-pods", "2", "--no-live", "--ready-file", str(ready_file),
         "--log-dir", str(tmp_path)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env={**os.environ, "KPA_ADMIN_TOKEN": "from-env"},
    )  # fmt: skip

    def written() -> bool:
        assert up.poll() is None, f"kpa up exited with {up.returncode}"
        return ready_file.exists() and ready_file.read_text().endswith("\n")

    async def scenario():
        await wait_until(written, 30, "kpa up to write its ready file", 0.05)
        assert stat.S_IMODE(ready_file.stat().st_mode) == 0o600
        ready = json.loads(ready_file.read_text())
        assert ready["admin_token"] == "from-env"
        admin_port = int(ready["admin"].rsplit(":", 1)[1])
        entry_port = int(ready["entry"].rsplit(":", 1)[1])
        assert {("127.0.0.1", admin_port), ("0.0.0.0", entry_port)} <= listening(up.pid)
        async with httpx.AsyncClient(base_url=ready["admin"], timeout=5) as admin:
            missing = await admin.post("/stats", json=STAT)
            assert missing.status_code == 401 and missing.headers["www-authenticate"].startswith("Bearer")
            assert (
                await admin.post("/stats", json=STAT, headers={"Authorization": "Bearer guess"})
            ).status_code == 403
            status = await admin.get("/status")  # read-only: open
            assert status.status_code == 200
            accepted = await admin.post("/stats", json=STAT, headers={"Authorization": "Bearer from-env"})
            assert accepted.json() == {"accepted": 1}
            pids: list[int] = []

            async def pods_started() -> bool:
                pids[:] = (await admin.get("/status")).json()["pod_pids"]
                return bool(pids)

            await wait_until(pods_started, 10, "the pod the stat asked for", 0.05)
            for pid in pids:  # neither the queue-proxy nor the user container got the token
                assert "KPA_ADMIN_TOKEN" not in psutil.Process(pid).environ()

    try:
        run(scenario())
    finally:
        up.send_signal(signal.SIGTERM)
        try:
            up.wait(20)
        except subprocess.TimeoutExpired:
            up.kill()
            up.wait()


def test_an_unauthenticated_request_cannot_wake_a_revision_and_pods_check_tokens_too(tmp_path):
    tokens = tmp_path / "tokens.txt"
    tokens.write_text("letmein\n")
    text = (
        stack_text(
            delay=0.0, cc=1, annotations={"initial-scale": "0"}, config={"allow-zero-initial-scale": "true"}
        )
        + f"      kpa.dev/auth-bearer-tokens-file: '{tokens}'\n"
    )

    async def scenario():
        async with running_stack(text, tmp_path) as stack, httpx.AsyncClient(timeout=30) as http:
            entry = stack.entry_url + "/"
            for headers in ({}, {"Authorization": "Bearer wrong"}):
                refused = await http.get(entry, headers={"Host": "hello", **headers})
                assert refused.status_code == 401
                assert refused.headers["www-authenticate"].startswith('Bearer realm="hello"')
            window = time.monotonic() + 1.0  # a scale-from-zero poke would act within ~0.1 s
            while time.monotonic() < window:
                assert row(stack)["desired_pods"] == 0 and not stack.actuator.pods(REVISION)
                assert stack.activator.revision_status(REVISION)["held"] == 0
                await asyncio.sleep(0.05)
            woke = await http.get(entry, headers={"Host": "hello", "Authorization": "Bearer letmein"})
            assert woke.status_code == 200 and woke.headers["x-kpa-cold-start"] == "true"
            await wait_until(lambda: row(stack)["ready_pods"] == 1, 20, "the woken pod")
            pod = f"http://{stack.actuator.pods(REVISION)[0].address}/"
            assert (await http.get(pod)).status_code == 401  # the queue-proxy checks on its own
            assert (await http.get(pod, headers={"Authorization": "Bearer letmein"})).status_code == 200

    run(scenario())


def test_a_jwt_sent_while_the_keys_are_still_being_fetched_wakes_the_revision(tmp_path):
    """The entry waits for the JWKS off the event loop, then hands the request on (in a task)."""
    key = SigningKey("k1")

    async def scenario():
        jwks = await JwksServer(key, delay=0.3).start()
        text = stack_text(
            delay=0.0, cc=1, annotations={"initial-scale": "0"}, config={"allow-zero-initial-scale": "true"}
        ) + (
            f"      kpa.dev/auth-jwks-url: '{jwks.url}'\n"
            f"      kpa.dev/auth-jwt-issuer: '{ISSUER}'\n"
            f"      kpa.dev/auth-jwt-audience: '{AUDIENCE}'\n"
        )
        try:
            async with running_stack(text, tmp_path) as stack, httpx.AsyncClient(timeout=30) as http:
                entry = stack.entry_url + "/"
                woke = await http.get(entry, headers={"Host": "hello", **bearer(key.token())})
                assert woke.status_code == 200 and woke.headers["x-kpa-cold-start"] == "true"
                other = await http.get(entry, headers={"Host": "hello", **bearer(key.token(aud="other"))})
                assert other.status_code == 403
        finally:
            await jwks.stop()

    run(scenario())
