"""The dev fakes' Litestar app: a local IMS, a fake InStore auth API and an OTLP trace receiver in one process.

**Development and tests only.** The local IMS mints a signed colleague token for *anyone*
who asks (``POST /ims/token`` has no authentication at all), and the fake InStore auth API
hands out random strings as access tokens. Never expose this process beyond 127.0.0.1 and
never point a production gateway at it.

Local IMS (the colleague's identity system):

- ``GET /ims/.well-known/jwks.json`` — the public half of an RSA-2048 key made at start-up
  (in memory only; a restart makes a new key, so tokens minted before it stop verifying),
  as a JWK Set ``{"keys": [{"kty", "n", "e", "kid", "alg": "RS256", "use": "sig"}]}``;
  ``kid`` is the key's RFC 7638 thumbprint.
- ``GET /ims/.well-known/openid-configuration`` — ``{"issuer", "jwks_uri", ...}``.
- ``POST /ims/token`` ``{"userId", "name"?, "ttlSeconds"?, "audience"?, "notBeforeSeconds"?}``
  → ``{"idToken": "<JWT>"}``, RS256 with ``iss, aud, sub, name, iat, nbf, exp``. A negative
  ``ttlSeconds`` mints an expired token, a positive ``notBeforeSeconds`` one not yet valid.

Fake InStore auth API (assumed shape: the real call is not public):

- ``POST /instore-auth/v1/user-token`` ``{"tenantId", "userId", "connectionKey", "scopes"?}``
  → 200 ``{"access_token", "token_type": "Bearer", "expires_in", "scope"}``, or 401 when
  the tenant id or connection key is not the configured one (compared in constant time).
- ``POST /_control`` ``{"mode": "ok"|"down"|"slow"|"error", "delaySeconds"?}`` switches how
  that endpoint answers (down: 503, error: 500, slow: waits ``delaySeconds`` first);
  ``GET /_control`` → ``{"mode", "delaySeconds", "tokensIssued", "lastRequest"}``.

OTLP/HTTP trace receiver (:mod:`instore_devfakes.otlp`): ``POST /v1/traces`` keeps the last
``DEVFAKES_OTLP_MAX_SPANS`` spans in memory; ``GET /otlp/spans?traceId=``, ``GET /otlp/traces``,
``DELETE /otlp/spans`` and the HTML page ``GET /otlp`` show them. No authentication either:
``OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:8090`` on a local service only.

Payment extensions (:mod:`instore_devfakes.payments`): a simulated payment provider under
``/provider`` and InStore's statusUrl/callbackUrl under ``/instore-sim``.

``GET /healthz`` answers 200 while the process serves.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass
from typing import Any, Literal

import jwt
import msgspec
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm
from litestar import Litestar, Request, Response, get, post
from litestar.exceptions import ValidationException
from litestar.params import JSONBody
from litestar.status_codes import HTTP_200_OK

from instore_devfakes.host_page import host_router
from instore_devfakes.otlp import SpanStore, otlp_router
from instore_devfakes.payments import instore_side_router, provider_router
from instore_devfakes.settings import DevFakesSettings
from instore_shared.logging import get_logger

log = get_logger(__name__)

DEFAULT_ID_TOKEN_TTL_SECONDS = 900
DEFAULT_SLOW_DELAY_SECONDS = 5.0

Mode = Literal["ok", "down", "slow", "error"]


# -- request bodies -------------------------------------------------------------------
class MintRequest(msgspec.Struct, rename="camel", forbid_unknown_fields=True):
    """Body of ``POST /ims/token``."""

    user_id: str
    name: str | None = None
    ttl_seconds: int = DEFAULT_ID_TOKEN_TTL_SECONDS
    audience: str | None = None
    not_before_seconds: int = 0


class UserTokenRequest(msgspec.Struct, rename="camel"):
    """Body of ``POST /instore-auth/v1/user-token`` (assumed shape)."""

    tenant_id: str
    user_id: str
    connection_key: str
    scopes: list[str] | None = None


class ControlRequest(msgspec.Struct, rename="camel", forbid_unknown_fields=True):
    """Body of ``POST /_control``."""

    mode: Mode
    delay_seconds: float | None = None


# -- the signing key ------------------------------------------------------------------
def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


@dataclass(frozen=True)
class SigningKey:
    """An RSA key pair made at start-up; ``jwk`` is the public half with ``kid``, ``alg``, ``use``."""

    private_key: rsa.RSAPrivateKey
    kid: str
    jwk: dict[str, str]

    @classmethod
    def generate(cls) -> SigningKey:
        """A fresh RSA-2048 key whose ``kid`` is its RFC 7638 JWK thumbprint (SHA-256)."""
        private_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        public = RSAAlgorithm.to_jwk(private_key.public_key(), as_dict=True)
        canonical = json.dumps({"e": public["e"], "kty": "RSA", "n": public["n"]}, separators=(",", ":"), sort_keys=True)
        kid = _b64url(hashlib.sha256(canonical.encode()).digest())
        jwk = {"kty": "RSA", "n": public["n"], "e": public["e"], "kid": kid, "alg": "RS256", "use": "sig"}
        return cls(private_key, kid, jwk)


@dataclass
class FakeState:
    """Mutable state of one fakes process: the IMS key and the InStore auth API's knobs."""

    key: SigningKey
    mode: Mode = "ok"
    delay_seconds: float = DEFAULT_SLOW_DELAY_SECONDS
    tokens_issued: int = 0
    last_request: dict[str, Any] | None = None


