"""The queue-proxy closed by default: admin, stats and metrics on loopback whatever the serving
address, a /wait-for-drain that cannot fail health checks without a SIGTERM, and per-revision
authentication of the data path (static bearer tokens, JWTs against a real JWKS server)."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest
from auth_fixtures import AUDIENCE, ISSUER, JwksServer, SigningKey, bearer
from queueproxy_fixtures import UserContainer, run, running_queue_proxy, start_queue_proxy, wait_ready

from queueproxy.auth import AuthSpec, NeedKeys
from queueproxy.config import QueueProxyConfigError
from queueproxy.gate import AuthGate
from queueproxy.jwks import JwksCache

pytestmark = pytest.mark.timeout(60)
PROBE = {"K-Network-Probe": "queue"}
KEY = SigningKey("key-1")


def test_admin_stats_and_metrics_stay_on_loopback_when_serving_binds_every_address():
    async def body():
        async with UserContainer() as user, running_queue_proxy(user.port, host="0.0.0.0") as (proxy, _):
            assert proxy.serving.host == "0.0.0.0"
            assert {proxy.admin.host, proxy.stats_server.host, proxy.metrics_server.host} == {"127.0.0.1"}

    run(body)


def test_stats_can_bind_every_address_for_the_autoscaler_and_needs_no_token():
    async def body():
        async with (
            UserContainer() as user,
            running_queue_proxy(user.port, stats_host="0.0.0.0") as (proxy, ports),
            httpx.AsyncClient(timeout=5) as client,
        ):
            assert proxy.stats_server.host == "0.0.0.0" and proxy.admin.host == "127.0.0.1"
            stat = await client.get(f"http://127.0.0.1:{ports['stats_port']}/stats")
            assert stat.status_code == 200 and "average_concurrent_requests" in stat.json()

    run(body)


def test_repeated_wait_for_drain_without_a_sigterm_never_fails_health_checks():
    """Regression: each GET started a drain, so calling it every half second kept the pod unready."""

    async def body():
        async with (
            UserContainer() as user,
            running_queue_proxy(user.port, drain_timeout=5.0) as (proxy, ports),
        ):
            await wait_ready(proxy)
            async with httpx.AsyncClient(timeout=5) as client:
                admin = f"http://127.0.0.1:{ports['admin_port']}/wait-for-drain"
                serving = f"http://127.0.0.1:{ports['serving_port']}/"
                calls = [asyncio.ensure_future(client.get(admin)) for _ in range(5)]
                deadline = time.monotonic() + 1.5
                probes = []
                while time.monotonic() < deadline:
                    probes.append((await client.get(serving, headers=PROBE)).status_code)
                    if len(probes) % 10 == 0:
                        calls.append(asyncio.ensure_future(client.get(admin)))
                    await asyncio.sleep(0.02)
                answers = await asyncio.gather(*calls)
                assert set(probes) == {200}, probes
                assert {(a.status_code, a.content) for a in answers} == {
                    (200, b"not draining: no SIGTERM followed\n")
                }
                assert (await client.get(serving)).status_code == 200
            assert not proxy.drain.drainer.draining

    run(body)


async def _with_auth(spec: AuthSpec, check) -> None:
    async with (
        UserContainer() as user,
        running_queue_proxy(user.port, auth=spec, revision="hello") as (proxy, ports),
        httpx.AsyncClient(timeout=10) as client,
    ):
        await wait_ready(proxy)
        await check(client, f"http://127.0.0.1:{ports['serving_port']}", proxy, user)


def test_static_bearer_tokens_right_wrong_and_missing(tmp_path):
    tokens = tmp_path / "tokens.txt"
    tokens.write_text("# one a line\ntoken-one\ntoken-two\n")

    async def check(client, url, proxy, user):
        assert (await client.get(url + "/", headers=bearer("token-two"))).status_code == 200
        missing = await client.get(url + "/")
        assert missing.status_code == 401
        assert missing.headers["www-authenticate"] == 'Bearer realm="hello"'
        wrong = await client.get(url + "/", headers=bearer("token-three"))
        assert wrong.status_code == 401 and 'error="invalid_token"' in wrong.headers["www-authenticate"]
        basic = await client.get(url + "/", headers={"Authorization": "Basic dG9rZW4tb25lOg=="})
        assert basic.status_code == 401
        # Probes stay open; refused requests never reach the user container nor the request stats.
        assert (await client.get(url + "/", headers=PROBE)).status_code == 200
        assert user.served == 1
        assert proxy.stats.report(time.monotonic()).request_count == 1

    run(lambda: _with_auth(AuthSpec(bearer_tokens_file=str(tokens)), check))


def test_an_unreadable_tokens_file_is_refused_at_start_naming_it(tmp_path):
    async def body():
        missing = str(tmp_path / "nope.txt")
        with pytest.raises(QueueProxyConfigError, match=r"kpa\.dev/auth-bearer-tokens-file=.*cannot read"):
            await start_queue_proxy(1, auth=AuthSpec(bearer_tokens_file=missing))

    run(body)


def test_jwts_checked_against_a_real_jwks_server_fetched_once():
    other_key = SigningKey("key-1")  # same kid, different key: a forged signature
    stranger = SigningKey("key-9")

    async def body():
        jwks = await JwksServer(KEY).start()
        spec = AuthSpec(jwks_url=jwks.url, jwt_issuer=ISSUER, jwt_audience=AUDIENCE)

        async def check(client, url, proxy, user):
            for _ in range(10):
                assert (await client.get(url + "/", headers=bearer(KEY.token()))).status_code == 200
            cases = {
                "expired": (KEY.token(exp=int(time.time()) - 3600), 401),
                "wrong issuer": (KEY.token(iss="https://evil.test"), 401),
                "wrong audience": (KEY.token(aud="another-api"), 403),
                "bad signature": (other_key.token(), 401),
                "unknown kid": (stranger.token(), 401),
            }
            for name, (token, status) in cases.items():
                answer = await client.get(url + "/", headers=bearer(token))
                assert answer.status_code == status, (name, answer.text)
                assert answer.headers["www-authenticate"].startswith('Bearer realm="hello", error='), name
            assert user.served == 10
            assert jwks.fetches <= 2  # the start-up fetch, and one more for the unknown kid

        try:
            await _with_auth(spec, check)
        finally:
            await jwks.stop()

    run(body, timeout=30)


def test_a_jwks_server_that_is_down_gives_a_quick_503_not_a_hang():
    async def body():
        jwks = await JwksServer(KEY).start()
        url = jwks.url
        await jwks.stop()  # nothing listens there any more
        spec = AuthSpec(jwks_url=url, jwt_issuer=ISSUER, jwt_audience=AUDIENCE)

        async def check(client, url, proxy, user):
            began = time.monotonic()
            answer = await client.get(url + "/", headers=bearer(KEY.token()))
            assert answer.status_code == 503 and "JWKS" in answer.text and answer.headers["retry-after"]
            assert time.monotonic() - began < 4.0
            assert (await client.get(url + "/")).status_code == 401  # no token: no fetch needed
            assert user.served == 0

        await _with_auth(spec, check)

    run(body, timeout=30)


def test_requests_that_arrive_while_the_keys_are_being_fetched_wait_for_them_and_go_through():
    async def body():
        jwks = await JwksServer(KEY, delay=0.3).start()
        spec = AuthSpec(jwks_url=jwks.url, jwt_issuer=ISSUER, jwt_audience=AUDIENCE)

        async def check(client, url, proxy, user):
            token = bearer(KEY.token())
            answers = await asyncio.gather(
                *(client.get(url + "/sleep?s=0.01", headers=token) for _ in range(8))
            )
            assert [a.status_code for a in answers] == [200] * 8
            assert user.served == 8 and jwks.fetches == 1  # one fetch, shared by all of them

        try:
            await _with_auth(spec, check)
        finally:
            await jwks.stop()

    run(body, timeout=30)


def test_a_jwks_server_that_accepts_but_never_answers_cannot_hold_a_request_up():
    async def body():
        silent = await asyncio.start_server(lambda reader, writer: None, "127.0.0.1", 0)
        port = silent.sockets[0].getsockname()[1]
        cache = JwksCache(f"http://127.0.0.1:{port}/jwks.json", timeout=0.2)
        try:
            began = time.monotonic()
            await cache.refreshed()
            assert time.monotonic() - began < 1.3  # the fetch timeout plus the 1 s bound
            assert cache.keys is None and "timed out" in cache.error
            assert not cache.fetch_pending()  # no second fetch within the refresh interval
        finally:
            silent.close()

    run(body)


def test_a_jwt_is_verified_once_until_the_keys_change():
    """The signature check runs once per token; a key dropped from the JWKS stops vouching for it."""
    new_key = SigningKey("key-2")

    async def body():
        jwks = await JwksServer(KEY).start()
        gate = AuthGate.load("hello", AuthSpec(jwks_url=jwks.url, jwt_issuer=ISSUER, jwt_audience=AUDIENCE))
        try:
            await gate.jwks.refreshed()
            header = b"Bearer " + KEY.token().encode()
            assert gate.verdict(header) is None and len(gate.verified) == 1
            assert gate.verdict(header) is None and len(gate.verified) == 1
            jwks.keys = [new_key]  # rotated: key-1 is gone
            await gate.jwks.refreshed()
            assert gate.verdict(header) == NeedKeys("key-1") and len(gate.verified) == 0
        finally:
            await jwks.stop()

    run(body)
