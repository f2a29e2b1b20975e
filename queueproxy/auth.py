"""Who may call: bearer tokens for admin APIs, and per-revision authentication of the data path.

Pure core: no clock, no sockets, no files. Time (``now``, unix seconds) and the signing keys come from
the caller, so every verdict here is a function of its arguments and is tested as one. The shells
around it are ``queueproxy.jwks`` (fetches and caches a JWKS in a worker thread) and
``queueproxy.gate`` (applies a verdict to one HTTP request in the queue-proxy, the activator and
`kpa up`'s entry).

Answers follow RFC 6750: no or unusable credentials give ``401`` with ``WWW-Authenticate: Bearer``
(``error="invalid_token"`` when a token was sent); valid credentials that are not for this service
(a JWT for another audience) give ``403``; a JWKS that cannot be fetched gives ``503``. Tokens are
compared in constant time (SHA-256 digests through ``hmac.compare_digest``), so neither a token's
content nor its length leaks through timing.
"""

from __future__ import annotations

import hashlib
import hmac
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from typing import Any

import jwt

ADMIN_TOKEN_ENV = "KPA_ADMIN_TOKEN"
ANNOTATION_PREFIX = "kpa.dev/auth-"
# Per-revision data-path authentication: stack-file annotation -> queue-proxy environment variable.
TOKENS_FILE = "kpa.dev/auth-bearer-tokens-file"
JWKS_URL = "kpa.dev/auth-jwks-url"
JWT_ISSUER = "kpa.dev/auth-jwt-issuer"
JWT_AUDIENCE = "kpa.dev/auth-jwt-audience"
ENV_OF_ANNOTATION = {
    TOKENS_FILE: "KPA_AUTH_BEARER_TOKENS_FILE",
    JWKS_URL: "KPA_AUTH_JWKS_URL",
    JWT_ISSUER: "KPA_AUTH_JWT_ISSUER",
    JWT_AUDIENCE: "KPA_AUTH_JWT_AUDIENCE",
}
# Asymmetric algorithms only: a JWKS publishes public keys, and accepting HS*/none would let anyone
# who knows a public key (everyone) forge tokens.
JWT_ALGORITHMS = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512"})
CLOCK_SKEW_SECONDS = 30.0  # exp/nbf tolerance between the issuer's clock and ours
MAX_TOKENS = 10_000  # a tokens file longer than this is refused, not held in memory
VERIFIED_JWTS = 4096  # JWTs remembered as verified (32-byte digests), the oldest forgotten first


class AuthConfigError(ValueError):
    """Authentication settings that cannot be used; the message names the setting and the fix."""


@dataclass(frozen=True, slots=True)
class Denial:
    """Why a request is refused: the status to answer, a reason for the body, the challenge to send."""

    status: int  # 401, 403 or 503
    reason: str
    error: str | None = None  # RFC 6750 error code for WWW-Authenticate, e.g. "invalid_token"

    def challenge(self, realm: str) -> bytes | None:
        """The ``WWW-Authenticate`` value (401 and 403 only)."""
        if self.status != 401 and self.error is None:
            return None  # 503, or a 403 no credentials could fix
        value = f'Bearer realm="{_quoted(realm)}"'
        if self.error:
            value += f', error="{self.error}", error_description="{_quoted(self.reason)}"'
        return value.encode("latin-1", "replace")


@dataclass(frozen=True, slots=True)
class NeedKeys:
    """The token names a signing key the caller's JWKS does not hold: refresh it, then ask again."""

    kid: str | None


MISSING = Denial(401, "this revision requires Authorization: Bearer <token>")


