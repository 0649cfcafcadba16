"""Decide and apply: one payment webhook → at most one Order for its Cart.

The webhook is only a trigger (architecture principle 2): the cart id comes from it, the
state from Composable Commerce. Exactly one Order per cart: the ``orderNumber`` is
deterministic, the Order is looked up (by number, then by cart) before it is created, and a
duplicate number or an already-ordered cart counts as success. A 409 re-reads the cart and
tries again (bounded). Errors that can never succeed raise :class:`PermanentFailure` for
the caller to dead-letter.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from typing import Protocol

import msgspec

from instore_order_finalization import rules
from instore_order_finalization.model import Cart, OrderRef, cart_decoder, order_decoder
from instore_shared.commercetools.client import ApiResponse
from instore_shared.commercetools.errors import (
    AuthenticationFailed,
    ConcurrentModification,
    DuplicateField,
    InvalidInput,
    NotFound,
)
from instore_shared.contract.instore_webhooks import (
    PAYMENT_WEBHOOK_TYPES,
    PaymentWebhook,
    decode_webhook,
)
from instore_shared.kafka.consumer import Unprocessable
from instore_shared.logging import get_logger

log = get_logger(__name__)

EXPAND_PAYMENTS = ("paymentInfo.payments[*]",)


class OrderCommerce(Protocol):
    """What finalization needs from Composable Commerce (``CommercetoolsClient`` implements it)."""

    async def find_cart(self, ref: str, expand: tuple[str, ...] = ()) -> ApiResponse: ...
    async def get_order_by_order_number(self, order_number: str) -> ApiResponse: ...
    async def find_order_by_cart(self, cart_id: str) -> ApiResponse | None: ...
    async def create_order_from_cart(
        self, cart_id: str, cart_version: int, order_number: str, payment_state: str
    ) -> ApiResponse: ...


class Outcome(enum.Enum):
    """What a webhook led to."""

    ORDER_CREATED = "order-created"
    ALREADY_ORDERED = "already-ordered"
    AWAITING_PAYMENT = "awaiting-payment"
    NOT_A_PAYMENT = "not-a-payment"


class PermanentFailure(Unprocessable):
    """This webhook can never be processed as it is (no cart id, cart unknown, bad body…): dead-letter it."""


@dataclass(frozen=True, slots=True)
class Result:
    """The outcome, and for an ordered cart the Cart (as read) and the Order."""

    outcome: Outcome
    cart: Cart | None = None
    order: OrderRef | None = None


_CART_REF = re.compile(r"[A-Za-z0-9_-]{2,256}")


def parse_webhook(body: bytes) -> PaymentWebhook | None:
    """The payment webhook's fields, or None for another kind of webhook.

    Raises :class:`PermanentFailure` for a body that is not a JSON object, or a payment
    webhook whose fields have the wrong types.
    """
    return decode_webhook(body, PAYMENT_WEBHOOK_TYPES, PaymentWebhook, PermanentFailure)


async def finalize(
    body: bytes, commerce: OrderCommerce, order_number_field: str, currency: str, max_conflicts: int = 5
) -> Result:
    """Process one webhook's raw ``body``; ``currency`` is the environment's ISO 4217 code.

    Returns the :class:`Result`; raises :class:`PermanentFailure` for what must be
    dead-lettered (including any refusal of Composable Commerce other than "not found"
    that is not transient), and lets ``TransientError`` (Composable Commerce unavailable
    after the client's bounded retries) through for the caller to dead-letter.
    """
    webhook = parse_webhook(body)
    if webhook is None:
        return Result(Outcome.NOT_A_PAYMENT)
    cart_ref = webhook.cart_ref()
    if not cart_ref:
        raise PermanentFailure("no-cart-id", f"a {webhook.type} webhook without cartId")
    if not _CART_REF.fullmatch(cart_ref):
        raise PermanentFailure("bad-cart-id", "cartId is not a commercetools id or key")
    for _ in range(max_conflicts):
        cart = await _read_cart(commerce, cart_ref)
        number = rules.order_number(cart, order_number_field)
        existing = await _existing_order(commerce, cart, number)
        if existing is not None:
            return Result(Outcome.ALREADY_ORDERED, cart, existing)
        if cart.cartState != "Active":
            raise PermanentFailure("cart-not-active", f"cart {cart.id} is {cart.cartState} and has no Order")
        if not cart.lineItems and not cart.customLineItems:
            raise PermanentFailure("cart-empty", f"cart {cart.id} has no line items")
        if cart.totalPrice.currencyCode != currency:
            raise PermanentFailure(
                "wrong-currency", f"cart {cart.id} is in {cart.totalPrice.currencyCode}, this InStore environment uses {currency}"
            )
        cover = rules.coverage(cart)
        if not cover.covered:
            log.info(
                "finalize.awaiting_payment", cart_id=cart.id, charged=cover.charged, total=cover.total, currency=cover.currency
            )
            return Result(Outcome.AWAITING_PAYMENT, cart)
        try:
            created = await commerce.create_order_from_cart(cart.id, cart.version, number, "Paid")
        except ConcurrentModification:
            log.info("finalize.conflict", cart_id=cart.id)
            continue  # the cart changed meanwhile: read it again and decide again
        except DuplicateField:
            found = await _existing_order(commerce, cart, number)
            if found is not None:
                return Result(Outcome.ALREADY_ORDERED, cart, found)
            raise
        except InvalidInput as exc:
            found = await _existing_order(commerce, cart, number)
            if found is not None:  # e.g. "already ordered" by a concurrent worker
                return Result(Outcome.ALREADY_ORDERED, cart, found)
            raise PermanentFailure("order-refused", f"{exc.code}: {exc.message}") from exc
        order = order_decoder.decode(created.content)
        log.info("finalize.order_created", cart_id=cart.id, order_id=order.id, order_number=order.orderNumber)
        return Result(Outcome.ORDER_CREATED, cart, order)
    raise PermanentFailure("too-many-conflicts", f"cart {cart_ref} kept changing")


async def _read_cart(commerce: OrderCommerce, ref: str) -> Cart:
    try:
        response = await commerce.find_cart(ref, EXPAND_PAYMENTS)
    except NotFound as exc:
        raise PermanentFailure("cart-not-found", f"no cart with id or key {ref!r}") from exc
    except (InvalidInput, AuthenticationFailed) as exc:
        raise PermanentFailure("commerce-refused", f"{exc.status} {exc.code}") from exc
    try:
        return cart_decoder.decode(response.content)
    except msgspec.ValidationError as exc:
        raise PermanentFailure("unexpected-cart-shape", str(exc)) from exc


async def _existing_order(commerce: OrderCommerce, cart: Cart, number: str) -> OrderRef | None:
    try:
        return order_decoder.decode((await commerce.get_order_by_order_number(number)).content)
    except NotFound:
        pass
    if cart.cartState == "Active":
        return None  # Composable Commerce turns an ordered cart Ordered: no Order under another number
    by_cart = await commerce.find_order_by_cart(cart.id)
    return order_decoder.decode(by_cart.content) if by_cart is not None else None
