"""InStore's payment-extension requests: signed, checked, durable in Kafka, then 200.

``POST {prefix}/{tender}/{action}`` is the URL of a Custom payment processor registered in
InStore Center (its ``url``; the tender and action segments are assumed — see
:mod:`instore_shared.contract.payment_extensions`). InStore waits at most the processor's
``timeout`` (15,000 ms in the documented example), so the gateway only checks and stores:
the signature over the raw body (the same code as webhooks), the body's shape, that the
action fits the tender, and that ``statusUrl`` and ``callbackUrl`` are on the allow-list
(SSRF: nothing outside it is ever called, see :mod:`instore_shared.url_allowlist`). The raw
bytes go to ``instore.payment-requests.v1`` keyed by the Payment id (acks=all, idempotent
producer); 200 only after Kafka acknowledged, else a 503 problem — InStore repeats the
request, which is safe: the payment-extension service does everything once per ``requestId``.

``POST {prefix}/prompt-answers`` (ASSUMED route, signed the same way): the colleague's answer
to a prompt, published to ``instore.payment-prompt-answers.v1`` keyed by the prompt's
``requestId``; the replica whose payment waits for it picks it up.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any

import msgspec
from litestar import Request, Response, post
from litestar.datastructures import State
from litestar.exceptions import HTTPException
from litestar.params import Parameter
from litestar.types import Receive, Scope, Send

from instore_gateway.openapi import signature_security
from instore_gateway.problems import ProblemError, problem_spec
from instore_gateway.raw_routes import RawRoute, header_values, read_body
from instore_gateway.webhooks import check_signature
from instore_shared import metrics
from instore_shared.contract import payment_extensions as contract
from instore_shared.kafka import headers as h
from instore_shared.kafka.rpc import BrokerUnavailable, MessageRejected, NotAcknowledged
from instore_shared.kafka.topics import PAYMENT_PROMPT_ANSWERS, PAYMENT_REQUESTS, TopicNames
from instore_shared.logging import get_logger
from instore_shared.url_allowlist import UrlAllowList

log = get_logger(__name__)

_TENDERS = {t.value: t for t in contract.Tender}
_ACTIONS = {a.value: a for a in contract.Action}

TenderSegment = Annotated[
    str,
    Parameter(
        description="bank-card, gift-card, wallet or pay-on-account (assumed names)", schema_extra={"enum": list(_TENDERS)}
    ),
]
ActionSegment = Annotated[
    str,
    Parameter(
        description="payment, capture, cancel, refund, or balance (gift cards only; "
        "an action the tender does not serve is 404) (assumed names)",
        schema_extra={"enum": list(_ACTIONS)},
    ),
]


class RequestAccepted(msgspec.Struct, frozen=True):
    """The 200 answer: the request is stored and will be processed; its result goes to ``callbackUrl``."""

    requestId: str
    status: str = "accepted"


class AnswerAccepted(msgspec.Struct, frozen=True):
    """The 200 answer to a prompt answer."""

    requestId: str
    status: str = "accepted"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


async def _publish(
    events: Any, topic: str, key: str, body: bytes, message_type: str, timeout_s: float, headers: dict[str, str], what: str
) -> None:
    try:
        await events.publish(topic, key, body, message_type=message_type, timeout_s=timeout_s, headers=headers)
    except MessageRejected as exc:
        raise ProblemError(
            413, "payload-too-large", "Payload too large", f"the {what} is larger than the message broker accepts"
        ) from exc
    except NotAcknowledged as exc:
        log.error(f"{what}.not_acknowledged", key=key, error=str(exc))
        raise ProblemError(
            503,
            "not-acknowledged",
            "Not acknowledged in time",
            f"Kafka did not acknowledge the {what} in time; it may have been stored. Send it again: repeats are safe",
            headers={"Retry-After": "2"},
        ) from exc
    except BrokerUnavailable as exc:
        log.error(f"{what}.not_stored", key=key, error=str(exc))
        raise ProblemError(
            503,
            "not-stored",
            "Not stored",
            f"the message broker could not store the {what}; send it again later",
            headers={"Retry-After": "2"},
        ) from exc


def _decode(body: bytes, struct: type[Any], what: str) -> Any:
    try:
        return msgspec.json.decode(body, type=struct)
    except msgspec.ValidationError as exc:
        raise ProblemError(422, "invalid-request", "Invalid request", f"the {what} does not fit its schema: {exc}") from exc
    except msgspec.DecodeError as exc:
        raise ProblemError(400, "not-json", "Not JSON", f"the {what} must be a JSON object") from exc


@dataclass(frozen=True, slots=True)
class PaymentExtensionIntake:
    """What taking a payment-extension request or a prompt answer needs, fixed at start.

    ``events``: the publisher (:class:`~instore_gateway.sessions.EventPublisher`); ``names``:
    signature header names, lower case; ``publish_timeout``: seconds Kafka gets to acknowledge;
    ``max_body_bytes``: the largest body taken; ``allowed``: the addresses statusUrl and
    callbackUrl may name; ``topics``: this deployment's topic names (``KAFKA_TOPIC_PREFIX``)."""

    events: Any
    secret: bytes
    names: tuple[str, ...]
    publish_timeout: float
    max_body_bytes: int
    allowed: UrlAllowList
    topics: TopicNames

    def _signed(self, body: bytes, header_values: Callable[[str], list[str]], what: str) -> None:
        check_signature(self.secret, body, [v for name in self.names for v in header_values(name)], what)

    async def accept_request(
        self,
        body: bytes | None,
        header_values: Callable[[str], list[str]],
        tender_segment: str,
        action_segment: str,
        correlation_id: str,
    ) -> bytes:
        """Check and store one payment-extension request; returns the 200 body (:class:`RequestAccepted` JSON).

        ``body`` None: larger than ``max_body_bytes`` (413). Counted in
        ``instore_payment_extension_requests_total{tender, action, outcome}``. Raises
        :class:`ProblemError` 401, 404 ``unknown-extension-action``, 400 ``not-json``, 422
        ``invalid-request`` / ``url-not-allowed``, 413, 503 ``not-stored`` / ``not-acknowledged``."""
        outcome = "error"
        try:
            if body is None:
                raise ProblemError(
                    413, "payload-too-large", "Payload too large", f"the body is larger than {self.max_body_bytes} bytes"
                )
            accepted = await self._accept_request(body, header_values, tender_segment, action_segment, correlation_id)
            outcome = "accepted"
            return accepted
        except ProblemError as exc:
            outcome = exc.slug
            raise
        finally:
            known = tender_segment in _TENDERS and action_segment in _ACTIONS
            metrics.PAYMENT_EXTENSION_REQUESTS.labels(
                tender_segment if known else "unknown", action_segment if known else "unknown", outcome
            ).inc()

    async def _accept_request(
        self,
        body: bytes,
        header_values: Callable[[str], list[str]],
        tender_segment: str,
        action_segment: str,
        correlation_id: str,
    ) -> bytes:
        received_at = _now()
        self._signed(body, header_values, "payment extension request")  # first: tells strangers nothing
        tender, action = _TENDERS.get(tender_segment), _ACTIONS.get(action_segment)
        if tender is None or action is None or action not in contract.ACTIONS_OF[tender]:
            raise ProblemError(
                404,
                "unknown-extension-action",
                "Unknown tender or action",
                "tenders: " + ", ".join(_TENDERS) + "; actions per tender: see the OpenAPI document",
            )
        parsed: contract.PaymentExtensionRequest = _decode(body, contract.PaymentExtensionRequest, "request")
        missing = contract.request_problem(parsed, tender, action)
        if missing:
            raise ProblemError(422, "invalid-request", "Invalid request", missing)
        for field, url in (("statusUrl", parsed.statusUrl), ("callbackUrl", parsed.callbackUrl)):
            if not self.allowed.allows(url):
                log.warning("payment_extension.url_refused", field=field, request_id=parsed.requestId)
                raise ProblemError(
                    422,
                    "url-not-allowed",
                    "Address not allowed",
                    f"{field} is not on the allow-list of addresses this server calls (PAYMENT_EXTENSION_ALLOWED_URLS)",
                )
        key = contract.routing_key(parsed)
        await _publish(
            self.events,
            self.topics.name(PAYMENT_REQUESTS),
            key,
            body,
            contract.MESSAGE_TYPE,
            self.publish_timeout,
            {
                h.REQUEST_ID: parsed.requestId,
                h.TENDER: tender.value,
                h.ACTION: action.value,
                h.RECEIVED_AT: received_at,
                h.CORRELATION_ID: correlation_id,
            },
            "payment extension request",
        )
        log.info("payment_extension.accepted", request_id=parsed.requestId, tender=tender.value, action=action.value, key=key)
        return msgspec.json.encode(RequestAccepted(parsed.requestId))

    async def accept_answer(self, body: bytes | None, header_values: Callable[[str], list[str]], correlation_id: str) -> bytes:
        """Check and store one prompt answer; returns the 200 body (:class:`AnswerAccepted` JSON).

        ``body`` None: larger than ``max_body_bytes`` (413). Raises :class:`ProblemError` 401,
        400, 422, 413, 503."""
        if body is None:
            raise ProblemError(
                413, "payload-too-large", "Payload too large", f"the body is larger than {self.max_body_bytes} bytes"
            )
        self._signed(body, header_values, "prompt answer")
        answer: contract.PromptAnswer = _decode(body, contract.PromptAnswer, "prompt answer")
        await _publish(
            self.events,
            self.topics.name(PAYMENT_PROMPT_ANSWERS),
            answer.requestId,
            msgspec.json.encode(answer),
            contract.ANSWER_MESSAGE_TYPE,
            self.publish_timeout,
            {h.REQUEST_ID: answer.requestId, h.RECEIVED_AT: _now(), h.CORRELATION_ID: correlation_id},
            "prompt answer",
        )
        log.info("payment_prompt.answered", prompt_request_id=answer.requestId)
        return msgspec.json.encode(AnswerAccepted(answer.requestId))


