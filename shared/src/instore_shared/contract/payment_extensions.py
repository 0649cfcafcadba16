"""InStore payment extensions: every shape we assume, in one place.

Documented (https://docs.commercetools.com/instore/ — payment processors; see
../shared/reference/instore-contract.md §6): a *Custom* payment processor registered in InStore
Center points at the retailer's extension URL; InStore POSTs the initiating request (JSON),
signed like webhooks, and waits at most the processor's ``timeout`` (15,000 ms in the
documented example) for a 200; the extension continues asynchronously, posting progress and
prompts to the request's ``statusUrl`` (a prompt is the body itself:
``{"type": "prompt", "message", "title"?, "keepAlive"? ms, "requestId"?, "options": [{"text",
"response", "primary"?}]}``) and the final result, once, to its ``callbackUrl``. With
delegated payment creation (BankCard, GiftCard, Wallet, PayOnAccount) InStore creates a
minimal Payment (``amountPlanned`` only) and passes its id; the extension records the
transactions and sets ``paymentStatus.interfaceCode`` to ``"Success"``.

NOT documented — ASSUMED here (change them here only): the path segments of tenders and
actions, every body field below except the prompt's, the progress message, the shape of the
result posted to ``callbackUrl``, and where the colleague's answer to a prompt comes back
(``POST /instore/payment-extensions/prompt-answers``, signed like a webhook, body
:class:`PromptAnswer`).
"""

from __future__ import annotations

import enum
import uuid
from typing import Annotated, Literal

import msgspec

MESSAGE_TYPE = "payment-extension-request.v1"
"""``message-type`` header of the requests the gateway publishes to ``instore.payment-requests.v1``."""

ANSWER_MESSAGE_TYPE = "payment-prompt-answer.v1"
"""``message-type`` header of the prompt answers on ``instore.payment-prompt-answers.v1``."""

RESULT_MESSAGE_TYPE = "payment-extension-result.v1"
"""``message-type`` header of the events on ``commerce.payment-extension-results.v1``."""

_NAMESPACE = uuid.UUID("2b0c8f55-0f51-5e0e-9a57-3d0c1bb6b7a1")

SafeId = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9._:-]{1,256}$")]
"""An InStore or commercetools id or key: 1-256 of ``A-Za-z0-9._:-`` (in Kafka keys, Custom Object keys, idempotency keys)."""

Currency = Annotated[str, msgspec.Meta(pattern=r"^[A-Z]{3}$")]
"""An ISO 4217 currency code."""

Url = Annotated[str, msgspec.Meta(max_length=2048)]


class Tender(enum.Enum):
    """The tenders a Custom payment processor serves, by path segment; the value's ``type`` is InStore's
    ``integrationConfiguration.type`` (documented); the path segment is assumed."""

    BANK_CARD = "bank-card"
    GIFT_CARD = "gift-card"
    WALLET = "wallet"
    PAY_ON_ACCOUNT = "pay-on-account"

    @property
    def instore_type(self) -> str:
        """InStore's tender type: ``BankCard``, ``GiftCard``, ``Wallet`` or ``PayOnAccount``."""
        return {"bank-card": "BankCard", "gift-card": "GiftCard", "wallet": "Wallet", "pay-on-account": "PayOnAccount"}[
            self.value
        ]

    @property
    def payment_method(self) -> str:
        """``paymentMethodInfo.method`` we write on the Payment (assumed): CREDIT_CARD, GIFT_CARD, WALLET, ON_ACCOUNT."""
        return {"bank-card": "CREDIT_CARD", "gift-card": "GIFT_CARD", "wallet": "WALLET", "pay-on-account": "ON_ACCOUNT"}[
            self.value
        ]


class Action(enum.Enum):
    """What InStore asks of the extension (assumed names, path segments)."""

    PAYMENT = "payment"
    """Take money: charge, or authorize when ``captureMode`` is ``authorize``."""
    CAPTURE = "capture"
    """Capture an earlier authorization (``reference``)."""
    CANCEL = "cancel"
    """Void an authorization, or cancel an unfinished payment (``reference``)."""
    REFUND = "refund"
    """Give back (part of) an earlier charge (``reference``)."""
    BALANCE = "balance"
    """Gift cards only: what is left on the card."""


