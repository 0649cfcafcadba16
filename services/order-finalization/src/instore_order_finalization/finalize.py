"""Decide and apply: one payment webhook → at most one Order for its Cart.

The webhook is only a trigger (architecture principle 2): the cart id comes from it, the
state from Composable Commerce. Exactly one Order per cart, in either ``ORDER_CREATION`` mode
(who creates the Order is not stated by InStore's docs — assumed, see
../shared/reference/instore-contract.md §9 — so both are supported):

- ``integration`` (:func:`finalize`): the ``orderNumber`` is deterministic, the Order is looked
  up (by number, then by cart) before it is created, and a duplicate number or an
  already-ordered cart counts as success. A 409 re-reads the cart and tries again (bounded).
- ``instore`` (:func:`await_instore_order`): InStore creates the Order; this never does. The
  Order is looked up by number and — always — by cart (InStore may number it its own way); a
  paid cart without one yet is polled for a bounded wait, then dead-lettered
  (``instore-order-missing``).

Errors that can never succeed raise :class:`PermanentFailure` for the caller to dead-letter.
"""

from __future__ import annotations

import contextlib
import enum
import re
from dataclasses import dataclass
from typing import Protocol

import msgspec

from instore_order_finalization import rules
from instore_order_finalization.model import Cart, OrderRef, cart_decoder, order_decoder
from instore_shared.clock import Clock
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
from instore_shared.kafka.consumer import Deadline, Unprocessable, retry_transient
from instore_shared.logging import get_logger

log = get_logger(__name__)

EXPAND_PAYMENTS = ("paymentInfo.payments[*]",)

INSTORE_ORDER_POLL_SECONDS = 1.0
"""ORDER_CREATION=instore: seconds between two looks for InStore's Order while a paid cart has none (3 reads each)."""


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
    """``integration``: this webhook created the cart's Order."""
    ALREADY_ORDERED = "already-ordered"
    """The cart's Order was there when the webhook was processed (a replay; or, ``instore``, InStore created it first)."""
    ORDER_APPEARED = "order-appeared"
    """``instore``: the cart was paid without an Order; InStore's Order appeared while this webhook waited for it."""
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
    """``ORDER_CREATION=integration``: process one webhook's raw ``body``, creating the cart's Order
    when it is paid; ``currency`` is the environment's ISO 4217 code.

    Returns the :class:`Result`; raises :class:`PermanentFailure` for what must be
    dead-lettered (including any refusal of Composable Commerce other than "not found"
    that is not transient), and lets ``TransientError`` (Composable Commerce unavailable
    after the client's bounded retries) through for the caller to dead-letter.
    """
    cart_ref = _payment_cart_ref(body)
    if cart_ref is None:
        return Result(Outcome.NOT_A_PAYMENT)
    for _ in range(max_conflicts):
        cart = await _read_cart(commerce, cart_ref)
        number = rules.order_number(cart, order_number_field)
        existing = await _existing_order(commerce, cart, number)
        if existing is not None:
            return Result(Outcome.ALREADY_ORDERED, cart, existing)
        if not _paid(cart, currency):
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


@dataclass(frozen=True, slots=True)
class _NoOrderYet:
    """``instore``: the cart (as read) is paid, and no Order numbered ``number`` nor of the cart exists yet."""

    cart: Cart
    number: str