def bearer(authorization: bytes | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header (scheme case-insensitive), else None."""
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(b" ")
    token = token.strip()
    if scheme.lower() != b"bearer" or not token or b" " in token:
        return None
    return token.decode("latin-1")


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).digest()


class TokenSet:
    """A set of secret tokens with a constant-time membership test (every entry is compared)."""

    __slots__ = ("_digests",)

    def __init__(self, tokens: Iterable[str]) -> None:
        self._digests = tuple({_digest(t) for t in tokens})

    def __len__(self) -> int:
        return len(self._digests)

    def __contains__(self, token: object) -> bool:
        if not isinstance(token, str):
            return False
        wanted = _digest(token)
        found = False
        for digest in self._digests:
            found |= hmac.compare_digest(digest, wanted)
        return found


def parse_tokens(text: str, source: str) -> TokenSet:
    """One token per line; blank lines and lines starting with ``#`` are skipped."""
    tokens = [line.strip() for line in text.splitlines()]
    tokens = [t for t in tokens if t and not t.startswith("#")]
    if not tokens:
        raise AuthConfigError(f"{source}: holds no token; write one token per line")
    if len(tokens) > MAX_TOKENS:
        raise AuthConfigError(f"{source}: {len(tokens)} tokens; at most {MAX_TOKENS} are allowed")
    for number, token in enumerate(tokens, 1):
        if any(c.isspace() for c in token) or not token.isprintable():
            raise AuthConfigError(f"{source}: token {number} contains whitespace or control characters")
    return TokenSet(tokens)


def check_admin(authorization: bytes | None, tokens: TokenSet | None) -> Denial | None:
    """None when ``Authorization`` carries the admin token; the refusal otherwise.

    ``tokens`` None means the process was given no admin token: state changes are refused with 403
    (a 401 challenge would invite retries that can never succeed).
    """
    if tokens is None:
        return Denial(
            403,
            "state-changing admin calls are disabled: no admin token was configured "
            f"(start with --admin-token-file FILE or {ADMIN_TOKEN_ENV})",
        )
    token = bearer(authorization)
    if token is None:
        return Denial(401, "admin call needs Authorization: Bearer <admin token>")
    if token not in tokens:
        return Denial(403, "admin token does not match", "invalid_token")
    return None


@dataclass(frozen=True, slots=True)
class AuthSpec:
    """A revision's data-path authentication: static bearer tokens, JWTs from a JWKS, or both."""

    bearer_tokens_file: str | None = None
    jwks_url: str | None = None
    jwt_issuer: str | None = None
    jwt_audience: str | None = None

    def __post_init__(self) -> None:
        names = {
            TOKENS_FILE: self.bearer_tokens_file, JWKS_URL: self.jwks_url,
            JWT_ISSUER: self.jwt_issuer, JWT_AUDIENCE: self.jwt_audience,
        }  # fmt: skip
        for name, value in names.items():
            if value is not None and (not isinstance(value, str) or not value.strip()):
                raise AuthConfigError(f"{name}={value!r}: must be a non-empty string")
        if self.bearer_tokens_file is None and self.jwks_url is None:
            raise AuthConfigError(f"authentication needs {TOKENS_FILE} or {JWKS_URL} (or both)")
        if self.jwks_url is not None:
            if not self.jwks_url.startswith(("http://", "https://")):
                raise AuthConfigError(f'{JWKS_URL}="{self.jwks_url}": must be an http:// or https:// URL')
            if self.jwt_issuer is None or self.jwt_audience is None:
                raise AuthConfigError(
                    f'{JWKS_URL}="{self.jwks_url}": also set {JWT_ISSUER} and {JWT_AUDIENCE} '
                    "(without them any token the key owner ever signed, for anyone, would pass)"
                )
        elif self.jwt_issuer is not None or self.jwt_audience is not None:
            raise AuthConfigError(f"{JWT_ISSUER} and {JWT_AUDIENCE} need {JWKS_URL}")

    @classmethod
    def from_annotations(cls, annotations: Mapping[str, str]) -> AuthSpec | None:
        """The ``kpa.dev/auth-*`` annotations of a revision; None when it has none."""
        ours = {k: v for k, v in annotations.items() if k.startswith(ANNOTATION_PREFIX)}
        for key, value in ours.items():
            if key not in ENV_OF_ANNOTATION:
                raise AuthConfigError(
                    f'annotation {key}="{value}": unknown; known: {", ".join(ENV_OF_ANNOTATION)}'
                )
        if not ours:
            return None
        return cls(ours.get(TOKENS_FILE), ours.get(JWKS_URL), ours.get(JWT_ISSUER), ours.get(JWT_AUDIENCE))

    @classmethod
    def from_json(cls, doc: Any, source: str) -> AuthSpec:
        """From the JSON form :meth:`to_json` writes (the activator's revisions file and admin API)."""
        names = [f.name for f in fields(cls)]
        if not isinstance(doc, dict) or not set(doc) <= set(names):
            raise AuthConfigError(f"{source}: must be an object with some of {', '.join(names)}")
        return cls(**doc)

    def to_json(self) -> dict[str, str]:
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}

    def annotations(self) -> dict[str, str]:
        values = (self.bearer_tokens_file, self.jwks_url, self.jwt_issuer, self.jwt_audience)
        return {k: v for k, v in zip(ENV_OF_ANNOTATION, values, strict=True) if v is not None}

    def env(self) -> dict[str, str]:
        """The queue-proxy environment that carries this spec to a pod."""
        return {ENV_OF_ANNOTATION[k]: v for k, v in self.annotations().items()}


