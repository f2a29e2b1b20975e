"""Signed JWTs and a real JWKS server on loopback, for the data-path authentication tests.

The RSA keys are generated per test run; the JWKS is served by our own HTTP engine on 127.0.0.1
and counts its fetches, so a test can check that keys are cached instead of fetched per request.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from httpengine.request import Request
from httpengine.response import Response
from httpengine.server import HttpServer

ISSUER = "https://issuer.test"
AUDIENCE = "hello-api"


class SigningKey:
    """An RSA key pair with a ``kid``: signs tokens and describes itself as a JWK."""

    def __init__(self, kid: str) -> None:
        self.kid = kid
        self.private = rsa.generate_private_key(public_exponent=65537, key_size=2048)

    def jwk(self) -> dict[str, Any]:
        return {**RSAAlgorithm.to_jwk(self.private.public_key(), as_dict=True), "kid": self.kid,
                "use": "sig", "alg": "RS256"}  # fmt: skip

    def token(self, **claims: Any) -> str:
        now = int(time.time())
        body = {"iss": ISSUER, "aud": AUDIENCE, "sub": "tester", "iat": now, "exp": now + 300, **claims}
        body = {k: v for k, v in body.items() if v is not None}
        return jwt.encode(body, self.private, algorithm="RS256", headers={"kid": self.kid})


class JwksServer:
    """Serves ``{"keys": [...]}`` at /jwks.json after ``delay`` seconds; ``fetches`` counts the GETs.

    A delay keeps the first fetch in flight while requests arrive, so they must wait for the keys.
    """

    def __init__(self, *keys: SigningKey, delay: float = 0.0) -> None:
        self.keys = list(keys)
        self.delay = delay
        self.fetches = 0
        self.server = HttpServer(self.handle, name="jwks")
        self.url = ""

    async def start(self) -> JwksServer:
        _, port = await self.server.start("127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{port}/jwks.json"
        return self

    async def stop(self) -> None:
        await self.server.shutdown(grace=0.0)

    async def handle(self, request: Request, response: Response) -> None:
        self.fetches += 1
        await asyncio.sleep(self.delay)
        body = json.dumps({"keys": [k.jwk() for k in self.keys]}).encode()
        response.send(200, body, content_type=b"application/json")


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
