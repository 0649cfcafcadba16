"""``POST /instore/webhooks``: InStore's signed webhooks, durable in Kafka before acknowledged.

Principles (../shared/reference/architecture.md 1, 4, 7): the HMAC is checked over the raw
bytes as received, never a re-serialisation; the raw bytes go to ``instore.webhooks.v1``
untouched, with the received time and a stable webhook id in headers, keyed by the cart
id / return cart id / order number the webhook names; the answer is 2xx only after Kafka
acknowledged the write (acks=all, idempotent producer), else 503 with ``Retry-After`` so
InStore retries. What the payload means is the consumers' business.

The contract towards InStore is at-least-once: a 202 means stored; a 503 means "send it
again", and its problem type says which of two things happened — ``webhook-not-stored``
(Kafka was unreachable or refused it: it is not in Kafka) or ``webhook-not-acknowledged``
(Kafka did not confirm in time: it may well be stored, and may still be written). Either
way a resend is safe: the webhook id is stable and the consumers are idempotent.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import msgspec
from litestar import Request, Response, post
from litestar.datastructures import State
from litestar.exceptions import HTTPException
from litestar.types import ASGIApp, Receive, Scope, Send

from instore_gateway.openapi import signature_security
from instore_gateway.problems import ProblemError, problem_spec
from instore_gateway.raw_routes import header_values, read_body
from instore_shared import metrics
from instore_shared.contract import instore_webhooks as contract
from instore_shared.kafka import headers as h
from instore_shared.kafka.rpc import BrokerUnavailable, MessageRejected, NotAcknowledged
from instore_shared.kafka.topics import WEBHOOKS, TopicNames
from instore_shared.logging import get_logger

log = get_logger(__name__)

MESSAGE_TYPE = "instore-webhook.v1"


class WebhookAccepted(msgspec.Struct, rename="camel"):
    """Answer of an accepted webhook: its stable id (InStore's ``id``, else ``sha256:<body hash>``)."""

    webhook_id: str


def require_signature(request: Request[Any, Any, State], body: bytes, names: list[str], what: str) -> None:
    """Raise a 401 ``invalid-signature`` problem unless one of the headers ``names`` holds the HMAC-SHA256 of
    exactly ``body`` under the webhook secret (:func:`instore_shared.contract.instore_webhooks.signature_valid`).

    Webhooks and payment-extension requests are signed alike (../shared/reference/instore-contract.md §4, §6)."""
    given = [value for name in names for value in request.headers.getall(name, [])]
    check_signature(request.app.state.webhook_secret, body, given, what)


def check_signature(secret: bytes, body: bytes, given: list[str], what: str) -> None:
    """:func:`require_signature` over the signature header values ``given`` (any one may match)."""
    if not any(contract.signature_valid(body, value, secret) for value in given):
        log.warning(f"{what}.refused", reason="no-signature" if not given else "bad-signature", bytes=len(body))
        raise ProblemError(
            401, "invalid-signature", "Invalid signature", f"the {what} signature is missing or does not match the body"
        )


@dataclass(frozen=True, slots=True)
class WebhookIntake:
    """What accepting a webhook needs, fixed at start: the settings and the publisher.

    ``names``: signature header names, lower case; ``publish_timeout``: seconds Kafka gets to
    acknowledge; ``max_body_bytes``: the largest body taken; ``topics``: this deployment's topic names
    (``KAFKA_TOPIC_PREFIX``)."""

    events: Any  # instore_gateway.sessions.EventPublisher
    secret: bytes
    names: tuple[str, ...]
    publish_timeout: float
    max_body_bytes: int
    topics: TopicNames

    async def accept(self, body: bytes, header_values: Callable[[str], list[str]], correlation_id: str) -> bytes:
        """Check, publish and acknowledge one webhook; returns the 202 body (:class:`WebhookAccepted` JSON).

        ``header_values(name)``: the request's values of header ``name`` (lower case). Counted in
        ``instore_webhooks_accepted_total`` or ``instore_webhooks_refused_total{reason}``.
        Raises :class:`ProblemError` 401 (signature), 400 (not a JSON object), 413 (larger than
        Kafka takes), 503 ``webhook-not-stored`` / ``webhook-not-acknowledged``.
        """
        try:
            accepted = await self._accept(body, header_values, correlation_id)
        except ProblemError as exc:
            metrics.WEBHOOKS_REFUSED.labels(exc.slug).inc()
            raise
        metrics.WEBHOOKS_ACCEPTED.inc()
        return accepted

    async def _accept(self, body: bytes, header_values: Callable[[str], list[str]], correlation_id: str) -> bytes:
        received_at = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        check_signature(self.secret, body, [v for name in self.names for v in header_values(name)], "webhook")
        try:
            payload = msgspec.json.decode(body)
        except msgspec.DecodeError as exc:
            raise ProblemError(400, "not-json", "Not JSON", "a signed webhook must be a JSON document") from exc
        if not isinstance(payload, dict):
            raise ProblemError(400, "not-json-object", "Not a JSON object", "a webhook must be a JSON object")
        webhook_id = contract.webhook_id(body, payload)
        key = contract.routing_key(payload)
        headers = {h.WEBHOOK_ID: webhook_id, h.RECEIVED_AT: received_at, h.CORRELATION_ID: correlation_id}
        try:
            await self.events.publish(
                self.topics.name(WEBHOOKS), key, body, message_type=MESSAGE_TYPE, timeout_s=self.publish_timeout, headers=headers
            )
        except MessageRejected as exc:
            log.error("webhook.too_large_for_kafka", webhook_id=webhook_id, bytes=len(body))
            raise ProblemError(
                413, "payload-too-large", "Payload too large", "the webhook is larger than the message broker accepts"
            ) from exc
        except NotAcknowledged as exc:
            log.error("webhook.not_acknowledged", webhook_id=webhook_id, error=str(exc))
            raise ProblemError(
                503,
                "webhook-not-acknowledged",
                "Webhook not acknowledged in time",
                "Kafka did not acknowledge the webhook in time; it may have been stored. Resend it: duplicates are safe",
                headers={"Retry-After": "5"},
            ) from exc
        except BrokerUnavailable as exc:
            log.error("webhook.not_stored", webhook_id=webhook_id, error=str(exc))
            raise ProblemError(
                503,
                "webhook-not-stored",
                "Webhook not stored",
                "the message broker could not store the webhook; resend it later",
                headers={"Retry-After": "5"},
            ) from exc
        log.info("webhook.accepted", webhook_id=webhook_id, key=key, bytes=len(body))
        return msgspec.json.encode(WebhookAccepted(webhook_id=webhook_id))


def webhook_handler(max_body_bytes: int, signature_headers: list[str], publish_timeout: float) -> Any:
    """The Litestar route, built from settings (body limit, signature header names, Kafka acknowledgement timeout).

    It documents the route (OpenAPI) and serves it when the raw route (:func:`raw_webhook_route`)
    is not mounted — with tracing on, so that the request has its server span."""
    names = tuple(name.strip().lower() for name in signature_headers if name.strip())

    @post(
        "/instore/webhooks",
        status_code=202,
        request_max_body_size=max_body_bytes,
        summary="InStore webhook",
        description="A signed webhook from InStore (HMAC-SHA256 of the raw body in one of the signature headers). "
        "Answered 202 only once it is durably in Kafka. The Content-Type is not checked: the signature covers the "
        "exact bytes.",
        tags=["InStore webhooks"],
        operation_id="receiveWebhook",
        security=signature_security(signature_headers),
        responses={
            400: problem_spec("signed, but not a JSON object"),
            401: problem_spec("signature missing or wrong"),
            413: problem_spec("body larger than WEBHOOK_MAX_BODY_BYTES"),
            503: problem_spec(
                "not stored (type webhook-not-stored), or not acknowledged in time and "
                "perhaps stored (type webhook-not-acknowledged): resend after Retry-After; "
                "duplicates are safe"
            ),
        },
    )
    async def receive_webhook(request: Request[Any, Any, State]) -> Response[bytes]:
        """``POST /instore/webhooks`` (header names and signature encodings assumed — see docs)."""
        state = request.app.state
        intake = WebhookIntake(state.events, state.webhook_secret, names, publish_timeout, max_body_bytes, state.topics)
        try:
            body = await request.body()
        except HTTPException as exc:  # the body limit (413)
            metrics.WEBHOOKS_REFUSED.labels("payload-too-large" if exc.status_code == 413 else str(exc.status_code)).inc()
            raise
        accepted = await intake.accept(
            body, lambda name: request.headers.getall(name, []), request.scope["state"]["correlation_id"]
        )
        return Response(accepted, status_code=202, media_type="application/json")

    return receive_webhook


def raw_webhook_route(intake: Callable[[], WebhookIntake]) -> ASGIApp:
    """``POST /instore/webhooks`` as a plain ASGI app (:mod:`instore_gateway.raw_routes`).

    Same contract, checks, metrics and problem bodies as :func:`webhook_handler` (the unit tests
    run against both). ``intake()`` gives the
    :class:`WebhookIntake` of the running app (its publisher exists only once the app started).
    Raises :class:`ProblemError` (413 for a body over ``max_body_bytes``, and what
    :meth:`WebhookIntake.accept` raises); the edge layer renders it.
    """

    async def route(scope: Scope, receive: Receive, send: Send) -> None:
        current = intake()
        body = await read_body(scope, receive, current.max_body_bytes)
        if body is None:
            metrics.WEBHOOKS_REFUSED.labels("payload-too-large").inc()
            raise ProblemError(
                413, "payload-too-large", "Payload too large", f"the body is larger than {current.max_body_bytes} bytes"
            )
        accepted = await current.accept(
            body, lambda name: header_values(scope, name.encode("latin-1")), scope["state"]["correlation_id"]
        )
        await send(
            {
                "type": "http.response.start",
                "status": 202,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(accepted)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": accepted, "more_body": False})

    return route
