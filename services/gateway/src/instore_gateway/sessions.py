"""Colleague sessions: ``POST /sessions`` for the host app and InStore's token callback.

Flow (https://docs.commercetools.com/instore/ — the user access token never travels
through the browser; shapes assumed — see ../shared/reference/instore-contract.md §2–3):

1. The host app sends ``Authorization: Bearer <IMS token>`` and
   ``{"locationId", "workstationId"}``. The IMS token is verified (:mod:`identity`).
2. The gateway asks InStore for the colleague's user access token (:mod:`instore_auth`),
   draws a user key (256 bits from ``secrets``, URL-safe, 43 characters), keeps the token
   under it in the vault until the token expires, publishes a ``session-started`` audit
   event (no secrets), and answers ``201 {"userAccessToken", "userKey", "expiresAt"}``.
3. InStore calls ``GET /instore/callbacks/tokens/{userKey}`` with the Callback API Key and
   gets ``{"access_token", "token_type": "Bearer", "expires_in"}`` (RFC 6749 §5.1).

Nothing else — tenant id, connection key, commerce tokens — ever reaches the client.
"""

from __future__ import annotations

import re
import secrets
import time
import uuid
from datetime import UTC, datetime
from typing import Annotated, Any, Protocol

import msgspec
from litestar import Request, Response, get, post
from litestar.connection import ASGIConnection
from litestar.datastructures import State
from litestar.handlers.base import BaseRouteHandler
from litestar.params import JSONBody, Parameter

from instore_gateway.content_type import json_body_guard
from instore_gateway.identity import (
    IdentityProviderUnavailable,
    ImsVerifier,
    InvalidIdentity,
)
from instore_gateway.instore_auth import (
    InStoreAuthClient,
    InStoreAuthTimeout,
    InStoreAuthUnavailable,
)
from instore_gateway.problems import ProblemError, problem_spec
from instore_gateway.vault import StoredToken, TokenVault, VaultUnavailable
from instore_shared.contract import sessions as contract
from instore_shared.kafka.rpc import BrokerUnavailable
from instore_shared.kafka.topics import SESSION_EVENTS
from instore_shared.logging import get_logger

log = get_logger(__name__)

USER_KEY = re.compile(r"[A-Za-z0-9_-]{43}")
"""A user key as :func:`new_user_key` draws them: 32 random bytes, URL-safe base64, no padding."""

END_OF_STRING = r"(?![\s\S])"
r"""The end of the string in Python's and in ECMA-262's (JSON Schema's) regexes alike: ``$`` would let a
trailing newline through in Python, and ``\Z`` is no anchor in ECMA-262 (it would read as the letter Z)."""

USER_KEY_SCHEMA = {"pattern": f"^{USER_KEY.pattern}{END_OF_STRING}", "minLength": 43, "maxLength": 43}
"""The rule of :data:`USER_KEY` for the OpenAPI document."""

_ID = rf"^[A-Za-z0-9._:-]{{1,128}}{END_OF_STRING}"
PROBLEM_JSON = "application/problem+json"


def new_user_key() -> str:
    """A fresh user key: 256 bits from the OS CSPRNG, URL-safe (43 characters of ``A-Za-z0-9_-``)."""
    return secrets.token_urlsafe(32)


class SessionRequest(msgspec.Struct, kw_only=True, rename="camel"):
    """Body of ``POST /sessions``: where the colleague works (InStore location and workstation ids)."""

    location_id: Annotated[str, msgspec.Meta(pattern=_ID, description="InStore location id")]
    workstation_id: Annotated[str, msgspec.Meta(pattern=_ID, description="InStore workstation id")]


class SessionResponse(msgspec.Struct, kw_only=True, rename="camel"):
    """Answer of ``POST /sessions``: the user access token for the host app, its user key, its expiry (RFC 3339)."""

    user_access_token: str
    user_key: str
    expires_at: str


