"""``POST /host/events``: the browser events of InStore's federated component, forwarded by the host app.

Authenticated like ``POST /sessions`` (the colleague's IMS bearer token) plus the session's user
key in ``X-User-Key``: the colleague must be the session's, and the location and workstation are
the session's — nothing about who or where is taken from the body. Each event is checked
(:mod:`instore_shared.contract.host_events`: known types for their documented fields, unknown
types and extra fields kept raw, sizes bounded), all are published to ``instore.host-events.v1``
(acks=all) keyed by the cart id the event names, else the workstation, and the answer is 202
only after Kafka acknowledged every one; otherwise 503 and the helper sends the batch again
(events carrying the helper's ``id`` keep their ``eventId``: duplicates are recognisable).
Rate-limited per session (the user key; Litestar's limiter runs before authentication, and one
session is one colleague at one workstation).
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from datetime import UTC, datetime
from typing import Annotated, Any

import msgspec
from litestar import Request, Response, Router, get, post
from litestar.datastructures import State
from litestar.middleware.rate_limit import RateLimitConfig
from litestar.params import HeaderParameter

from instore_gateway.content_type import json_body_guard
from instore_gateway.problems import ProblemError, problem_spec
from instore_gateway.sessions import USER_KEY, USER_KEY_SCHEMA, colleague_guard
from instore_gateway.vault import TokenVault, VaultUnavailable
from instore_shared.contract import host_events as contract
from instore_shared.kafka import headers as h
from instore_shared.kafka.rpc import BrokerUnavailable, MessageRejected
from instore_shared.kafka.topics import HOST_EVENTS
from instore_shared.logging import get_logger

log = get_logger(__name__)

USER_KEY_HEADER = "x-user-key"


UserKeyHeader = Annotated[
    str | None,
    HeaderParameter(
        name="X-User-Key",
        required=False,
        description="the user key POST /sessions answered (43 of A-Z a-z 0-9 _ -)",
        schema_extra=USER_KEY_SCHEMA,
    ),
]


_BATCH_SCHEMA: dict[str, Any] = msgspec.json.schema(contract.EventBatch)
_EVENT_SCHEMA: dict[str, Any] = msgspec.json.schema(contract.HostEvent)


class EventsAccepted(msgspec.Struct, frozen=True):
    """The 202 answer: how many events are stored, and their ``eventId`` s in the order sent."""

    accepted: int
    eventIds: list[str]


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _session_key(request: Request[Any, Any, Any]) -> str:
    """The rate-limit bucket: the session's user key (hashed), else the client address."""
    given = request.headers.get(USER_KEY_HEADER, "")
    if USER_KEY.fullmatch(given):
        return "session:" + hashlib.sha256(given.encode()).hexdigest()[:32]
    return "addr:" + (request.client.host if request.client else "unknown")


