"""The shell of ``queueproxy.auth``: reads credentials, and applies data-path verdicts to requests.

The same gate stands in front of every way into a revision: the queue-proxy (serve and proxy mode
alike), `kpa up`'s entry and the standalone activator (before a request can be held, counted or
reported, so an unauthenticated request never wakes a revision from zero). The verdict is the pure
``queueproxy.auth.verify_request``; this shell reads the tokens file once, holds the JWKS cache and
writes the answer. Health checks and network probes are answered before the gate and stay open.
``load_admin_token`` finds the admin token of a process (`kpa activator`, `kpa up`).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Literal, overload

from httpengine.request import Request
from httpengine.response import Response
from queueproxy.auth import (
    ADMIN_TOKEN_ENV,
    TOKENS_FILE,
    AuthConfigError,
    AuthSpec,
    Denial,
    NeedKeys,
    TokenSet,
    VerifiedJwts,
    bearer,
    parse_tokens,
    verify_request,
)
from queueproxy.jwks import JwksCache

PASS: Literal[True] = True
RETRY_AFTER_SECONDS = b"5"


def load_admin_token(token_file: str | None, env: Mapping[str, str]) -> str | None:
    """The admin token from ``--admin-token-file`` (first line), else ``KPA_ADMIN_TOKEN``; None if neither."""
    if token_file:
        try:
            token = Path(token_file).read_text().strip().partition("\n")[0].strip()
        except OSError as exc:
            raise AuthConfigError(
                f"--admin-token-file {token_file}: cannot read: {exc.strerror or exc}"
            ) from None
        if not token:
            raise AuthConfigError(
                f"--admin-token-file {token_file}: is empty; write the token on its first line"
            )
        return token
    return env.get(ADMIN_TOKEN_ENV, "").strip() or None


# How a gate hands an authorized request back to its server: called again from inside a task.
Again = Callable[..., Awaitable[None] | None]


class AuthGate:
    """One revision's credentials check; call :meth:`screen` from the event loop's thread."""

    def __init__(self, realm: str, spec: AuthSpec, tokens: TokenSet | None, jwks: JwksCache | None) -> None:
        self.realm = realm
        self.spec = spec
        self.tokens = tokens
        self.jwks = jwks
        self.verified = VerifiedJwts() if jwks is not None else None
        self._keys_seen: object = None  # the key set ``verified`` was filled with
        self._resuming: Request | None = None

    @classmethod
    def load(cls, realm: str, spec: AuthSpec, base: Path | None = None) -> AuthGate:
        """Read the tokens file (relative paths from ``base``) and set up the JWKS cache."""
        tokens = None
        if spec.bearer_tokens_file is not None:
            path = Path(spec.bearer_tokens_file)
            if base is not None and not path.is_absolute():
                path = base / path
            try:
                text = path.read_text()
            except OSError as exc:
                raise AuthConfigError(
                    f'{TOKENS_FILE}="{spec.bearer_tokens_file}": cannot read {path}: {exc.strerror or exc}'
                ) from None
            tokens = parse_tokens(text, f'{TOKENS_FILE}="{spec.bearer_tokens_file}"')
        jwks = JwksCache(spec.jwks_url) if spec.jwks_url is not None else None
        return cls(realm, spec, tokens, jwks)

    def prefetch(self) -> None:
        """Start fetching the JWKS now so the first request finds the keys (call in a running loop)."""
        if self.jwks is not None:
            self.jwks.current()

    @overload
    def verdict(self, authorization: bytes | None, *, refreshed: Literal[True]) -> Denial | None: ...
    @overload
    def verdict(
        self, authorization: bytes | None, *, refreshed: bool = False
    ) -> Denial | NeedKeys | None: ...
    def verdict(self, authorization: bytes | None, *, refreshed: bool = False) -> Denial | NeedKeys | None:
        """None: the request may go on. Just after a JWKS refresh (``refreshed``) a key still missing is
        final, a 401 (``verify_jwt``), so the verdict never asks for keys again."""
        now = time.time()
        verified, jwks = self.verified, self.jwks
        if verified is None or jwks is None:  # both or neither: no JWKS, tokens only
            return verify_request(authorization, self.spec, self.tokens, None, now, refreshed=refreshed)
        keys = jwks.current()
        if keys is not self._keys_seen:  # new keys: what the old ones vouched for is checked again
            verified.clear()
            self._keys_seen = keys
        token = bearer(authorization)
        if token is not None and verified.passes(token, now):
            return None
        verdict = verify_request(authorization, self.spec, self.tokens, keys, now, refreshed=refreshed)
        if verdict is None and token is not None and (self.tokens is None or token not in self.tokens):
            verified.remember(token)
        return verdict

    def screen(
        self, request: Request, response: Response, again: Again
    ) -> Awaitable[None] | Literal[True] | None:
        """``PASS``: go on now. None: refused and answered. An awaitable: the verdict waits for the
        JWKS; it answers the refusal, or calls ``again(request, response, in_task=True)`` and awaits it."""
        if request is self._resuming:
            return PASS
        verdict = self.verdict(request.index.get(b"authorization"))
        if verdict is None:
            return PASS
        if isinstance(verdict, Denial):
            self.deny(response, verdict)
            return None
        return self._after_fetch(verdict, request, response, again)

    async def _after_fetch(self, need: NeedKeys, request: Request, response: Response, again: Again) -> None:
        jwks = self.jwks
        assert jwks is not None  # keys are needed only where a JWKS is configured
        if jwks.fetch_pending():
            await jwks.refreshed()
        if jwks.error is not None and (jwks.keys is None or need.kid not in jwks.keys):
            self.deny(
                response, Denial(503, f"cannot check the token: JWKS {jwks.url} unavailable ({jwks.error})")
            )
            return
        verdict = self.verdict(request.index.get(b"authorization"), refreshed=True)
        if verdict is not None:
            self.deny(response, verdict)
            return
        self._resuming = request
        try:
            pending = again(request, response, in_task=True)
        finally:
            self._resuming = None
        if pending is not None:
            await pending

    def deny(self, response: Response, denial: Denial) -> None:
        headers = []
        challenge = denial.challenge(self.realm)
        if challenge is not None:
            headers.append((b"www-authenticate", challenge))
        if denial.status == 503:
            headers.append((b"retry-after", RETRY_AFTER_SECONDS))
        response.send(denial.status, f"{denial.reason}\n".encode(), headers)
