"""The pure authentication core: bearer parsing, constant-time token sets, admin checks, the
per-revision settings, and JWT verdicts at a given ``now`` against given keys (no clock, no I/O)."""

from __future__ import annotations

import base64
import json
import re
import time

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from hypothesis import given, settings
from hypothesis import strategies as st
from jwt.algorithms import RSAAlgorithm

from queueproxy.auth import (
    AuthConfigError,
    AuthSpec,
    Denial,
    NeedKeys,
    TokenSet,
    VerifiedJwts,
    bearer,
    check_admin,
    parse_tokens,
    verify_request,
)

NOW = 1_900_000_000.0
SPEC = AuthSpec(jwks_url="http://127.0.0.1:1/jwks", jwt_issuer="https://iss", jwt_audience="api")
KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
OTHER = rsa.generate_private_key(public_exponent=65537, key_size=2048)
HMAC_SECRET = "a-shared-secret-that-is-32-bytes-long!"
KEYS = {"k1": jwt.PyJWK({**RSAAlgorithm.to_jwk(KEY.public_key(), as_dict=True), "kid": "k1"})}


def token(private=KEY, kid="k1", alg="RS256", **claims) -> str:
    body = {"iss": "https://iss", "aud": "api", "exp": NOW + 60, **claims}
    return jwt.encode({k: v for k, v in body.items() if v is not None}, private, algorithm=alg,
                      headers={"kid": kid})  # fmt: skip


def verdict(tok: str, *, keys=KEYS, refreshed=False, now=NOW, tokens=None, spec=SPEC):
    return verify_request(b"Bearer " + tok.encode(), spec, tokens, keys, now, refreshed=refreshed)


@pytest.mark.parametrize(
    ("header", "token"),
    [(None, None), (b"", None), (b"Bearer abc", "abc"), (b"bearer  abc ", "abc"), (b"Basic abc", None),
     (b"Bearer", None), (b"Bearer a b", None)],
    ids=["no-header", "empty", "bearer", "lowercase-scheme-extra-spaces", "basic-scheme",
         "bearer-without-token", "two-words"],
)  # fmt: skip
def test_bearer_reads_only_the_bearer_scheme(header, token):
    assert bearer(header) == token


def test_token_set_matches_exactly_whatever_the_length():
    tokens = TokenSet(["s3cret", "other-token"])
    assert "s3cret" in tokens and "other-token" in tokens
    assert "s3cre" not in tokens and "s3cret2" not in tokens and "" not in tokens and None not in tokens


def test_tokens_file_skips_comments_and_refuses_an_empty_one():
    assert len(parse_tokens("# rotate monthly\nabc\n\n  def  \n", "f")) == 2
    with pytest.raises(AuthConfigError, match="f: holds no token"):
        parse_tokens("# nothing\n\n", "f")


def test_admin_check_401_without_403_with_a_wrong_token_and_403_when_none_is_configured():
    tokens = TokenSet(["t0k"])
    assert check_admin(b"Bearer t0k", tokens) is None
    missing = check_admin(None, tokens)
    assert missing.status == 401 and missing.challenge("kpa") == b'Bearer realm="kpa"'
    wrong = check_admin(b"Bearer nope", tokens)
    assert wrong.status == 403
    unconfigured = check_admin(b"Bearer t0k", None)
    assert unconfigured.status == 403 and "KPA_ADMIN_TOKEN" in unconfigured.reason


def test_spec_from_annotations_names_the_annotation_and_the_fix():
    assert AuthSpec.from_annotations({"autoscaling.knative.dev/target": "5"}) is None
    spec = AuthSpec.from_annotations({"kpa.dev/auth-bearer-tokens-file": "tokens.txt"})
    assert spec.env() == {"KPA_AUTH_BEARER_TOKENS_FILE": "tokens.txt"}
    with pytest.raises(AuthConfigError, match=re.escape('kpa.dev/auth-jwks-url="ftp://x": must be an http')):
        AuthSpec.from_annotations({"kpa.dev/auth-jwks-url": "ftp://x"})
    with pytest.raises(
        AuthConfigError, match=re.escape("also set kpa.dev/auth-jwt-issuer and kpa.dev/auth-jwt-audience")
    ):
        AuthSpec.from_annotations({"kpa.dev/auth-jwks-url": "https://x/jwks"})
    with pytest.raises(
        AuthConfigError, match=re.escape('annotation kpa.dev/auth-tokens="x": unknown; known: ')
    ):
        AuthSpec.from_annotations({"kpa.dev/auth-tokens": "x"})


def test_a_valid_jwt_passes():
    assert verdict(token()) is None


