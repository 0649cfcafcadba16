"""IMS token verification: every way a colleague token can be wrong is refused."""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from instore_gateway.identity import (
    IdentityProviderUnavailable,
    ImsVerifier,
    InvalidIdentity,
)

ISS, AUD = "https://ims.example/", "instore-integration"


def _key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


KEY, OTHER_KEY = _key(), _key()


def _jwks(*keys: tuple[str, rsa.RSAPrivateKey]) -> dict[str, Any]:
    out = []
    for kid, key in keys:
        jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
        jwk.update(kid=kid, alg="RS256", use="sig")
        out.append(jwk)
    return {"keys": out}


class Ims:
    """A JWKS endpoint that counts fetches and can be switched off or rotated."""

    def __init__(self) -> None:
        self.jwks = _jwks(("k1", KEY))
        self.fetches = 0
        self.down = False

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.fetches += 1
        if self.down:
            return httpx.Response(503)
        return httpx.Response(200, json=self.jwks)


def _verifier(ims: Ims, **kw: Any) -> ImsVerifier:
    return ImsVerifier("https://ims.example/jwks", ISS, AUD, ["RS256"], transport=httpx.MockTransport(ims), **kw)


def _token(key: rsa.RSAPrivateKey = KEY, kid: str = "k1", alg: str = "RS256", **claims: Any) -> str:
    now = int(time.time())
    body = {"iss": ISS, "aud": AUD, "sub": "colleague-42", "name": "Ada", "iat": now, "nbf": now, "exp": now + 600}
    body.update(claims)
    body = {k: v for k, v in body.items() if v is not None}
    return jwt.encode(body, key, algorithm=alg, headers={"kid": kid})


async def test_a_valid_token_names_the_colleague() -> None:
    colleague = await _verifier(Ims()).verify(_token())
    assert (colleague.user_id, colleague.name) == ("colleague-42", "Ada")


@pytest.mark.parametrize(
    ("claims", "reason"),
    [
        # times relative to when the test runs, not to collection (a long suite made the "future" pass)
        ({"exp": lambda now: now - 120}, "expired"),
        ({"nbf": lambda now: now + 600}, "not-yet-valid"),
        ({"aud": "someone-else"}, "wrong-audience"),
        ({"iss": "https://evil.example/"}, "wrong-issuer"),
        ({"sub": None}, "invalid"),
        ({"sub": "x" * 257}, "bad-subject"),
        ({"sub": "  u  "}, "bad-subject"),
        ({"sub": "a\nb"}, "bad-subject"),
        ({"exp": None}, "invalid"),
    ],
)
async def test_wrong_claims_are_refused(claims: dict[str, Any], reason: str) -> None:
    now = int(time.time())
    claims = {k: v(now) if callable(v) else v for k, v in claims.items()}
    with pytest.raises(InvalidIdentity) as info:
        await _verifier(Ims()).verify(_token(**claims))
    assert info.value.reason == reason


async def test_a_token_signed_with_another_key_is_refused() -> None:
    with pytest.raises(InvalidIdentity) as info:
        await _verifier(Ims()).verify(_token(key=OTHER_KEY))
    assert info.value.reason == "bad-signature"


def _unsigned(alg: str) -> str:
    def b64(obj: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()

    now = int(time.time())
    return f"{b64({'alg': alg, 'kid': 'k1', 'typ': 'JWT'})}.{b64({'iss': ISS, 'aud': AUD, 'sub': 'x', 'exp': now + 60})}."


async def test_alg_none_and_hmac_with_the_public_key_are_refused() -> None:
    verifier = _verifier(Ims())
    for token in (_unsigned("none"), _unsigned("None")):
        with pytest.raises(InvalidIdentity) as info:
            await verifier.verify(token)
        assert info.value.reason == "algorithm-not-allowed"
    # the classic confusion: HS256 "signed" with the RSA public key's bytes as the secret
    import hashlib
    import hmac

    from cryptography.hazmat.primitives import serialization

    public_pem = KEY.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    signing_input = _unsigned("HS256").rstrip(".")
    signature = base64.urlsafe_b64encode(hmac.new(public_pem, signing_input.encode(), hashlib.sha256).digest())
    with pytest.raises(InvalidIdentity) as info:
        await verifier.verify(signing_input + "." + signature.rstrip(b"=").decode())
    assert info.value.reason == "algorithm-not-allowed"


def test_symmetric_or_none_algorithms_cannot_be_configured() -> None:
    for algs in (["HS256"], ["none"], ["RS256", "HS512"], []):
        with pytest.raises(ValueError):
            ImsVerifier("https://ims.example/jwks", ISS, AUD, algs)


async def test_garbage_is_malformed() -> None:
    for token in ("", "abc", "a.b.c", "Bearer x"):
        with pytest.raises(InvalidIdentity):
            await _verifier(Ims()).verify(token)


async def test_jwks_is_cached_and_refetched_for_a_new_kid_at_most_every_interval() -> None:
    ims = Ims()
    verifier = _verifier(ims, refetch_interval=0)
    for _ in range(5):
        await verifier.verify(_token())
    assert ims.fetches == 1
    ims.jwks = _jwks(("k1", KEY), ("k2", OTHER_KEY))  # the IMS rotates in a new key
    assert (await verifier.verify(_token(key=OTHER_KEY, kid="k2"))).user_id == "colleague-42"
    assert ims.fetches == 2
    throttled = _verifier(ims, refetch_interval=3600)
    await throttled.verify(_token())
    with pytest.raises(InvalidIdentity) as info:
        await throttled.verify(_token(kid="k9"))
    assert info.value.reason == "unknown-key" and ims.fetches == 3


async def test_ims_down_before_any_key_is_a_provider_error() -> None:
    ims = Ims()
    ims.down = True
    with pytest.raises(IdentityProviderUnavailable):
        await _verifier(ims).verify(_token())


async def test_ims_down_is_asked_once_per_interval_and_old_keys_expire() -> None:
    ims = Ims()
    now = [0.0]
    verifier = _verifier(ims, cache_seconds=300, refetch_interval=30, max_stale_seconds=3600, clock=lambda: now[0])
    await verifier.verify(_token())
    ims.down = True
    now[0] = 400.0  # cache stale, IMS down: one fetch, then the cached key serves
    for _ in range(10):
        await verifier.verify(_token())
    assert ims.fetches == 2
    now[0] = 3700.0  # keys older than max_stale: refused
    with pytest.raises(IdentityProviderUnavailable):
        await verifier.verify(_token())