class TokenResponse(msgspec.Struct, kw_only=True):
    """Answer of the token callback (OAuth 2.0 shape, RFC 6749 §5.1); ``expires_in`` in seconds."""

    access_token: str
    expires_in: int
    token_type: str = "Bearer"


class EventPublisher(Protocol):
    """Publishes one event to Kafka (``RequestReplyClient.publish``). Raises ``BrokerUnavailable``."""

    async def publish(self, topic: str, key: str, value: bytes, *, message_type: str, timeout_s: float) -> None:
        """Publish ``value`` keyed by ``key``; ``timeout_s``: seconds for Kafka's acknowledgement."""
        ...


def _rfc3339(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


async def colleague_guard(connection: ASGIConnection[Any, Any, Any, Any], _handler: BaseRouteHandler) -> None:
    """Let through only a request with a valid IMS bearer token; the colleague goes to ``scope["state"]``.

    Raises :class:`ProblemError` 401 (invalid token) or 502 (the IMS's keys cannot be fetched).
    """
    header = connection.headers.getall("authorization", [])
    scheme, _, token = header[0].partition(" ") if len(header) == 1 else ("", "", "")
    if scheme.lower() != "bearer" or not token.strip():
        raise ProblemError(
            401,
            "unauthorized",
            "Unauthorized",
            "an IMS bearer token is required",
            headers={"WWW-Authenticate": 'Bearer realm="instore-integration"'},
        )
    verifier: ImsVerifier = connection.app.state.ims
    try:
        colleague = await verifier.verify(token.strip())
    except InvalidIdentity as exc:
        log.info("session.refused", reason=exc.reason)
        # The reason code (expired, wrong-audience, ...) helps the host app's developers and
        # tells an attacker nothing the token's own claims don't; the token is never echoed.
        challenge = f'Bearer error="invalid_token", error_description="{exc.reason}"'
        raise ProblemError(
            401,
            "unauthorized",
            "Unauthorized",
            f"the IMS token is not valid: {exc.reason}",
            reason=exc.reason,
            headers={"WWW-Authenticate": challenge},
        ) from exc
    except IdentityProviderUnavailable as exc:
        raise ProblemError(
            502,
            "identity-provider-unavailable",
            "Identity provider unavailable",
            "the identity system's keys could not be fetched",
        ) from exc
    connection.scope["state"]["colleague"] = colleague


@post(
    "/sessions",
    guards=[colleague_guard, json_body_guard],
    security=[{"ImsBearer": []}],
    status_code=201,
    summary="Open a colleague session (host app)",
    description="Needs `Authorization: Bearer <IMS token>`. Answers the InStore user access token and "
    "the user key InStore will present to the token callback.",
    tags=["Host app"],
    operation_id="createSession",
    responses={
        400: problem_spec("body is not {locationId, workstationId}"),
        401: problem_spec("missing or invalid IMS token"),
        415: problem_spec("Content-Type is not application/json (or a +json type); Accept-Post names it"),
        429: problem_spec("too many sessions from this client"),
        502: problem_spec("the IMS or InStore's auth API failed"),
        503: problem_spec("token vault or Kafka unavailable"),
        504: problem_spec("InStore's auth API timed out"),
    },
)
async def create_session(request: Request[Any, Any, State], data: JSONBody[SessionRequest]) -> SessionResponse:
    """``POST /sessions`` (assumed — see docs)."""
    state = request.app.state
    colleague = request.scope["state"]["colleague"]
    auth: InStoreAuthClient = state.instore_auth
    try:
        issued = await auth.user_access_token(colleague.user_id, data.location_id, data.workstation_id)
    except InStoreAuthTimeout as exc:
        raise ProblemError(
            504, "instore-auth-timeout", "InStore auth timed out", "InStore did not issue the user access token in time"
        ) from exc
    except InStoreAuthUnavailable as exc:
        raise ProblemError(
            502, "instore-auth-unavailable", "InStore auth unavailable", "InStore did not issue a user access token"
        ) from exc
    user_key = new_user_key()
    vault: TokenVault = state.vault
    try:
        await vault.put(
            user_key,
            StoredToken(
                access_token=issued.access_token,
                expires_at=issued.expires_at,
                user_id=colleague.user_id,
                location_id=data.location_id,
                workstation_id=data.workstation_id,
            ),
        )
    except VaultUnavailable as exc:
        raise ProblemError(
            503, "vault-unavailable", "Service unavailable", "the token vault cannot be reached", headers={"Retry-After": "2"}
        ) from exc
    event = contract.SessionStarted(
        event_id=str(uuid.uuid4()),
        user_id=colleague.user_id,
        location_id=data.location_id,
        workstation_id=data.workstation_id,
        occurred_at=_rfc3339(time.time()),
        expires_at=_rfc3339(issued.expires_at),
    )
    events: EventPublisher = state.events
    try:
        await events.publish(
            state.topics.name(SESSION_EVENTS),
            colleague.user_id,
            contract.encode(event),
            message_type=contract.MESSAGE_TYPE,
            timeout_s=3.0,
        )
    except BrokerUnavailable as exc:
        # No audit record, no session: the user key stays unknown to everyone and expires.
        raise ProblemError(
            503,
            "broker-unavailable",
            "Service unavailable",
            "the session could not be recorded; retry later",
            headers={"Retry-After": "5"},
        ) from exc
    log.info(
        "session.started",
        user_id=colleague.user_id,
        location_id=data.location_id,
        workstation_id=data.workstation_id,
        expires_in_s=int(issued.expires_at - time.time()),
    )
    return SessionResponse(user_access_token=issued.access_token, user_key=user_key, expires_at=_rfc3339(issued.expires_at))


def _valid_user_key(user_key: str) -> str:
    if not USER_KEY.fullmatch(user_key):
        raise ProblemError(400, "invalid-user-key", "Invalid user key", "a user key is 43 characters of A-Z a-z 0-9 _ -")
    return user_key


def token_callback_handler(api_key_guard: Any) -> Any:
    """The ``GET /instore/callbacks/tokens/{userKey}`` route, guarded by ``api_key_guard`` (the Callback API Key)."""

    @get(
        "/instore/callbacks/tokens/{userKey:str}",
        guards=[api_key_guard],
        security=[{"CallbackApiKey": []}],
        summary="User token callback",
        description="InStore fetches the colleague's user access token by the user key the host app got.",
        tags=["InStore callbacks"],
        operation_id="getUserToken",
        responses={
            400: problem_spec("not a user key"),
            401: problem_spec("missing or wrong X-Api-Key"),
            404: problem_spec("unknown or expired user key"),
            503: problem_spec("token vault unavailable"),
        },
    )
    async def user_token(
        request: Request[Any, Any, State],
        userKey: Annotated[
            str,
            Parameter(description="the user key POST /sessions answered: 43 of A-Z a-z 0-9 _ -", schema_extra=USER_KEY_SCHEMA),
        ],
    ) -> Response[bytes]:
        """``GET /instore/callbacks/tokens/{userKey}`` (assumed — see docs)."""
        key = _valid_user_key(userKey)
        vault: TokenVault = request.app.state.vault
        try:
            stored = await vault.get(key)
        except VaultUnavailable as exc:
            raise ProblemError(
                503, "vault-unavailable", "Service unavailable", "the token vault cannot be reached", headers={"Retry-After": "2"}
            ) from exc
        expires_in = int(stored.expires_at - time.time()) if stored else 0
        if stored is None or expires_in <= 0:
            raise ProblemError(404, "user-key-not-found", "User key not found", "unknown or expired user key")
        body = msgspec.json.encode(TokenResponse(access_token=stored.access_token, expires_in=expires_in))
        log.info("token_callback.answered", expires_in_s=expires_in)  # an audit line: never the key or the token
        return Response(content=body, media_type="application/json", headers={"Pragma": "no-cache"})

    return user_token