@pytest.mark.parametrize(
    ("tok", "status", "words"),
    [
        (token(exp=NOW - 3600), 401, "expired"),
        (token(nbf=NOW + 3600), 401, "not valid for another"),
        (token(iss="https://evil"), 401, "issuer"),
        (token(aud="other-api"), 403, "audience"),
        (token(private=OTHER), 401, "Signature verification failed"),
        (token(exp=None), 401, "'exp' claim"),
        (token(alg="HS256", private=HMAC_SECRET), 401, "alg='HS256' not accepted"),
        ("not.a.jwt", 401, "not a JWT"),
    ],
    ids=["expired", "not-yet-valid", "wrong-issuer", "wrong-audience", "bad-signature", "no-exp", "hmac-alg",
         "not-a-jwt"],
)  # fmt: skip
def test_a_bad_jwt_is_refused_with_the_reason(tok, status, words):
    denial = verdict(tok)
    assert isinstance(denial, Denial) and denial.status == status and words in denial.reason
    assert denial.challenge("hello").startswith(b'Bearer realm="hello", error="')


def test_an_unknown_kid_asks_for_fresh_keys_then_is_refused():
    assert verdict(token(kid="k2")) == NeedKeys("k2")
    assert verdict(token(), keys=None) == NeedKeys("k1")
    denial = verdict(token(kid="k2"), refreshed=True)
    assert denial.status == 401 and "kid='k2'" in denial.reason


def test_static_tokens_and_jwts_together():
    spec = AuthSpec(
        bearer_tokens_file="t", jwks_url="http://h/j", jwt_issuer="https://iss", jwt_audience="api"
    )
    tokens = TokenSet(["static-1"])
    assert verdict("static-1", tokens=tokens, spec=spec) is None
    assert verdict(token(), tokens=tokens, spec=spec) is None
    assert verdict("static-2", tokens=tokens, spec=spec).status == 401
    only_static = AuthSpec(bearer_tokens_file="t")
    assert (
        verdict(token(), tokens=tokens, spec=only_static).reason
        == "bearer token is not valid for this revision"
    )
    missing = verify_request(None, only_static, tokens, None, NOW, refreshed=False)
    assert missing.status == 401 and missing.error is None


def test_the_verdict_depends_on_now_not_on_the_clock():
    tok = token(exp=time.time() - 3600)  # long expired by the wall clock
    assert verdict(tok, now=time.time() - 7200) is None


def test_verified_jwts_pass_until_they_expire_and_the_cache_is_bounded():
    verified = VerifiedJwts(size=2)
    first, second, third = (token(sub=str(i)) for i in range(3))
    verified.remember(first)
    assert verified.passes(first, NOW) and verified.passes(first, NOW + 60 + 30)
    assert not verified.passes(first, NOW + 60 + 31)  # exp + the allowed clock skew
    assert not verified.passes(second, NOW)
    verified.remember(second)
    verified.remember(third)
    assert len(verified) == 2 and not verified.passes(first, NOW)  # the oldest went first
    verified.clear()
    assert not verified.passes(third, NOW)


HEADERS = (
    st.binary(max_size=300)
    | st.builds(lambda s: b"Bearer " + s, st.binary(max_size=300))
    | st.builds(lambda a, b, c: b"Bearer " + b".".join((a, b, c)), *[st.binary(max_size=60)] * 3)
)


@settings(max_examples=300, deadline=None)
@given(HEADERS)
def test_any_authorization_header_gets_a_verdict_never_an_exception(header):
    spec = AuthSpec(
        bearer_tokens_file="t", jwks_url="http://h/j", jwt_issuer="https://iss", jwt_audience="api"
    )
    result = verify_request(header, spec, TokenSet(["static-1"]), KEYS, NOW, refreshed=True)
    assert isinstance(result, Denial) and result.status == 401
    assert result.challenge("hello").startswith(b'Bearer realm="hello"')


def _segment(doc) -> str:
    return base64.urlsafe_b64encode(json.dumps(doc).encode()).rstrip(b"=").decode()


@pytest.mark.parametrize(
    "header",
    [{"alg": ["RS256"], "kid": "k1"}, {"alg": {"x": 1}}, {"alg": None}],
    ids=["alg-a-list", "alg-an-object", "alg-null"],
)
def test_a_jwt_header_with_a_non_string_alg_is_refused_not_a_crash(header):
    forged = f"{_segment(header)}.{_segment({'exp': NOW + 60})}.c2ln"
    denial = verdict(forged)
    assert denial.status == 401 and "not accepted" in denial.reason