def payment_extension_intake(
    events: Any,
    secret: bytes,
    signature_headers: list[str],
    publish_timeout: float,
    max_body_bytes: int,
    allowed: UrlAllowList,
    topics: TopicNames,
) -> PaymentExtensionIntake:
    """A :class:`PaymentExtensionIntake` from settings (signature header names as configured)."""
    names = tuple(name.strip().lower() for name in signature_headers if name.strip())
    return PaymentExtensionIntake(events, secret, names, publish_timeout, max_body_bytes, allowed, topics)


def payment_extension_prefix(prefix: str) -> str:
    """``PAYMENT_EXTENSION_PATH_PREFIX`` as a path: one leading slash, none trailing."""
    return "/" + prefix.strip("/")


def payment_extension_handlers(
    prefix: str, max_body_bytes: int, signature_headers: list[str], publish_timeout: float, allowed: UrlAllowList
) -> list[Any]:
    """The two Litestar routes, built from settings: path prefix, body limit, signature header names, Kafka
    acknowledgement timeout, the allow-list of callback addresses. They document the routes and serve them when
    the raw routes (:func:`raw_payment_extension_routes`) are not mounted."""
    prefix = payment_extension_prefix(prefix)

    def intake(request: Request[Any, Any, State]) -> PaymentExtensionIntake:
        return payment_extension_intake(
            request.app.state.events,
            request.app.state.webhook_secret,
            signature_headers,
            publish_timeout,
            max_body_bytes,
            allowed,
            request.app.state.topics,
        )

    @post(
        f"{prefix}/prompt-answers",
        status_code=200,
        request_max_body_size=max_body_bytes,
        summary="A colleague's answer to a payment prompt (assumed route)",
        description='Signed like webhooks; body {"requestId": <the prompt\'s requestId>, "response": <the chosen '
        "option's response>}. Stored in Kafka before 200; routed to the waiting payment by requestId.",
        tags=["InStore payment extensions"],
        operation_id="answerPaymentPrompt",
        security=signature_security(signature_headers),
        responses={
            400: problem_spec("not JSON"),
            401: problem_spec("signature missing or wrong"),
            413: problem_spec("body too large"),
            422: problem_spec("not a prompt answer"),
            503: problem_spec("not stored or not acknowledged: send again"),
        },
    )
    async def answer_prompt(request: Request[Any, Any, State]) -> Response[bytes]:
        """``POST {prefix}/prompt-answers`` (assumed — see docs)."""
        body = await request.body()
        accepted = await intake(request).accept_answer(
            body, lambda name: request.headers.getall(name, []), request.scope["state"]["correlation_id"]
        )
        return Response(accepted, media_type="application/json")

    @post(
        f"{prefix}/{{tender:str}}/{{action:str}}",
        status_code=200,
        request_max_body_size=max_body_bytes,
        summary="A payment-extension request from InStore",
        description="A Custom payment processor's request (tender: bank-card, gift-card, wallet, pay-on-account; "
        "action: payment, capture, cancel, refund, balance — assumed names), signed like webhooks. Answered 200 once "
        "durably in Kafka; progress and prompts go to statusUrl, the result once to callbackUrl. JSON Schema of the "
        "body: the payment-extension service's /schemas/payment-extension-request.json.",
        tags=["InStore payment extensions"],
        operation_id="paymentExtensionRequest",
        security=signature_security(signature_headers),
        responses={
            400: problem_spec("not JSON"),
            401: problem_spec("signature missing or wrong"),
            404: problem_spec("unknown tender or action, or an action the tender does not serve"),
            413: problem_spec("body too large"),
            422: problem_spec(
                "the body does not fit the schema or the action (invalid-request), or statusUrl or "
                "callbackUrl is not on the allow-list (url-not-allowed)"
            ),
            503: problem_spec("not stored or not acknowledged: send again; repeats are safe"),
        },
    )
    async def payment_request(request: Request[Any, Any, State], tender: TenderSegment, action: ActionSegment) -> Response[bytes]:
        """``POST {prefix}/{tender}/{action}`` (assumed — see docs). Counted in
        ``instore_payment_extension_requests_total{tender, action, outcome}``."""
        try:
            body: bytes | None = await request.body()
        except HTTPException as exc:
            if exc.status_code != 413:
                raise
            body = None
        accepted = await intake(request).accept_request(
            body, lambda name: request.headers.getall(name, []), tender, action, request.scope["state"]["correlation_id"]
        )
        return Response(accepted, media_type="application/json")

    return [answer_prompt, payment_request]