def host_events_router(
    max_body_bytes: int, max_batch: int, max_detail_bytes: int, rate_per_minute: int, publish_timeout: float
) -> Router:
    """The route, built from settings, inside a Router carrying its rate limit."""

    @post(
        "/host/events",
        guards=[colleague_guard, json_body_guard],
        security=[{"ImsBearer": [], "SessionUserKey": []}],
        status_code=202,
        request_max_body_size=max_body_bytes,
        summary="Browser events of the InStore component (host app)",
        description="Needs `Authorization: Bearer <IMS token>` and `X-User-Key: <the session's user key>`. Body "
        '`{"events": [{"type": "mistStatus" | "inStoreCore-Alert" | "inStoreCore-receiptChoice" | …, '
        '"detail", "occurredAt"?, "cartId"?, "id"?}]}`; stored in instore.host-events.v1 before 202.',
        tags=["Host app"],
        operation_id="postHostEvents",
        responses={
            400: problem_spec("not JSON"),
            401: problem_spec("missing or invalid IMS token, or no live session for X-User-Key"),
            403: problem_spec("the session belongs to another colleague"),
            413: problem_spec("body too large"),
            415: problem_spec("Content-Type is not application/json (or a +json type); Accept-Post names it"),
            422: problem_spec("not a batch of events, too many, an event too large, or a known event without its fields"),
            429: problem_spec("too many batches from this session"),
            503: problem_spec("token vault or Kafka unavailable: send the batch again"),
        },
    )
    async def post_host_events(request: Request[Any, Any, State], user_key: UserKeyHeader = None) -> Response[bytes]:
        """``POST /host/events`` (ours — see the module). ``user_key`` only documents the header (read below, where
        exactly one is required)."""
        colleague = request.scope["state"]["colleague"]
        given = request.headers.getall(USER_KEY_HEADER, [])
        if len(given) != 1 or not USER_KEY.fullmatch(given[0]):
            raise ProblemError(
                401, "session-required", "Session required", "X-User-Key must carry the user key POST /sessions answered"
            )
        vault: TokenVault = request.app.state.vault
        try:
            session = await vault.get(given[0])
        except VaultUnavailable as exc:
            raise ProblemError(
                503, "vault-unavailable", "Service unavailable", "the token vault cannot be reached", headers={"Retry-After": "2"}
            ) from exc
        if session is None or session.expires_at <= time.time():
            raise ProblemError(401, "session-not-found", "Session not found", "unknown or expired user key")
        if session.user_id != colleague.user_id:
            log.warning("host_events.session_mismatch", user_id=colleague.user_id)
            raise ProblemError(403, "session-mismatch", "Not your session", "the session belongs to another colleague")
        body = await request.body()
        try:
            batch = msgspec.json.decode(body, type=contract.EventBatch)
        except msgspec.ValidationError as exc:
            raise ProblemError(422, "invalid-events", "Invalid events", f"not a batch of events: {exc}") from exc
        except msgspec.DecodeError as exc:
            raise ProblemError(400, "not-json", "Not JSON", "the body must be a JSON object") from exc
        if not 1 <= len(batch.events) <= max_batch:
            raise ProblemError(422, "invalid-events", "Invalid events", f"a batch holds 1 to {max_batch} events")
        received_at = _now()
        session_ref = hashlib.sha256(given[0].encode()).hexdigest()[:32]
        out: list[tuple[str, bytes, str]] = []
        for n, event in enumerate(batch.events):
            problem = contract.detail_problem(event)
            if problem is None and len(msgspec.json.encode(event.detail)) > max_detail_bytes:
                problem = f"detail larger than {max_detail_bytes} bytes"
            if problem is not None:
                raise ProblemError(422, "invalid-events", "Invalid events", f"events[{n}]: {problem}")
            published = contract.HostEvent(
                event_id=contract.event_id(session_ref, event.id),
                type=event.type,
                detail=event.detail,
                cart_id=event.cartId,
                colleague_id=session.user_id,
                location_id=session.location_id,
                workstation_id=session.workstation_id,
                occurred_at=event.occurredAt,
                received_at=received_at,
            )
            out.append((published.event_id, msgspec.json.encode(published), event.cartId or session.workstation_id))
        cid = request.scope["state"]["correlation_id"]
        results = await asyncio.gather(
            *(
                request.app.state.events.publish(
                    request.app.state.topics.name(HOST_EVENTS),
                    key,
                    value,
                    message_type=contract.MESSAGE_TYPE,
                    timeout_s=publish_timeout,
                    headers={h.CORRELATION_ID: cid, "event-id": eid},
                )
                for eid, value, key in out
            ),
            return_exceptions=True,
        )
        failures = [r for r in results if isinstance(r, BaseException)]
        if any(isinstance(r, MessageRejected) for r in failures):
            raise ProblemError(413, "payload-too-large", "Payload too large", "an event is larger than Kafka accepts")
        if failures:
            if not all(isinstance(r, BrokerUnavailable) for r in failures):
                log.error("host_events.publish_failed", error=type(failures[0]).__name__)
            raise ProblemError(
                503,
                "events-not-stored",
                "Events not stored",
                f"{len(failures)} of {len(out)} events were not acknowledged by Kafka; send the batch "
                "again (events with an id keep their eventId)",
                headers={"Retry-After": "2"},
            )
        log.info("host_events.accepted", count=len(out), types=sorted({e.type for e in batch.events}))
        return Response(
            msgspec.json.encode(EventsAccepted(accepted=len(out), eventIds=[e for e, _, _ in out])),
            status_code=202,
            media_type="application/json",
        )

    @get(
        "/schemas/host-events-batch.json",
        tags=["Host app"],
        summary="JSON Schema of the POST /host/events body",
        sync_to_thread=False,
    )
    def batch_schema() -> dict[str, Any]:
        """The body the helper sends (:class:`~instore_shared.contract.host_events.EventBatch`)."""
        return _BATCH_SCHEMA

    @get(
        "/schemas/host-event.json",
        tags=["Host app"],
        summary="JSON Schema of an instore.host-events.v1 message",
        sync_to_thread=False,
    )
    def event_schema() -> dict[str, Any]:
        """What downstream teams read from ``instore.host-events.v1`` (``HostEvent``)."""
        return _EVENT_SCHEMA

    return Router(
        "/",
        route_handlers=[post_host_events, batch_schema, event_schema],
        middleware=[
            RateLimitConfig(
                rate_limit=("minute", rate_per_minute), set_rate_limit_headers=True, identifier_for_request=_session_key
            ).middleware,
        ],
    )