ACTIONS_OF: dict[Tender, frozenset[Action]] = {
    Tender.BANK_CARD: frozenset({Action.PAYMENT, Action.CAPTURE, Action.CANCEL, Action.REFUND}),
    Tender.GIFT_CARD: frozenset({Action.PAYMENT, Action.CANCEL, Action.REFUND, Action.BALANCE}),
    Tender.WALLET: frozenset({Action.PAYMENT, Action.CAPTURE, Action.CANCEL, Action.REFUND}),
    Tender.PAY_ON_ACCOUNT: frozenset({Action.PAYMENT, Action.CANCEL, Action.REFUND}),
}
"""The actions each tender serves (assumed). Anything else is answered 404."""


class Money(msgspec.Struct, frozen=True):
    """``centAmount`` minor units of ``currencyCode`` (ISO 4217), as commercetools writes money; the other fields of a
    commercetools ``TypedMoney`` (``type``, ``fractionDigits``) are accepted and ignored."""

    centAmount: Annotated[int, msgspec.Meta(ge=0, le=10**12)]
    currencyCode: Currency


class CardInput(msgspec.Struct, frozen=True):
    """What the terminal or InStore passes about the card or wallet (assumed): a provider token, never a PAN."""

    token: Annotated[str, msgspec.Meta(max_length=256)] | None = None


class PaymentExtensionRequest(msgspec.Struct, frozen=True):
    """The initiating request InStore POSTs (assumed shape except ``statusUrl``/``callbackUrl``)::

        {"requestId", "paymentId"?, "cartId"?, "amount"?: {"centAmount", "currencyCode"},
         "captureMode"?: "charge" | "authorize", "reference"?, "statusUrl", "callbackUrl",
         "locationId"?, "workstationId"?, "userId"?, "card"?: {"token"?}}

    ``requestId`` is InStore's id of this request: InStore repeats a request after connection
    problems with the same id, so it keys everything we do once (the provider's idempotency key,
    the Custom Object of the outcome, the callback). ``paymentId`` is the Payment InStore created
    (delegated payment creation). ``reference`` is the provider's reference of the earlier payment
    a capture, cancel or refund acts on. Unknown fields are ignored (kept in the raw bytes on Kafka).
    """

    requestId: SafeId
    statusUrl: Url
    callbackUrl: Url
    paymentId: SafeId | None = None
    cartId: SafeId | None = None
    amount: Money | None = None
    captureMode: Literal["charge", "authorize"] = "charge"
    reference: Annotated[str, msgspec.Meta(min_length=1, max_length=256)] | None = None
    locationId: Annotated[str, msgspec.Meta(max_length=256)] | None = None
    workstationId: Annotated[str, msgspec.Meta(max_length=256)] | None = None
    userId: Annotated[str, msgspec.Meta(max_length=256)] | None = None
    card: CardInput | None = None


def request_problem(request: PaymentExtensionRequest, tender: Tender, action: Action) -> str | None:
    """What is missing for ``action`` (a sentence), or None when the request is complete."""
    if action not in ACTIONS_OF[tender]:
        return f"{tender.value} does not serve {action.value}"
    if action in (Action.PAYMENT, Action.REFUND, Action.CAPTURE) and request.amount is None:
        return f"{action.value} needs amount"
    if action in (Action.PAYMENT, Action.REFUND, Action.CAPTURE, Action.CANCEL) and request.paymentId is None:
        return f"{action.value} needs paymentId (the Payment InStore created)"
    if action in (Action.CAPTURE, Action.CANCEL, Action.REFUND) and request.reference is None:
        return f"{action.value} needs reference (the provider's reference of the payment it acts on)"
    if request.amount is not None and request.amount.centAmount == 0 and action is not Action.BALANCE:
        return "amount must be more than 0"
    return None


def routing_key(request: PaymentExtensionRequest) -> str:
    """The Kafka key: the Payment id, else the cart id, else the request id (one payment's requests stay in order)."""
    return request.paymentId or request.cartId or request.requestId


# -- what we post to statusUrl -----------------------------------------------------------
class PromptOption(msgspec.Struct, frozen=True, omit_defaults=True):
    """One button of a prompt (documented): its label, the ``response`` sent back, whether it is the primary one."""

    text: str
    response: str
    primary: bool = False


