"""The activator closed by default: its admin API on loopback and behind a token, and per-revision
authentication checked before a request can be held or reported (so it cannot wake a revision)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time

import httpx
import psutil
import pytest
from activator_fixtures import Pod, run
from auth_fixtures import AUDIENCE, ISSUER, JwksServer, SigningKey, bearer

from activator.admin import AdminApi
from activator.config import RevisionConfig
from activator.server import Activator
from activator.sinks import CallbackStatSink
from autoscaler.stat import RevisionKey
from queueproxy.auth import AuthSpec
from queueproxy.gate import AuthGate

pytestmark = pytest.mark.timeout(60)
TOKEN = "admin-token-for-tests"
KEY = RevisionKey("default", "hello")


def listening(pid: int) -> set[tuple[str, int]]:
    """(address, port) of every TCP socket ``pid`` listens on (psutil 6 renamed connections)."""
    process = psutil.Process(pid)
    connections = getattr(process, "net_connections", None) or process.connections
    return {(c.laddr.ip, c.laddr.port) for c in connections("tcp") if c.status == psutil.CONN_LISTEN}


def test_cli_admin_listens_on_loopback_and_state_changes_need_the_token(tmp_path):
    token_file = tmp_path / "admin.token"
    token_file.write_text(TOKEN + "\n")
    os.chmod(token_file, 0o600)

    async def body():
        async with Pod() as pod:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "kpa", "activator", "--host", "0.0.0.0", "--port", "0",
                "--admin-port", "0", "--admin-token-file", str(token_file),
                "--revision", f"hello:cc=1,endpoints={pod.address}",
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            )  # fmt: skip
            try:
                ready = json.loads(await asyncio.wait_for(proc.stdout.readline(), 10))
                bound = listening(proc.pid)
                assert ("0.0.0.0", ready["serving_port"]) in bound
                assert ("127.0.0.1", ready["admin_port"]) in bound
                assert ready["admin_host"] == "127.0.0.1"
                admin = f"http://127.0.0.1:{ready['admin_port']}/revisions/default/hello"
                evil = {"addresses": ["10.9.9.9:80"]}
                async with httpx.AsyncClient(timeout=5.0) as client:
                    missing = await client.put(admin + "/endpoints", json=evil)
                    assert missing.status_code == 401 and missing.headers["www-authenticate"].startswith(
                        "Bearer"
                    )
                    wrong = await client.put(admin + "/endpoints", json=evil, headers=bearer("guess"))
                    assert wrong.status_code == 403
                    assert (await client.delete(admin)).status_code == 401
                    assert (await client.post(admin)).status_code == 401  # refused before routing
                    status = await client.get(admin)  # read-only: no token needed
                    assert status.status_code == 200 and status.json()["endpoints"] == [pod.address]
                    moved = await client.put(
                        admin + "/endpoints", json={"addresses": []}, headers=bearer(TOKEN)
                    )
                    assert moved.status_code == 200 and moved.json()["endpoints"] == []
                proc.send_signal(signal.SIGTERM)
                assert await asyncio.wait_for(proc.wait(), 10) == 0
            finally:
                if proc.returncode is None:
                    proc.kill()
                    await proc.wait()

    run(body, timeout=30)


def test_without_an_admin_token_every_state_change_is_refused():
    async def body():
        activator = Activator()
        api = AdminApi(activator)  # no admin token
        ports = await activator.start("127.0.0.1", None, admin_port=0, admin_handler=api.handle)
        try:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{ports.admin}", timeout=5) as admin:
                refused = await admin.put("/revisions/default/hello", json={}, headers=bearer("anything"))
                assert refused.status_code == 403 and "--admin-token-file" in refused.json()["error"]
                assert "www-authenticate" not in refused.headers
                assert (await admin.get("/revisions")).json() == {"revisions": []}
        finally:
            await activator.stop()

    run(body)


def test_an_admin_port_without_a_handler_is_refused_naming_the_handler_to_pass():
    async def body():
        activator = Activator()
        fix = "admin_port=0 without an admin_handler: pass admin_handler=AdminApi"
        try:
            with pytest.raises(ValueError, match=fix):
                await activator.start("127.0.0.1", None, admin_port=0)
        finally:
            await activator.stop()  # had it started after all

    run(body)


async def _gated_activator(spec: AuthSpec):
    """An activator at zero (no endpoints) whose revision needs credentials; stats land in a list."""
    stats = []
    activator = Activator(stat_sink=CallbackStatSink(stats.extend))
    activator.set_revision(RevisionConfig("hello", timeout_seconds=0.5))
    gate = AuthGate.load("hello", spec)
    api = AdminApi(activator, TOKEN)
    ports = await activator.start("127.0.0.1", 0, admin_port=0, admin_handler=api.handle)
    gate.prefetch()
    activator.auth_gates[KEY] = gate
    return activator, ports, stats


def test_an_unauthenticated_request_never_reaches_the_throttler_or_the_autoscaler(tmp_path):
    """Regression: any request to a revision at zero was held and reported, so anyone could scale it up."""
    tokens = tmp_path / "tokens"
    tokens.write_text("good-token\n")

    async def body():
        activator, ports, stats = await _gated_activator(AuthSpec(bearer_tokens_file=str(tokens)))
        try:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{ports.serving}", timeout=5) as data:
                for headers in ({}, bearer("bad-token")):
                    answer = await data.get("/", headers={"host": "hello", **headers})
                    assert answer.status_code == 401
                    assert answer.headers["www-authenticate"].startswith('Bearer realm="hello"')
                assert (await data.get("/", headers={"K-Network-Probe": "activator"})).text == "activator"
                assert stats == [] and activator.revision_status(KEY)["held"] == 0
                held = await data.get("/", headers={"host": "hello", **bearer("good-token")})
                assert held.status_code == 504  # held for a pod that never came: it was let in
                assert [s.revision for s in stats] == ["hello"]  # and reported at once
        finally:
            await activator.stop()

    run(body)


def test_auth_set_through_the_admin_api_and_a_jwt_from_a_down_jwks_gets_a_quick_503(tmp_path):
    key = SigningKey("k1")

    async def body():
        jwks = await JwksServer(key).start()
        down_url = jwks.url
        await jwks.stop()
        activator = Activator(stat_sink=CallbackStatSink(lambda stats: None))
        api = AdminApi(activator, TOKEN)
        ports = await activator.start("127.0.0.1", 0, admin_port=0, admin_handler=api.handle)
        try:
            admin = httpx.AsyncClient(
                base_url=f"http://127.0.0.1:{ports.admin}", timeout=5, headers=bearer(TOKEN)
            )
            data = httpx.AsyncClient(base_url=f"http://127.0.0.1:{ports.serving}", timeout=10)
            async with admin, data:
                await admin.put("/revisions/default/hello", json={"timeout_seconds": 0.5})
                bad = await admin.put("/revisions/default/hello/auth", json={"jwks_url": down_url})
                assert bad.status_code == 400 and "kpa.dev/auth-jwt-issuer" in bad.json()["error"]
                spec = {"jwks_url": down_url, "jwt_issuer": ISSUER, "jwt_audience": AUDIENCE}
                assert (await admin.put("/revisions/default/hello/auth", json=spec)).json() == spec
                began = time.monotonic()
                answer = await data.get("/", headers={"host": "hello", **bearer(key.token())})
                assert answer.status_code == 503 and "JWKS" in answer.text
                assert time.monotonic() - began < 4.0
                assert activator.revision_status(KEY)["held"] == 0
                assert (await admin.delete("/revisions/default/hello/auth")).json() == {}
                assert (await data.get("/", headers={"host": "hello"})).status_code == 504  # open again
        finally:
            await activator.stop()

    run(body, timeout=30)


def test_a_valid_jwt_waits_for_the_first_jwks_fetch_then_is_forwarded_once():
    key = SigningKey("k1")

    async def body():
        jwks = await JwksServer(key, delay=0.3).start()
        try:
            async with Pod() as pod:
                spec = AuthSpec(jwks_url=jwks.url, jwt_issuer=ISSUER, jwt_audience=AUDIENCE)
                activator, ports, _ = await _gated_activator(spec)
                try:
                    activator.set_endpoints(KEY, [pod.address])
                    async with httpx.AsyncClient(
                        base_url=f"http://127.0.0.1:{ports.serving}", timeout=10
                    ) as data:
                        headers = {"host": "hello", **bearer(key.token())}
                        answers = await asyncio.gather(*(data.get("/", headers=headers) for _ in range(4)))
                        assert [a.status_code for a in answers] == [200] * 4
                        assert pod.served == 4 and jwks.fetches == 1
                finally:
                    await activator.stop()
        finally:
            await jwks.stop()

    run(body, timeout=30)