def verify_jwt(
    token: str, keys: Mapping[str, Any] | None, spec: AuthSpec, now: float, *, refreshed: bool
) -> Denial | NeedKeys | None:
    """Check a JWT's signature against ``keys`` (kid -> ``jwt.PyJWK``) and its claims at ``now``.

    ``refreshed`` says the caller just fetched the JWKS: an unknown ``kid`` is then final (401)
    instead of a request to refresh. ``keys`` None means no JWKS could be fetched yet.
    """
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError as exc:
        return Denial(401, f"token is not a JWT: {exc}", "invalid_token")
    alg, kid = header.get("alg"), header.get("kid")
    if not isinstance(alg, str) or alg not in JWT_ALGORITHMS:  # a JSON list or object is unhashable
        return Denial(
            401, f"JWT alg={alg!r} not accepted; use one of {sorted(JWT_ALGORITHMS)}", "invalid_token"
        )
    key = None
    if keys is not None:
        key = keys.get(kid) if kid is not None else (next(iter(keys.values())) if len(keys) == 1 else None)
    if key is None:
        if not refreshed:
            return NeedKeys(kid)
        return Denial(401, f"JWT signing key kid={kid!r} is not in the JWKS", "invalid_token")
    try:
        claims = jwt.decode(
            token,
            key.key,
            algorithms=[alg],
            audience=spec.jwt_audience,
            issuer=spec.jwt_issuer,
            options={"verify_exp": False, "verify_nbf": False, "verify_iat": False, "require": ["exp"]},
        )
    except jwt.InvalidAudienceError:
        return Denial(403, f"JWT is not for audience {spec.jwt_audience!r}", "insufficient_scope")
    except jwt.InvalidIssuerError:
        return Denial(401, f"JWT is not from issuer {spec.jwt_issuer!r}", "invalid_token")
    except jwt.MissingRequiredClaimError as exc:
        return Denial(401, f"JWT is missing the {exc.claim!r} claim", "invalid_token")
    except (jwt.PyJWTError, ValueError, TypeError) as exc:
        return Denial(401, f"JWT rejected: {exc}", "invalid_token")
    return _check_times(claims, now)


class VerifiedJwts:
    """JWTs that passed :func:`verify_jwt`, remembered until they expire, so a client that sends the
    same token on every request pays the signature check (~150 µs for RS256) once.

    Bounded to ``size`` entries; the caller clears it whenever the signing keys change, so a key
    removed from the JWKS stops vouching for its tokens at the next refresh.
    """

    __slots__ = ("_expiry", "size")

    def __init__(self, size: int = VERIFIED_JWTS) -> None:
        self.size = size
        self._expiry: dict[bytes, float] = {}

    def __len__(self) -> int:
        return len(self._expiry)

    def passes(self, token: str, now: float) -> bool:
        expiry = self._expiry.get(_digest(token))
        return expiry is not None and now <= expiry + CLOCK_SKEW_SECONDS

    def remember(self, token: str) -> None:
        """Call only for a token that just passed ``verify_jwt``; it has a valid numeric ``exp``."""
        claims = jwt.decode(token, options={"verify_signature": False})
        if len(self._expiry) >= self.size:
            del self._expiry[next(iter(self._expiry))]
        self._expiry[_digest(token)] = float(claims["exp"])

    def clear(self) -> None:
        self._expiry.clear()


def _check_times(claims: Mapping[str, Any], now: float) -> Denial | None:
    for name in ("exp", "nbf"):
        value = claims.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            return Denial(401, f"JWT {name}={value!r}: must be a number of seconds", "invalid_token")
        if name == "exp" and now > value + CLOCK_SKEW_SECONDS:
            return Denial(401, f"JWT expired {now - value:.0f}s ago", "invalid_token")
        if name == "nbf" and now + CLOCK_SKEW_SECONDS < value:
            return Denial(401, f"JWT not valid for another {value - now:.0f}s", "invalid_token")
    return None


def verify_request(
    authorization: bytes | None,
    spec: AuthSpec,
    tokens: TokenSet | None,
    keys: Mapping[str, Any] | None,
    now: float,
    *,
    refreshed: bool,
) -> Denial | NeedKeys | None:
    """The data-path verdict for one request: a static token, else a JWT (when configured)."""
    token = bearer(authorization)
    if token is None:
        return (
            MISSING
            if authorization is None
            else Denial(401, "Authorization must be 'Bearer <token>'", "invalid_request")
        )
    if tokens is not None and token in tokens:
        return None
    if spec.jwks_url is None or token.count(".") != 2:
        return Denial(401, "bearer token is not valid for this revision", "invalid_token")
    return verify_jwt(token, keys, spec, now, refreshed=refreshed)


def _quoted(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', "'")