async def await_instore_order(
    body: bytes,
    commerce: OrderCommerce,
    order_number_field: str,
    currency: str,
    *,
    clock: Clock,
    wait_seconds: float,
    deadline: Deadline,
    poll_seconds: float = INSTORE_ORDER_POLL_SECONDS,
) -> Result:
    """``ORDER_CREATION=instore``: find the Order InStore created for the webhook's cart; never create one.

    Per look: read the cart (Payments expanded), then its Order by the cart's order number
    (:func:`rules.order_number`) and, whatever the cart's state, by cart. Returns
    ``ALREADY_ORDERED`` (found at the first look), ``AWAITING_PAYMENT`` (no Order, and the
    successful charges do not cover the total: no wait) or ``NOT_A_PAYMENT``. A paid cart
    without an Order is looked at again every ``poll_seconds`` on ``clock`` for
    ``wait_seconds`` — never past ``deadline``, the webhook's one deadline, which every look
    also retries within (``TransientError``) — and returns ``ORDER_APPEARED`` once the Order is
    there. Raises :class:`PermanentFailure` ``instore-order-missing`` (naming the cart, the
    number and the wait) when it never appears, and the other permanent failures of
    :func:`finalize` (``cart-not-found``, ``cart-not-active`` without an Order, ``cart-empty``,
    ``wrong-currency``…).
    """
    cart_ref = _payment_cart_ref(body)
    if cart_ref is None:
        return Result(Outcome.NOT_A_PAYMENT)

    async def look() -> Result | _NoOrderYet:
        cart = await _read_cart(commerce, cart_ref)
        number = rules.order_number(cart, order_number_field)
        existing = await _existing_order(commerce, cart, number, always_by_cart=True)
        if existing is not None:
            return Result(Outcome.ALREADY_ORDERED, cart, existing)
        if not _paid(cart, currency):
            return Result(Outcome.AWAITING_PAYMENT, cart)
        return _NoOrderYet(cart, number)

    seen = await retry_transient(look, deadline, "order")
    if isinstance(seen, Result):
        return seen
    pending, wait = seen, max(0.0, min(wait_seconds, deadline.remaining()))
    started, polls = clock.monotonic(), 0
    log.info("finalize.awaiting_instore_order", cart_id=pending.cart.id, order_number=pending.number, wait_s=wait)
    while (left := started + wait - clock.monotonic()) > 0:
        await clock.sleep(min(poll_seconds, left))
        polls += 1
        seen = await retry_transient(look, deadline, "order")
        if isinstance(seen, _NoOrderYet):
            pending = seen
            continue
        if seen.outcome is not Outcome.ALREADY_ORDERED:
            return seen  # e.g. a charge reversed meanwhile: awaiting payment again
        waited = round(clock.monotonic() - started, 3)
        log.info("finalize.instore_order_appeared", cart_id=pending.cart.id, polls=polls, waited_s=waited)
        return Result(Outcome.ORDER_APPEARED, seen.cart, seen.order)
    raise PermanentFailure(
        "instore-order-missing",
        f"cart {pending.cart.id} is paid but has no Order (none numbered {pending.number!r}, none created from the cart) "
        f"after waiting {clock.monotonic() - started:.1f} s for InStore to create it "
        f"(ORDER_CREATION=instore, ORDER_FINALIZATION_INSTORE_ORDER_WAIT_SECONDS={wait_seconds:g})",
    )


def _payment_cart_ref(body: bytes) -> str | None:
    """The cart id or key of a payment webhook, or None for another kind of webhook.

    Raises :class:`PermanentFailure` (``bad-body``, ``no-cart-id``, ``bad-cart-id``).
    """
    webhook = parse_webhook(body)
    if webhook is None:
        return None
    cart_ref = webhook.cart_ref()
    if not cart_ref:
        raise PermanentFailure("no-cart-id", f"a {webhook.type} webhook without cartId")
    if not _CART_REF.fullmatch(cart_ref):
        raise PermanentFailure("bad-cart-id", "cartId is not a commercetools id or key")
    return cart_ref


def _paid(cart: Cart, currency: str) -> bool:
    """Whether ``cart`` (without an Order) is covered by its successful charges (:func:`rules.coverage`).

    Raises :class:`PermanentFailure` for a cart that can never be ordered: not ``Active``
    (``cart-not-active``), no line items (``cart-empty``), another currency (``wrong-currency``).
    """
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
        log.info("finalize.awaiting_payment", cart_id=cart.id, charged=cover.charged, total=cover.total, currency=cover.currency)
    return cover.covered


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


async def _existing_order(commerce: OrderCommerce, cart: Cart, number: str, always_by_cart: bool = False) -> OrderRef | None:
    """The Order created from ``cart``: the one numbered ``number`` when it was made from this cart, else the
    one found by cart — looked up by cart only when the cart is not ``Active`` unless ``always_by_cart``
    (``instore``: InStore may have used its own number, and may have ordered the cart after it was read).

    Raises :class:`PermanentFailure` ``order-number-taken`` when ``number`` belongs to another cart's (or an
    imported) Order and this cart has no Order of its own: announcing that Order would tell downstream this
    sale was ordered, with the other's money, and a new Order cannot take the number.
    """
    numbered: OrderRef | None = None
    with contextlib.suppress(NotFound):
        numbered = order_decoder.decode((await commerce.get_order_by_order_number(number)).content)
    if numbered is not None and numbered.cart is not None and numbered.cart.id == cart.id:
        return numbered
    if cart.cartState != "Active" or always_by_cart:
        by_cart = await commerce.find_order_by_cart(cart.id)
        if by_cart is not None:
            return order_decoder.decode(by_cart.content)
    # (an Active cart has no Order: Composable Commerce turns an ordered cart Ordered)
    if numbered is not None:
        other = numbered.cart.id if numbered.cart else "none (imported)"
        raise PermanentFailure(
            "order-number-taken", f"order number {number} is Order {numbered.id} of cart {other}, not of cart {cart.id}"
        )
    return None
