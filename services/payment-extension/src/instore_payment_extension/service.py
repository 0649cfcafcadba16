"""One payment-extension request, from Kafka to InStore's callback: :func:`handle_payment_request`.

The per-request state machine (every step safe to repeat)::

    received ─▶ acknowledged (the gateway's 200 after Kafka) ─▶ processing (marked before the provider
    is asked; progress to statusUrl; provider call, prompts) ─▶ decided (succeeded | declined | cancelled | timed-out | failed;
    recorded on the Payment, then saved) ─▶ delivered (result POSTed to callbackUrl) ─▶ announced
    (commerce.payment-extension-results.v1) ─▶ offset committed

Where the state lives, and why: in a **Custom Object** of Composable Commerce per request
(container ``instore-payment-extension``, key from InStore's ``requestId``), written with
compare-and-set — the same store as the announcement markers (:mod:`instore_shared.announcements`),
so the service needs nothing beyond Kafka and Composable Commerce, the state outlives any pod,
and it sits beside the Payment it describes. A compacted topic would need a reader per
replica to answer "what did I do for this id?"; Redis would be a third system holding money
state with weaker durability. The Payment itself is never used as bookkeeping: its
transactions are business facts, the Custom Object is ours.

What a redelivery (crash, rebalance, InStore repeating the request) finds and does:
nothing saved → starts over; ``processing`` → asks again: the provider gets the same idempotency key
(:func:`~instore_shared.contract.payment_extensions.idempotency_key`, from InStore's ids only)
and answers what it answered before — no second charge — and the Transaction is written only
when no Transaction with that ``interactionId`` and type exists; ``decided`` → only delivers
and announces; ``delivered`` → only announces; ``announced`` → nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from typing import Any, Protocol, TypeVar

import msgspec
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, wait_random_exponential

from instore_payment_extension.instore import CallbackRefused, InStoreClient, NotDelivered, UrlNotAllowed
from instore_payment_extension.prompts import PromptAnswers
from instore_payment_extension.providers.base import (
    Approved,
    Declined,
    NeedsPrompt,
    PaymentInput,
    PaymentProvider,
    ProviderDown,
)
from instore_payment_extension.settings import PaymentExtensionSettings
from instore_shared import metrics
from instore_shared.clock import Clock
from instore_shared.commercetools.client import ApiResponse
from instore_shared.commercetools.errors import (
    AuthenticationFailed,
    ConcurrentModification,
    InvalidInput,
    NotFound,
)
from instore_shared.contract import payment_extensions as contract
from instore_shared.contract.payment_extensions import Action, Outcome, PaymentExtensionResult, Tender
from instore_shared.kafka import headers as h
from instore_shared.kafka.consumer import Deadline, Unprocessable, retry_transient
from instore_shared.kafka.publisher import EventPublisher
from instore_shared.kafka.topics import PAYMENT_EXTENSION_RESULTS
from instore_shared.logging import get_logger

log = get_logger(__name__)

CONTAINER = "instore-payment-extension"
"""Custom Object container of the per-request state."""

_T = TypeVar("_T")


class Commerce(Protocol):
    """What the service needs of Composable Commerce (the CommercetoolsClient; tests pass a fake)."""

    async def request(
        self, method: str, path: str, *, params: Mapping[str, str | list[str]] | None = None, json: Any = None
    ) -> ApiResponse: ...

    async def update(self, resource: str, resource_id: str, version: int, actions: list[dict[str, Any]]) -> ApiResponse: ...

    async def get_custom_object(self, container: str, key: str) -> ApiResponse: ...

    async def put_custom_object(self, container: str, key: str, value: Any, version: int | None = None) -> ApiResponse: ...


class Stage(enum.Enum):
    """How far a request got (the Custom Object's ``stage``)."""

    PROCESSING = "processing"
    """Written before the provider is asked: a redelivery finding it knows the money may have moved under this
    request's idempotency key (so a Transaction on the Payment may be its own)."""
    DECIDED = "decided"
    DELIVERED = "delivered"
    ANNOUNCED = "announced"


class _State(msgspec.Struct):
    stage: str
    provider: str
    fingerprint: str = ""
    result: PaymentExtensionResult | None = None
    decidedAt: str = ""


class _Stored(msgspec.Struct):
    version: int
    value: _State


@dataclass(frozen=True)
class Handled:
    """What one message led to: the outcome, and whether this delivery did the work (False: a repeat)."""

    result: PaymentExtensionResult
    first_time: bool


def _now_iso(clock: Clock) -> str:
    return datetime.fromtimestamp(clock.now(), UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def state_key(request_id: str, action: Action = Action.PAYMENT) -> str:
    """The Custom Object key of a request: ``<action>.<requestId>`` with ``:`` (allowed in InStore ids, not in keys) as
    ``~`` (never in a requestId, so no two requests share a key)."""
    return f"{action.value}.{request_id.replace(':', '~')}"


def fingerprint(request: contract.PaymentExtensionRequest, tender: Tender) -> str:
    """What makes a request the same request: tender, Payment, cart, amount, capture mode, reference. A repeat must
    match it; a different request under a used ``requestId`` is refused (``request-id-reused``)."""
    amount = f"{request.amount.centAmount} {request.amount.currencyCode}" if request.amount else ""
    return "|".join(
        [tender.value, request.paymentId or "", request.cartId or "", amount, request.captureMode, request.reference or ""]
    )


# -- the state (Custom Object) ---------------------------------------------------------------
async def _read_state(commerce: Commerce, key: str) -> _Stored | None:
    try:
        return msgspec.json.decode((await commerce.get_custom_object(CONTAINER, key)).content, type=_Stored)
    except NotFound:
        return None
    except (InvalidInput, AuthenticationFailed) as exc:
        raise Unprocessable("state-refused", f"{CONTAINER}/{key}: {exc.status} {exc.code}") from exc
    except msgspec.ValidationError as exc:
        raise Unprocessable("unexpected-state-shape", f"{CONTAINER}/{key}: {exc}") from exc


async def _write_state(commerce: Commerce, key: str, state: _State, version: int) -> int:
    """Compare-and-set (``version`` 0: create only). Returns the new version; raises ConcurrentModification."""
    answer = await commerce.put_custom_object(CONTAINER, key, msgspec.to_builtins(state), version=version)
    return int(answer.json()["version"])


# -- the provider ------------------------------------------------------------------------------
async def _call(
    provider: PaymentProvider, operation: str, work: Callable[[], Awaitable[_T]], deadline: Deadline, timeout_s: float
) -> _T:
    """``work()`` with a per-call timeout; :class:`ProviderDown` retried (same idempotency key) until ``deadline``.
    Raises ProviderDown at the deadline, TimeoutError when one call took longer than ``timeout_s``."""
    backoff = wait_random_exponential(multiplier=0.5, max=10)

    def before_sleep(state: RetryCallState) -> None:
        log.warning(
            "payment_provider.down_retrying",
            provider=provider.name,
            operation=operation,
            attempt=state.attempt_number,
            wait_s=round(state.upcoming_sleep, 2),
        )

    async for attempt in AsyncRetrying(
        stop=lambda _s: deadline.remaining() <= 0,
        wait=lambda s: min(backoff(s), max(deadline.remaining(), 0)),
        sleep=deadline.clock.sleep,
        retry=retry_if_exception_type(ProviderDown),
        before_sleep=before_sleep,
        reraise=True,
    ):
        with attempt:
            started = time.perf_counter()
            outcome = "down"
            try:
                result = await asyncio.wait_for(work(), timeout_s)
                outcome = (
                    "approved" if isinstance(result, Approved) else "prompt" if isinstance(result, NeedsPrompt) else "declined"
                )
                return result
            except TimeoutError:
                outcome = "timeout"
                raise
            finally:
                metrics.PROVIDER_CALLS.labels(provider.name, operation, outcome).inc()
                metrics.PROVIDER_DURATION.labels(provider.name, operation).observe(time.perf_counter() - started)
    raise AssertionError("unreachable")


def _result(
    request: contract.PaymentExtensionRequest,
    tender: Tender,
    action: Action,
    outcome: Outcome,
    *,
    reference: str | None = None,
    reason: str | None = None,
    message: str | None = None,
    approved: Approved | None = None,
) -> PaymentExtensionResult:
    return PaymentExtensionResult(
        requestId=request.requestId,
        tender=tender.value,
        action=action.value,
        status=outcome.value,
        paymentId=request.paymentId,
        amount=request.amount,
        reference=approved.reference if approved else reference,
        approvalCode=approved.approval_code if approved else None,
        card=approved.card if approved else None,
        balance=approved.balance if approved else None,
        reason=reason,
        message=message,
    )


async def run_provider(
    request: contract.PaymentExtensionRequest,
    tender: Tender,
    action: Action,
    *,
    provider: PaymentProvider,
    instore: InStoreClient,
    prompts: PromptAnswers,
    deadline: Deadline,
    settings: PaymentExtensionSettings,
) -> PaymentExtensionResult:
    """Ask the provider for ``action``, with prompts to the colleague in between; never raises for the provider's
    sake: a decline, a cancel, a timeout and an unreachable provider are results."""
    key = contract.idempotency_key(request.requestId, action)
    timeout_s = settings.payment_extension_provider_timeout_seconds

    def call(operation: str, work: Callable[[], Awaitable[_T]]) -> Awaitable[_T]:
        return _call(provider, operation, work, deadline, timeout_s)

    def final(answer: Approved | Declined) -> PaymentExtensionResult:
        if isinstance(answer, Approved):
            return _result(request, tender, action, Outcome.SUCCEEDED, approved=answer)
        return _result(
            request,
            tender,
            action,
            Outcome.DECLINED,
            reference=answer.reference,
            reason=answer.reason,
            message=answer.message or None,
        )

    amount, reference = request.amount, request.reference
    try:
        if action is Action.PAYMENT:
            assert amount is not None  # request_problem checked it
            answer = await call(
                "pay",
                lambda: provider.pay(
                    PaymentInput(
                        tender=tender,
                        amount=amount,
                        capture=request.captureMode == "charge",
                        card_token=request.card.token if request.card else None,
                        request_id=request.requestId,
                        payment_id=request.paymentId,
                    ),
                    key,
                ),
            )
            asked = 0
            while isinstance(answer, NeedsPrompt):
                asked += 1
                prompt = answer
                response = None
                if asked <= settings.payment_extension_max_prompts:
                    response = await _ask(
                        request,
                        prompt,
                        contract.prompt_request_id(request.requestId, asked),
                        instore,
                        prompts,
                        settings.payment_extension_prompt_max_seconds,
                    )
                if response is None or response == "cancel":
                    cancel_key = contract.idempotency_key(request.requestId, Action.CANCEL)
                    await call("cancel", partial(provider.cancel, prompt.reference, cancel_key))
                    reason = (
                        "too-many-prompts"
                        if asked > settings.payment_extension_max_prompts
                        else "prompt-unanswered"
                        if response is None
                        else "cancelled-by-colleague"
                    )
                    return _result(request, tender, action, Outcome.CANCELLED, reference=prompt.reference, reason=reason)
                answer = await call("resume", partial(provider.resume, prompt.reference, response, f"{key}-resume-{asked}"))
            return final(answer)
        if action is Action.CAPTURE:
            assert amount is not None and reference is not None
            return final(await call("capture", lambda: provider.capture(reference, amount, key)))
        if action is Action.CANCEL:
            assert reference is not None
            return final(await call("cancel", lambda: provider.cancel(reference, key)))
        if action is Action.REFUND:
            assert amount is not None and reference is not None
            return final(await call("refund", lambda: provider.refund(reference, amount, key)))
        currency = amount.currencyCode if amount else "EUR"
        token = request.card.token if request.card else None
        return final(await call("balance", lambda: provider.balance(token, currency, key)))
    except TimeoutError:
        log.warning("payment_provider.timed_out", provider=provider.name, request_id=request.requestId)
        return _result(
            request,
            tender,
            action,
            Outcome.TIMED_OUT,
            reason="provider-timeout",
            message=f"the provider did not answer within {timeout_s:g} s",
        )
    except ProviderDown as exc:
        log.warning("payment_provider.unavailable", provider=provider.name, request_id=request.requestId, error=str(exc))
        return _result(
            request,
            tender,
            action,
            Outcome.FAILED,
            reason="provider-unavailable",
            message="the payment provider could not be reached",
        )


async def _ask(
    request: contract.PaymentExtensionRequest,
    prompt: NeedsPrompt,
    prompt_id: str,
    instore: InStoreClient,
    prompts: PromptAnswers,
    max_seconds: float,
) -> str | None:
    """Post the prompt to statusUrl and wait up to its keepAlive (at most ``max_seconds``) for the colleague's answer:
    one of the prompt's option responses ("cancel" always counts); anything else is ignored. None: no answer came."""
    keep_alive_ms = max(1, min(prompt.keep_alive_ms, int(max_seconds * 1000)))
    valid = {option.response for option in prompt.options} | {"cancel"}
    waiting = prompts.expect(prompt_id)  # before posting: an answer cannot overtake the registration
    try:
        delivered = await instore.status(
            request.statusUrl,
            contract.Prompt(
                message=prompt.message, options=prompt.options, title=prompt.title, keepAlive=keep_alive_ms, requestId=prompt_id
            ),
            "prompt",
        )
        if not delivered:
            return None
        log.info("payment_extension.prompt_posted", request_id=request.requestId, prompt_id=prompt_id)
        loop = asyncio.get_running_loop()
        until = loop.time() + keep_alive_ms / 1000
        while True:
            try:
                answer = await asyncio.wait_for(waiting, max(0.0, until - loop.time()))
            except TimeoutError:
                return None
            if answer in valid:
                return answer
            log.warning("payment_extension.prompt_answer_ignored", prompt_id=prompt_id, reason="not an option")
            waiting = prompts.expect(prompt_id)
    finally:
        prompts.forget(prompt_id)


# -- the Payment in Composable Commerce ----------------------------------------------------------
_TRANSACTION_TYPE = {Action.CAPTURE: "Charge", Action.CANCEL: "CancelAuthorization", Action.REFUND: "Refund"}


def transaction_type(request: contract.PaymentExtensionRequest, action: Action) -> str | None:
    """The Transaction a request records: Charge / Authorization (payment by ``captureMode``), Charge (capture),
    CancelAuthorization, Refund; None for a balance inquiry."""
    if action is Action.PAYMENT:
        return "Charge" if request.captureMode == "charge" else "Authorization"
    return _TRANSACTION_TYPE.get(action)


def payment_actions(
    payment: Mapping[str, Any],
    request: contract.PaymentExtensionRequest,
    action: Action,
    tender: Tender,
    result: PaymentExtensionResult,
    provider: str,
    now_iso: str,
) -> list[dict[str, Any]]:
    """The update actions recording ``result`` on the Payment InStore created (delegated payment creation:
    https://docs.commercetools.com/instore/ — the processor fills the Payment and sets ``paymentStatus.interfaceCode``
    ``"Success"``): one Transaction (``interactionId`` = the provider's reference; not again when one of that type and
    interactionId exists) for a succeeded or declined request, the interface code (``Success`` or the reason), the
    payment interface and method. A cancelled, timed-out or failed request only sets the interface code: no money moved
    that we know of. Money: the request's amount (minor units + ISO 4217); a cancel uses the Payment's amountPlanned."""
    succeeded = result.status == Outcome.SUCCEEDED.value
    code = "Success" if succeeded else (result.reason or result.status)
    actions: list[dict[str, Any]] = []
    kind = transaction_type(request, action)
    if kind is not None and result.status in (Outcome.SUCCEEDED.value, Outcome.DECLINED.value):
        interaction = result.reference or f"instore-{request.requestId}"
        known = {(t.get("type"), t.get("interactionId")) for t in payment.get("transactions") or []}
        if (kind, interaction) not in known:
            money = msgspec.to_builtins(request.amount) if request.amount else payment.get("amountPlanned")
            money = {"centAmount": money["centAmount"], "currencyCode": money["currencyCode"]} if money else None
            if money is not None:
                actions.append(
                    {
                        "action": "addTransaction",
                        "transaction": {
                            "type": kind,
                            "amount": money,
                            "state": "Success" if succeeded else "Failure",
                            "interactionId": interaction,
                            "timestamp": now_iso,
                        },
                    }
                )
    status = payment.get("paymentStatus") or {}
    if status.get("interfaceCode") != code:
        actions.append({"action": "setStatusInterfaceCode", "interfaceCode": code})
    text = result.message or result.status
    if status.get("interfaceText") != text:
        actions.append({"action": "setStatusInterfaceText", "interfaceText": text})
    info = payment.get("paymentMethodInfo") or {}
    if action is Action.PAYMENT and info.get("paymentInterface") != provider:
        actions.append({"action": "setMethodInfoInterface", "interface": provider})
    if action is Action.PAYMENT and not info.get("method"):
        actions.append({"action": "setMethodInfoMethod", "method": tender.payment_method})
    return actions


async def check_payment(commerce: Commerce, request: contract.PaymentExtensionRequest, action: Action) -> dict[str, Any]:
    """The Payment ``request.paymentId``. Raises :class:`Unprocessable` unless it exists and its ``amountPlanned`` is in
    the request's currency (``payment-not-found``, ``currency-mismatch``), and for a payment that the amount is at most
    ``amountPlanned`` (``amount-exceeds-payment``: InStore creates one Payment per tender for its amount). Raises
    ``TransientError``."""
    assert request.paymentId is not None
    try:
        payment = (await commerce.request("GET", f"/payments/{request.paymentId}")).json()
    except NotFound as exc:
        raise Unprocessable("payment-not-found", f"no Payment {request.paymentId}") from exc
    except (InvalidInput, AuthenticationFailed) as exc:
        raise Unprocessable("payment-refused", f"Composable Commerce refused reading the Payment: {exc.status}") from exc
    planned = payment.get("amountPlanned") or {}
    if request.amount is not None and planned.get("currencyCode") not in (None, request.amount.currencyCode):
        raise Unprocessable(
            "currency-mismatch", f"the Payment is in {planned.get('currencyCode')}, the request in {request.amount.currencyCode}"
        )
    planned_cents = planned.get("centAmount")
    if (
        action is Action.PAYMENT
        and request.amount is not None
        and isinstance(planned_cents, int)
        and request.amount.centAmount > planned_cents
    ):
        raise Unprocessable(
            "amount-exceeds-payment", f"{request.amount.centAmount} is more than the Payment's amountPlanned {planned_cents}"
        )
    return dict(payment)


def already_paid(payment: Mapping[str, Any], request: contract.PaymentExtensionRequest, action: Action) -> bool:
    """True when a payment request finds the Payment already holding a successful Charge or Authorization it did not
    write: another request (a new requestId for the same tender) took the money already — charging again would
    charge twice. Ours is recognised by its idempotent provider reference only after the decision is saved, so this is
    asked before the provider, on a request seen for the first time."""
    if action is not Action.PAYMENT:
        return False
    return any(
        t.get("state") == "Success" and t.get("type") in ("Charge", "Authorization") for t in payment.get("transactions") or []
    )


TILL_REFUSALS = frozenset({"payment-not-found", "currency-mismatch", "amount-exceeds-payment"})
"""Refusals found before any money moves that InStore gets as a ``failed`` result (and the event), not a dead letter."""


async def record_on_payment(
    commerce: Commerce,
    request: contract.PaymentExtensionRequest,
    action: Action,
    tender: Tender,
    result: PaymentExtensionResult,
    provider: str,
    clock: Clock,
) -> None:
    """Write :func:`payment_actions` on the Payment ``request.paymentId``, re-reading on a concurrent change.
    Raises :class:`Unprocessable` (``payment-not-found``, ``payment-refused``) and ``TransientError``."""
    assert request.paymentId is not None
    for _ in range(5):
        try:
            payment = (await commerce.request("GET", f"/payments/{request.paymentId}")).json()
        except NotFound as exc:
            raise Unprocessable("payment-not-found", f"no Payment {request.paymentId}") from exc
        actions = payment_actions(payment, request, action, tender, result, provider, _now_iso(clock))
        if not actions:
            return
        try:
            await commerce.update("payments", request.paymentId, int(payment["version"]), actions)
            return
        except ConcurrentModification:
            continue
        except (InvalidInput, AuthenticationFailed) as exc:
            raise Unprocessable("payment-refused", f"Composable Commerce refused the update: {exc.status} {exc.code}") from exc
    raise Unprocessable("payment-contended", f"Payment {request.paymentId} kept changing under us")


# -- the whole request ---------------------------------------------------------------------------
def _decode(body: bytes, headers: Mapping[str, str]) -> tuple[contract.PaymentExtensionRequest, Tender, Action]:
    try:
        tender, action = Tender(headers.get(h.TENDER, "")), Action(headers.get(h.ACTION, ""))
        request = msgspec.json.decode(body, type=contract.PaymentExtensionRequest)
    except (ValueError, msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise Unprocessable("invalid-request", str(exc)[:300]) from exc
    missing = contract.request_problem(request, tender, action)
    if missing:
        raise Unprocessable("invalid-request", missing)
    return request, tender, action


async def _deliver(
    instore: InStoreClient, request: contract.PaymentExtensionRequest, result: PaymentExtensionResult, deadline: Deadline
) -> None:
    backoff = wait_random_exponential(multiplier=0.5, max=10)
    try:
        async for attempt in AsyncRetrying(
            stop=lambda _s: deadline.remaining() <= 0,
            wait=lambda s: min(backoff(s), max(deadline.remaining(), 0)),
            sleep=deadline.clock.sleep,
            retry=retry_if_exception_type(NotDelivered),
            reraise=True,
        ):
            with attempt:
                await instore.callback(request.callbackUrl, result, request.requestId)
    except NotDelivered as exc:
        raise Unprocessable("callback-undelivered", f"{exc}; replay the dead letter to deliver it") from exc
    except CallbackRefused as exc:
        raise Unprocessable("callback-refused", str(exc)) from exc
    except UrlNotAllowed as exc:
        raise Unprocessable("url-not-allowed", str(exc)) from exc


def result_event(
    request: contract.PaymentExtensionRequest, result: PaymentExtensionResult, provider: str, occurred_at: str
) -> contract.PaymentExtensionResultEvent:
    """The ``commerce.payment-extension-results.v1`` event of a decided request."""
    return contract.PaymentExtensionResultEvent(
        event_id=contract.event_id(request.requestId),
        request_id=request.requestId,
        tender=result.tender,
        action=result.action,
        status=result.status,
        payment_id=request.paymentId,
        cart_id=request.cartId,
        amount=request.amount,
        provider=provider,
        reference=result.reference,
        reason=result.reason,
        location_id=request.locationId,
        workstation_id=request.workstationId,
        occurred_at=occurred_at,
    )


async def handle_payment_request(
    body: bytes,
    headers: Mapping[str, str],
    *,
    provider: PaymentProvider,
    commerce: Commerce,
    instore: InStoreClient,
    prompts: PromptAnswers,
    publisher: EventPublisher,
    clock: Clock,
    settings: PaymentExtensionSettings,
    after_decided: Callable[[], None] | None = None,
) -> Handled:
    """Process one request from ``instore.payment-requests.v1`` (raw ``body``, Kafka ``headers``).

    Returns :class:`Handled` (an unknown Payment, another currency or an amount above ``amountPlanned``, found before
    any money moves, is a ``failed`` result with that reason, delivered like any other). Raises :class:`Unprocessable`
    (dead-letter it: ``invalid-request``, ``url-not-allowed`` — nothing sent anywhere —, ``request-id-reused``,
    the refusals above for a request resumed after a crash, ``payment-refused``,
    ``callback-undelivered``, ``callback-refused``), ``TransientError`` (Composable Commerce still down at the
    deadline) and :class:`~instore_shared.kafka.publisher.PublishFailed` (do not commit; it comes again).
    ``after_decided`` is the crash tests' hook (called once the decision is saved).
    """
    request, tender, action = _decode(body, headers)
    for field, url in (("statusUrl", request.statusUrl), ("callbackUrl", request.callbackUrl)):
        if not instore.allows(url):
            raise Unprocessable("url-not-allowed", f"{field} is not on PAYMENT_EXTENSION_ALLOWED_URLS")
    deadline = Deadline(settings.payment_extension_retry_seconds, clock)
    key, print_ = state_key(request.requestId, action), fingerprint(request, tender)
    stored = await retry_transient(lambda: _read_state(commerce, key), deadline, "read payment state")
    first_time = stored is None
    if stored is not None and stored.value.fingerprint != print_:
        raise Unprocessable("request-id-reused", f"requestId {request.requestId} was used for another {action.value}")
    if stored is None or stored.value.stage == Stage.PROCESSING.value:
        stored = await _decide(
            request,
            tender,
            action,
            key,
            print_,
            stored,
            provider=provider,
            commerce=commerce,
            instore=instore,
            prompts=prompts,
            clock=clock,
            settings=settings,
            deadline=deadline,
        )
        if after_decided is not None:
            after_decided()
    result, provider_name = stored.value.result, stored.value.provider
    assert result is not None  # decided, delivered or announced
    if stored.value.stage == Stage.DECIDED.value:
        await _deliver(instore, request, result, deadline)
        received = headers.get(h.RECEIVED_AT)
        if received:
            with_z = received.replace("Z", "+00:00")
            with contextlib.suppress(ValueError):
                metrics.PAYMENT_REQUEST_TO_CALLBACK.labels(action.value).observe(
                    max(0.0, clock.now() - datetime.fromisoformat(with_z).timestamp())
                )
        stored = await _advance(commerce, key, stored, Stage.DELIVERED, deadline)
        log.info("payment_extension.delivered", request_id=request.requestId, status=result.status)
    if stored.value.stage == Stage.DELIVERED.value:
        event = result_event(request, result, provider_name, stored.value.decidedAt)
        await publisher.publish(
            msgspec.json.encode(event),
            settings.topic_names().name(PAYMENT_EXTENSION_RESULTS),
            key=contract.routing_key(request).encode(),
            correlation_id=headers.get(h.CORRELATION_ID),
            headers={h.MESSAGE_TYPE: contract.RESULT_MESSAGE_TYPE, h.CONTENT_TYPE: h.JSON, "event-id": event.event_id},
        )
        stored = await _advance(commerce, key, stored, Stage.ANNOUNCED, deadline)
        metrics.PAYMENT_EXTENSION_RESULTS.labels(tender.value, action.value, result.status).inc()
    return Handled(result=result, first_time=first_time)


async def _decide(
    request: contract.PaymentExtensionRequest,
    tender: Tender,
    action: Action,
    key: str,
    print_: str,
    stored: _Stored | None,
    *,
    provider: PaymentProvider,
    commerce: Commerce,
    instore: InStoreClient,
    prompts: PromptAnswers,
    clock: Clock,
    settings: PaymentExtensionSettings,
    deadline: Deadline,
) -> _Stored:
    """From nothing (or ``processing``, after a crash) to ``decided``: check the Payment, mark ``processing``, ask the
    provider, record on the Payment, save the decision. Returns the saved state (another delivery's, if it won)."""
    delegated = bool(settings.payment_extension_delegated and request.paymentId and action is not Action.BALANCE)
    payment = None
    result: PaymentExtensionResult | None = None
    if delegated:
        # before any money moves: a Payment we could not record on is refused, not charged
        try:
            payment = await retry_transient(lambda: check_payment(commerce, request, action), deadline, "read payment")
        except Unprocessable as exc:
            if stored is not None or exc.reason not in TILL_REFUSALS:
                raise  # a resumed request may have moved money: an operator looks at it (dead letter)
            # first time, nothing moved: InStore's payment step gets the refusal at once instead of waiting for its timeout
            log.warning("payment_extension.refused", request_id=request.requestId, reason=exc.reason)
            result = _result(request, tender, action, Outcome.FAILED, reason=exc.reason, message=exc.detail)
            delegated = False
    if stored is None and result is None:
        if payment is not None and already_paid(payment, request, action):
            # a Success Charge/Authorization that is not ours (we have never marked processing): another request took
            # the money for this tender; charging again would charge twice
            log.warning("payment_extension.already_paid", request_id=request.requestId, payment_id=request.paymentId)
            result = _result(
                request,
                tender,
                action,
                Outcome.DECLINED,
                reason="payment-already-charged",
                message="the Payment already holds a successful charge; nothing was charged",
            )
            delegated = False  # nothing to record: no money moved
        else:
            marker = _State(stage=Stage.PROCESSING.value, provider=provider.name, fingerprint=print_)
            try:
                version = await retry_transient(
                    lambda: _write_state(commerce, key, marker, 0), deadline, "mark payment processing"
                )
                stored = _Stored(version=version, value=marker)
            except ConcurrentModification:  # another delivery got here first (a rebalance): same key, same money
                stored = await retry_transient(lambda: _read_state(commerce, key), deadline, "read payment state")
                assert stored is not None
                if stored.value.stage != Stage.PROCESSING.value:
                    return stored
    if result is None:
        await instore.status(
            request.statusUrl,
            contract.Progress(message=f"{tender.instore_type}: {action.value} in progress", requestId=request.requestId),
            "progress",
        )
        result = await run_provider(
            request, tender, action, provider=provider, instore=instore, prompts=prompts, deadline=deadline, settings=settings
        )
    if delegated:
        decided = result
        await retry_transient(
            lambda: record_on_payment(commerce, request, action, tender, decided, provider.name, clock),
            deadline,
            "record payment",
        )
    state = _State(
        stage=Stage.DECIDED.value, provider=provider.name, fingerprint=print_, result=result, decidedAt=_now_iso(clock)
    )
    expected = stored.version if stored is not None else 0
    try:
        version = await retry_transient(lambda: _write_state(commerce, key, state, expected), deadline, "save payment state")
    except ConcurrentModification:  # another delivery decided meanwhile: take its decision
        fresh = await retry_transient(lambda: _read_state(commerce, key), deadline, "read payment state")
        assert fresh is not None
        return fresh
    log.info("payment_extension.decided", request_id=request.requestId, status=result.status, reason=result.reason)
    return _Stored(version=version, value=state)


async def _advance(commerce: Commerce, key: str, stored: _Stored, stage: Stage, deadline: Deadline) -> _Stored:
    state = _State(
        stage=stage.value,
        provider=stored.value.provider,
        fingerprint=stored.value.fingerprint,
        result=stored.value.result,
        decidedAt=stored.value.decidedAt,
    )
    try:
        version = await retry_transient(
            lambda: _write_state(commerce, key, state, stored.version), deadline, f"mark payment {stage.value}"
        )
    except ConcurrentModification:  # another delivery advanced it: what it wrote is at least as far
        fresh = await retry_transient(lambda: _read_state(commerce, key), deadline, "read payment state")
        assert fresh is not None
        return fresh
    return _Stored(version=version, value=state)