class Prompt(msgspec.Struct, frozen=True, omit_defaults=True, tag_field="type", tag="prompt"):
    """A prompt in InStore's payment stepper, posted to ``statusUrl`` as the body itself (documented).

    ``keepAlive`` is how long (ms) InStore shows it; ``requestId`` identifies the prompt, so the
    answer can be routed back to the waiting payment (:class:`PromptAnswer`)."""

    message: str
    options: list[PromptOption]
    title: str | None = None
    keepAlive: int | None = None
    requestId: str | None = None


class Progress(msgspec.Struct, frozen=True, omit_defaults=True, tag_field="type", tag="progress"):
    """A progress line in InStore's payment stepper (assumed shape): ``{"type": "progress", "message", "requestId"}``."""

    message: str
    requestId: str | None = None


class PromptAnswer(msgspec.Struct, frozen=True):
    """The colleague's answer to a prompt (ASSUMED route and shape):
    ``POST /instore/payment-extensions/prompt-answers`` ``{"requestId": <the prompt's requestId>, "response"}``."""

    requestId: SafeId
    response: Annotated[str, msgspec.Meta(min_length=1, max_length=256)]


def prompt_request_id(request_id: str, n: int) -> str:
    """The id of the ``n``-th prompt of the payment request ``request_id`` (deterministic: a resumed request asks again
    under the same id)."""
    return f"{request_id}:prompt:{n}"


# -- the result: posted to callbackUrl and published ----------------------------------------
class Outcome(enum.Enum):
    """Final state of a request (the state machine's end states)."""

    SUCCEEDED = "succeeded"
    DECLINED = "declined"
    CANCELLED = "cancelled"
    TIMED_OUT = "timed-out"
    FAILED = "failed"
    """The provider could not be reached or answered nonsense within the budget: no money moved that we know of."""


class CardDetails(msgspec.Struct, frozen=True, omit_defaults=True):
    """What a receipt shows of a card (InStore's receipt has ``charge_card.last4``): last four digits and brand."""

    last4: str | None = None
    brand: str | None = None


class PaymentExtensionResult(msgspec.Struct, frozen=True, omit_defaults=True):
    """The final result, POSTed once to ``callbackUrl`` (assumed shape; header ``Idempotency-Key: <requestId>``,
    signed like webhooks in ``X-Signature``)::

        {"requestId", "tender", "action", "status": "succeeded"|"declined"|"cancelled"|"timed-out"|"failed",
         "paymentId"?, "amount"?, "reference"?, "approvalCode"?, "card"?: {"last4", "brand"},
         "balance"?, "reason"?, "message"?}

    ``reference`` is the provider's reference (also the Transaction's ``interactionId``); ``reason``
    a machine-readable decline or failure code; ``balance`` the gift card's balance (balance action).
    """

    requestId: str
    tender: str
    action: str
    status: str
    paymentId: str | None = None
    amount: Money | None = None
    reference: str | None = None
    approvalCode: str | None = None
    card: CardDetails | None = None
    balance: Money | None = None
    reason: str | None = None
    message: str | None = None


class PaymentExtensionResultEvent(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """``commerce.payment-extension-results.v1`` (our contract, for downstream teams): one per InStore request,
    keyed by the Payment id (else the request id); ``eventId`` derived from the request id (deduplicate by it)."""

    event_id: str
    request_id: str
    tender: str
    action: str
    status: str
    payment_id: str | None
    cart_id: str | None
    amount: Money | None
    provider: str
    reference: str | None
    reason: str | None
    location_id: str | None
    workstation_id: str | None
    occurred_at: str
    type: str = "payment-extension-result"


def event_id(request_id: str) -> str:
    """The deterministic event id of the request ``request_id`` (UUID5)."""
    return str(uuid.uuid5(_NAMESPACE, f"payment-extension-result:{request_id}"))


def idempotency_key(request_id: str, action: Action) -> str:
    """The provider's idempotency key of one request: from InStore's ids only, never from time or randomness, so a
    redelivered or repeated request can never move money twice."""
    return f"instore-{action.value}-{request_id}"