def _error(status: int, error: str, description: str) -> Response[dict[str, str]]:
    return Response({"error": error, "error_description": description}, status_code=status)


def _same(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode(), expected.encode())


def create_app(settings: DevFakesSettings, key: SigningKey | None = None, spans: SpanStore | None = None) -> Litestar:
    """The dev fakes app; ``key`` defaults to a fresh RSA-2048 key, ``spans`` to an empty store (tests may pass either)."""
    state = FakeState(key=key or SigningKey.generate())
    spans = spans if spans is not None else SpanStore(settings.otlp_max_spans)
    connection_key = settings.connection_key.get_secret_value()

    # -- local IMS --------------------------------------------------------------------
    @get("/ims/.well-known/jwks.json", sync_to_thread=False)
    def jwks() -> dict[str, Any]:
        """The IMS's public signing key as a JWK Set."""
        return {"keys": [state.key.jwk]}

    @get("/ims/.well-known/openid-configuration", sync_to_thread=False)
    def openid_configuration(request: Request[Any, Any, Any]) -> dict[str, Any]:
        """A minimal OpenID Provider configuration; URLs point at this server as it was reached."""
        base = str(request.base_url).rstrip("/")
        return {
            "issuer": settings.issuer,
            "jwks_uri": f"{base}/ims/.well-known/jwks.json",
            "token_endpoint": f"{base}/ims/token",
            "id_token_signing_alg_values_supported": ["RS256"],
            "subject_types_supported": ["public"],
            "response_types_supported": ["id_token"],
        }

    @post("/ims/token", status_code=HTTP_200_OK, sync_to_thread=False)
    def mint(data: JSONBody[MintRequest]) -> dict[str, str]:
        """Mint a colleague token for anyone who asks (development only)."""
        now = int(time.time())
        claims = {
            "iss": settings.issuer,
            "aud": data.audience or settings.audience,
            "sub": data.user_id,
            "name": data.name or data.user_id,
            "iat": now,
            "nbf": now + data.not_before_seconds,
            "exp": now + data.ttl_seconds,
        }
        token = jwt.encode(claims, state.key.private_key, algorithm="RS256", headers={"kid": state.key.kid})
        log.info("colleague token minted", sub=data.user_id, aud=claims["aud"], exp=claims["exp"])
        return {"idToken": token}

    # -- fake InStore auth API --------------------------------------------------------
    @post("/instore-auth/v1/user-token", status_code=HTTP_200_OK)
    async def user_token(data: JSONBody[UserTokenRequest]) -> Response[dict[str, Any]]:
        """Turn tenant id + connection key + user id into a (random) user access token."""
        mode, delay = state.mode, state.delay_seconds
        if mode == "down":
            return _error(503, "temporarily_unavailable", "the fake InStore auth API is down (control mode 'down')")
        if mode == "error":
            return _error(500, "server_error", "the fake InStore auth API failed (control mode 'error')")
        if mode == "slow":
            await asyncio.sleep(delay)
        # both compared, always: no early exit that tells which one was wrong
        tenant_ok = _same(data.tenant_id, settings.tenant_id)
        key_ok = _same(data.connection_key, connection_key)
        if not (tenant_ok & key_ok):
            log.warning("user token refused", tenant_id=data.tenant_id, user_id=data.user_id)
            return _error(401, "invalid_client", "unknown tenant id or connection key")
        scope = " ".join(data.scopes or [])
        state.tokens_issued += 1  # one event loop, no await in between: no lock needed
        state.last_request = {"tenantId": data.tenant_id, "userId": data.user_id, "scopes": data.scopes}
        log.info("user token issued", tenant_id=data.tenant_id, user_id=data.user_id)
        return Response(
            {
                "access_token": secrets.token_urlsafe(32),
                "token_type": "Bearer",
                "expires_in": settings.token_ttl_seconds,
                "scope": scope,
            },
            status_code=200,
            headers={"Cache-Control": "no-store"},
        )

    @post("/_control", status_code=HTTP_200_OK)
    async def set_control(data: JSONBody[ControlRequest]) -> dict[str, Any]:
        """Switch how the fake InStore auth API answers."""
        if data.delay_seconds is not None and data.delay_seconds < 0:
            raise ValidationException("delaySeconds must not be negative")
        state.mode = data.mode
        if data.delay_seconds is not None:
            state.delay_seconds = data.delay_seconds
        log.info("control mode set", mode=state.mode, delay_seconds=state.delay_seconds)
        return _control_view(state)

    @get("/_control", sync_to_thread=False)
    def get_control() -> dict[str, Any]:
        """The current mode and how many user access tokens were issued."""
        return _control_view(state)

    @get("/healthz", sync_to_thread=False)
    def healthz() -> dict[str, str]:
        """200 while the process serves."""
        return {"status": "ok"}

    return Litestar(
        route_handlers=[
            jwks,
            openid_configuration,
            mint,
            user_token,
            set_control,
            get_control,
            healthz,
            otlp_router(spans, settings.otlp_max_body_bytes),
            provider_router(),
            instore_side_router(),
            host_router(settings),
        ],
        openapi_config=None,
        logging_config=None,  # logging is structlog's, configured in __main__
    )


def _control_view(state: FakeState) -> dict[str, Any]:
    return {
        "mode": state.mode,
        "delaySeconds": state.delay_seconds,
        "tokensIssued": state.tokens_issued,
        "lastRequest": state.last_request,
    }