def raw_payment_extension_routes(prefix: str, intake: Callable[[], PaymentExtensionIntake]) -> list[RawRoute]:
    """The two routes as plain ASGI apps (:mod:`instore_gateway.raw_routes`): same checks, metrics and problem
    bodies as :func:`payment_extension_handlers` (the unit tests run both ways). ``intake()`` gives the running
    app's :class:`PaymentExtensionIntake`."""
    prefix = payment_extension_prefix(prefix)
    answers = f"{prefix}/prompt-answers"

    async def respond(send: Send, accepted: bytes) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(accepted)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": accepted, "more_body": False})

    async def request_route(scope: Scope, receive: Receive, send: Send) -> None:
        current = intake()
        tender, action = scope["path"][len(prefix) + 1 :].split("/")
        body = await read_body(scope, receive, current.max_body_bytes)
        await respond(
            send,
            await current.accept_request(
                body, lambda name: header_values(scope, name.encode("latin-1")), tender, action, scope["state"]["correlation_id"]
            ),
        )

    async def answer_route(scope: Scope, receive: Receive, send: Send) -> None:
        current = intake()
        body = await read_body(scope, receive, current.max_body_bytes)
        await respond(
            send,
            await current.accept_answer(
                body, lambda name: header_values(scope, name.encode("latin-1")), scope["state"]["correlation_id"]
            ),
        )

    return [
        RawRoute("POST", answers, answers, answer_route),
        RawRoute("POST", prefix + "/", prefix + "/{tender}/{action}", request_route, segments=2),
    ]
