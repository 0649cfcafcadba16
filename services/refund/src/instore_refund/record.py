"""Record one finalized refund webhook on the original Orders and Payments, then say what to announce.

The webhook is only a trigger (architecture principle 2): it names the return cart, the
refunded tenders and optionally the lines; the purchase pointers, the Orders and the
Payments are read from Composable Commerce. Steps, each safe to repeat:

1. read the return cart and each line's original Order and line item (the purchase
   Custom Fields, names from settings), each Order with its Payments expanded;
2. plan everything (:mod:`instore_refund.plan`) — a :class:`~instore_refund.plan.Refused`
   refund writes nothing;
3. write the return items (one ``addReturnInfo`` per Order), then the ``Refund``
   transactions (one update per Payment); a 409 re-reads and plans again, and what is
   already there (return item keys, transaction ``interactionId`` s) is not written twice;
4. set this refund's return items ``paymentState: Refunded`` (the contract's business effect,
   ../shared/reference/instore-contract.md §5) once its Refund transactions are written.

Announcing ``commerce.refunds.completed.v1`` is not recorded here and never in a business
field: the caller keeps that marker in a Custom Object (:mod:`instore_shared.announcements`).
``Refunded`` says "refunded", not "announced": a replay finds everything written and records
nothing; a second refund of the same returned lines (new refund ids, items already
``Refunded``) is refused (:func:`check_replay`).

Return items go first: two return carts racing for the same bought line are then stopped
by the Order's version (the second re-plans and is refused), before any Refund is written.

Assumed — see ../shared/reference/instore-contract.md §5: the refund webhook's shape
(:class:`instore_shared.contract.instore_webhooks.RefundWebhook`).
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import msgspec

from instore_refund.plan import (
    Refused,
    ReturnLine,
    TenderRefund,
    Update,
    plan_refunded_marks,
    plan_refunds,
    plan_returns,
    return_item_key,
)
from instore_shared.commercetools.client import ApiResponse
from instore_shared.commercetools.errors import (
    AuthenticationFailed,
    ConcurrentModification,
    DuplicateField,
    InvalidInput,
    NotFound,
)
from instore_shared.contract.instore_webhooks import (
    REFUND_WEBHOOK_TYPES,
    RefundWebhook,
    decode_webhook,
)
from instore_shared.kafka.consumer import KeyedLocks
from instore_shared.logging import get_logger

log = get_logger(__name__)

EXPAND_PAYMENTS = ("paymentInfo.payments[*]",)
MAX_REFUNDS = 100
"""Refunded tenders one webhook may name (a Payment update takes at most 500 actions)."""
MAX_LINES = 250
"""Return lines one webhook may cover (each becomes a ``setReturnPaymentState`` action, 500 at most)."""
_REF = re.compile(r"[A-Za-z0-9_-]{2,256}")
_ID = re.compile(r"[A-Za-z0-9._:-]{1,256}")


class RefundCommerce(Protocol):
    """What the refund service needs from Composable Commerce (``CommercetoolsClient`` implements it)."""

    async def find_cart(self, ref: str, expand: tuple[str, ...] = ()) -> ApiResponse: ...
    async def find_order(self, ref: str, expand: tuple[str, ...] = ()) -> ApiResponse: ...
    async def update(self, resource: str, resource_id: str, version: int, actions: list[dict[str, Any]]) -> ApiResponse: ...


@dataclass(frozen=True, slots=True)
class LineFields:
    """The project's line item Custom Field names (LINEITEM_PURCHASEORDERID_FIELD,
    LINEITEM_PURCHASELINEITEM_ID_FIELD, LINEITEM_RETURNCOMMENT_FIELD)."""

    purchase_order: str
    purchase_line: str
    return_comment: str


class Outcome(enum.Enum):
    """What a webhook led to."""

    RECORDED = "recorded"
    ALREADY_RECORDED = "already-recorded"
    VERIFIED = "verified"
    """REFUND_MODE=instore-managed: what InStore wrote matches the webhook (nothing written by us)."""
    NOT_A_REFUND = "not-a-refund"


@dataclass(frozen=True, slots=True)
class Found:
    """What REFUND_MODE=instore-managed verification matched on one original Order: per return line
    the return item found for it (``(line, return item JSON)``), per tender the Refund transaction
    (``(tender, Payment id, transaction JSON)``)."""

    items: list[tuple[ReturnLine, dict[str, Any]]] = field(default_factory=list)
    refunds: list[tuple[TenderRefund, str, dict[str, Any]]] = field(default_factory=list)


@dataclass(slots=True)
class Recorded:
    """What was recorded: the return cart, its lines (``order_ref`` = the Order id), the tender
    refunds, and the Orders touched (by id)."""

    outcome: Outcome
    return_cart: dict[str, Any] = field(default_factory=dict)
    lines: list[ReturnLine] = field(default_factory=list)
    refunds: list[TenderRefund] = field(default_factory=list)
    order_ids: list[str] = field(default_factory=list)
    orders: dict[str, dict[str, Any]] = field(default_factory=dict)
    """The Orders by id as last read, after this refund's return items and Refunds were written
    (Payments expanded): what the events are made of, without reading them again."""
    found: dict[str, Found] | None = None
    """REFUND_MODE=instore-managed only: per Order id, what verification matched there (the event's
    items and refunds come from it, not from our keys on the Order)."""

    def lines_of(self, order_id: str) -> list[ReturnLine]:
        """This refund's return lines on ``order_id``."""
        return [line for line in self.lines if line.order_ref == order_id]


def parse_webhook(body: bytes) -> RefundWebhook | None:
    """The refund webhook's fields, or None for another kind of webhook.

    Raises :class:`Refused` for a body that is not a JSON object or a refund webhook whose
    fields have the wrong types.
    """
    return decode_webhook(body, REFUND_WEBHOOK_TYPES, RefundWebhook, Refused)


def tender_refunds(webhook: RefundWebhook) -> list[TenderRefund]:
    """The webhook's refunded tenders. Raises :class:`Refused` for none, a malformed id or a repeated refund id."""
    if not webhook.data.refunds:
        raise Refused("no-refunds", "the refund webhook names no refunded tender")
    seen: set[str] = set()
    refunds = []
    for tender in webhook.data.refunds:
        if not _ID.fullmatch(tender.refundId) or not _ID.fullmatch(tender.paymentId):
            raise Refused("bad-refund", "refundId and paymentId must be ids (1–256 of A-Z a-z 0-9 . _ : -)")
        if tender.refundId in seen:
            raise Refused("bad-refund", f"refund id {tender.refundId} appears twice")
        seen.add(tender.refundId)
        refunds.append(TenderRefund(tender.refundId, tender.paymentId, tender.amount.centAmount, tender.amount.currencyCode))
    return refunds


def _custom(line: dict[str, Any], name: str) -> Any:
    return ((line.get("custom") or {}).get("fields") or {}).get(name)


def return_lines(cart: dict[str, Any], fields: LineFields, named: list[str] | None) -> list[ReturnLine]:
    """The return cart's lines the refund covers (``named`` return-cart line ids, or all), with their purchase pointers.

    Raises :class:`Refused` for a named line the cart does not have, a line without its
    purchase pointers, or a cart without lines.
    """
    candidates = [(line, False) for line in cart.get("lineItems") or []]
    candidates += [(line, True) for line in cart.get("customLineItems") or []]
    if named is not None:
        by_id = {line["id"]: (line, custom) for line, custom in candidates}
        missing = [line_id for line_id in named if line_id not in by_id]
        if missing or not named or len(set(named)) != len(named):
            raise Refused(
                "return-line-not-found",
                f"lineItemIds must name distinct lines of return cart {cart['id']} (unknown: {missing[:5]})",
            )
        candidates = [by_id[line_id] for line_id in named]
    if not candidates:
        raise Refused("cart-empty", f"return cart {cart['id']} has no lines")
    lines = []
    for line, custom_line in candidates:
        order_ref = _custom(line, fields.purchase_order)
        order_line = _custom(line, fields.purchase_line)
        if not (
            isinstance(order_ref, str) and _REF.fullmatch(order_ref) and isinstance(order_line, str) and _ID.fullmatch(order_line)
        ):
            raise Refused(
                "return-line-without-purchase",
                f"return line {line['id']} does not name the purchased order and line "
                f"(Custom Fields {fields.purchase_order!r}, {fields.purchase_line!r})",
            )
        comment = _custom(line, fields.return_comment)
        lines.append(
            ReturnLine(
                line_id=line["id"],
                order_ref=order_ref,
                order_line_id=order_line,
                quantity=int(line.get("quantity", 0)),
                comment=comment if isinstance(comment, str) and comment else None,
                custom_line=custom_line,
                cent_amount=int(((line.get("totalPrice") or {}).get("centAmount")) or 0),
            )
        )
    return lines


def check_refunds_against_return(cart: dict[str, Any], lines: list[ReturnLine], refunds: list[TenderRefund]) -> None:
    """The refunds may not exceed what the returned lines are worth, and are in the return cart's currency.

    Raises :class:`Refused` (``refund-currency-mismatch``, ``refund-exceeds-return``).
    Assumed — see docs: InStore refunds the return cart's lines, so their ``totalPrice``
    bounds the refund.
    """
    currency = (cart.get("totalPrice") or {}).get("currencyCode")
    for refund in refunds:
        if refund.currency_code != currency:
            raise Refused(
                "refund-currency-mismatch", f"refund {refund.refund_id} in {refund.currency_code}, the return cart in {currency}"
            )
    worth = sum(line.cent_amount for line in lines)
    asked = sum(refund.cent_amount for refund in refunds)
    if asked > worth:
        raise Refused("refund-exceeds-return", f"{asked} {currency} refunded for return lines worth {worth} {currency}")


def check_replay(
    lines: list[ReturnLine], orders: dict[str, dict[str, Any]], refunds: list[TenderRefund], payments: dict[str, dict[str, Any]]
) -> None:
    """Refuse what only looks like a replay.

    Return items are written before Refund transactions, and marked ``Refunded`` last. So a
    redelivery of this refund finds either none of its refunds, or all of its return items.
    Raises :class:`Refused`:

    - ``refund-id-conflict``: one of its refund ids is recorded while some of its return
      items are not — the id belongs to another return;
    - ``return-already-refunded``: some of its return items are ``Refunded`` (another refund
      of these lines finished) while some of its refunds are new — a second refund of the
      same returned lines.
    """
    items = {
        item.get("key"): item
        for order in orders.values()
        for info in order.get("returnInfo") or []
        for item in info.get("items") or []
    }
    ours = [items.get(return_item_key(line.line_id)) for line in lines]
    recorded_ids = {
        t.get("interactionId") for p in payments.values() for t in p.get("transactions") or [] if t["type"] == "Refund"
    }
    known = [r.refund_id for r in refunds if r.refund_id in recorded_ids]
    if known and any(item is None for item in ours):
        raise Refused(
            "refund-id-conflict",
            f"refund {known[0]} is already recorded, but not this return's items: it belongs to another return",
        )
    if len(known) < len(refunds) and any(item is not None and item.get("paymentState") == "Refunded" for item in ours):
        raise Refused(
            "return-already-refunded", "these return lines are already returned and refunded; a further refund of them is refused"
        )


async def _read(commerce: RefundCommerce, kind: str, ref: str) -> dict[str, Any]:
    try:
        if kind == "cart":
            response = await commerce.find_cart(ref)
        else:
            response = await commerce.find_order(ref, EXPAND_PAYMENTS)
    except NotFound as exc:
        reason = "return-cart-not-found" if kind == "cart" else "purchase-order-not-found"
        raise Refused(reason, f"no {kind} with id or {'key' if kind == 'cart' else 'number'} {ref!r}") from exc
    except (InvalidInput, AuthenticationFailed) as exc:
        raise Refused("commerce-refused", f"{exc.status} {exc.code}") from exc
    return msgspec.json.decode(response.content, type=dict[str, Any])


def payments_of(order: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The Order's expanded Payments by id (references without ``obj`` are skipped)."""
    refs = (order.get("paymentInfo") or {}).get("payments") or []
    return {ref["id"]: ref["obj"] for ref in refs if isinstance(ref.get("obj"), dict)}


async def _apply(commerce: RefundCommerce, resource: str, update: Update) -> None:
    try:
        await commerce.update(resource, update.resource_id, update.version, update.actions)
    except DuplicateField as exc:  # our return item key, written meanwhile by another delivery
        raise ConcurrentModification(409, "ConcurrentModification", "written meanwhile") from exc
    except (InvalidInput, NotFound, AuthenticationFailed) as exc:
        raise Refused("commerce-refused", f"{resource}/{update.resource_id}: {exc.code}: {exc.message}") from exc


async def record_refund(
    body: bytes,
    commerce: RefundCommerce,
    fields: LineFields,
    max_conflicts: int = 5,
    after_returns: Callable[[], None] | None = None,
    locks: KeyedLocks | None = None,
) -> Recorded:
    """Process one webhook's raw ``body``: record its return items and Refund transactions, once.

    Returns what was recorded (:class:`Recorded`; ``NOT_A_REFUND`` for other webhooks).
    Raises :class:`Refused` for what must be dead-lettered — nothing is written then — and
    lets ``TransientError`` (Composable Commerce unavailable after the client's bounded
    retries) through. ``after_returns`` runs between the two writes (crash tests).

    With ``locks``, refunds of the same original Orders (as the lines name them) are
    recorded one after the other in this process: two returns overdrawing one Payment at
    the same moment then cannot both write their return items before one is refused (across
    replicas the Orders' versions still stop a double return, but that loser keeps its
    return items — see docs/refunds-to-returns.md, Dead letters).
    """
    request = await read_request(body, commerce, fields)
    if request is None:
        return Recorded(Outcome.NOT_A_REFUND)
    async with locks.hold_all([line.order_ref for line in request.lines]) if locks else nullcontext():
        return await _record(
            commerce, request.cart, request.cart_ref, request.lines, request.refunds, max_conflicts, after_returns
        )


@dataclass(frozen=True, slots=True)
class RefundRequest:
    """A refund webhook as checked against its return cart: the cart (and the reference the webhook gave),
    the lines it covers (``order_ref`` as the line's Custom Field gives it: id or order number), the tenders."""

    cart: dict[str, Any]
    cart_ref: str
    lines: list[ReturnLine]
    refunds: list[TenderRefund]


async def read_request(body: bytes, commerce: RefundCommerce, fields: LineFields) -> RefundRequest | None:
    """Decode the webhook and read its return cart — the same in both refund modes; None for another kind of webhook.

    Raises :class:`Refused` for a malformed webhook, an unknown return cart, lines without their
    purchase pointers, too many tenders or lines, refunds beyond what the lines are worth or in
    another currency than the cart's; lets ``TransientError`` through.
    """
    webhook = parse_webhook(body)
    if webhook is None:
        return None
    cart_ref = webhook.return_cart_ref()
    if not cart_ref:
        raise Refused("no-return-cart-id", f"a {webhook.type} webhook without returnCartId")
    if not _REF.fullmatch(cart_ref):
        raise Refused("bad-return-cart-id", "returnCartId is not a commercetools id or key")
    refunds = tender_refunds(webhook)
    if len(refunds) > MAX_REFUNDS:
        raise Refused("too-large", f"{len(refunds)} refunded tenders in one webhook, at most {MAX_REFUNDS}")
    cart = await _read(commerce, "cart", cart_ref)
    named_lines = return_lines(cart, fields, webhook.data.lineItemIds)
    if len(named_lines) > MAX_LINES:
        raise Refused("too-large", f"{len(named_lines)} return lines in one webhook, at most {MAX_LINES}")
    check_refunds_against_return(cart, named_lines, refunds)
    return RefundRequest(cart, cart_ref, named_lines, refunds)


async def read_orders(
    commerce: RefundCommerce, named_lines: list[ReturnLine]
) -> tuple[list[ReturnLine], dict[str, dict[str, Any]]]:
    """The original Orders the lines name (each read once, Payments expanded), by id, and the lines
    with ``order_ref`` replaced by that id. Raises :class:`Refused` (``purchase-order-not-found``)."""
    by_ref: dict[str, dict[str, Any]] = {}
    for ref in dict.fromkeys(line.order_ref for line in named_lines):
        by_ref[ref] = await _read(commerce, "order", ref)
    lines = [replace(line, order_ref=by_ref[line.order_ref]["id"]) for line in named_lines]
    return lines, {order["id"]: order for order in by_ref.values()}


async def _record(
    commerce: RefundCommerce,
    cart: dict[str, Any],
    cart_ref: str,
    named_lines: list[ReturnLine],
    refunds: list[TenderRefund],
    max_conflicts: int,
    after_returns: Callable[[], None] | None,
) -> Recorded:
    for _ in range(max_conflicts):
        lines, orders = await read_orders(commerce, named_lines)
        payments = {pid: p for order in orders.values() for pid, p in payments_of(order).items()}
        order_of = {pid: order for order in orders.values() for pid in payments_of(order)}
        for refund in refunds:
            if refund.payment_id not in payments:
                raise Refused(
                    "payment-not-of-purchase",
                    f"refund {refund.refund_id}: payment {refund.payment_id} is not a payment of "
                    f"the returned orders {sorted(orders)}",
                )
            order_currency = (order_of[refund.payment_id].get("totalPrice") or {}).get("currencyCode")
            if refund.currency_code != order_currency:
                raise Refused(
                    "refund-currency-mismatch",
                    f"refund {refund.refund_id} in {refund.currency_code}, its order in {order_currency}",
                )
        check_replay(lines, orders, refunds, payments)
        return_updates = plan_returns(lines, orders)
        refund_updates = plan_refunds(refunds, payments)
        try:
            for update in return_updates:
                await _apply(commerce, "orders", update)
                log.info("refund.return_recorded", order_id=update.resource_id, items=len(update.actions[0]["items"]))
            if after_returns is not None and return_updates:
                after_returns()
            for update in refund_updates:
                await _apply(commerce, "payments", update)
                log.info(
                    "refund.refund_recorded",
                    payment_id=update.resource_id,
                    refund_ids=[a["transaction"]["interactionId"] for a in update.actions],
                )
        except ConcurrentModification:
            log.info("refund.conflict", return_cart_id=cart["id"])
            continue  # something changed meanwhile: read again, plan again (what is there is kept)
        recorded = Recorded(Outcome.ALREADY_RECORDED, cart, lines, refunds, list(orders), dict(orders))
        marked = False
        for order_id, order in orders.items():
            if return_updates or refund_updates or plan_refunded_marks(recorded.lines_of(order_id), order) is not None:
                recorded.orders[order_id] = await current_order(commerce, order_id)
                marked |= await mark_refunded(commerce, recorded, recorded.orders[order_id])
        if return_updates or refund_updates or marked:
            recorded.outcome = Outcome.RECORDED
        return recorded
    raise Refused("too-many-conflicts", f"the orders of return cart {cart_ref} kept changing")


async def current_order(commerce: RefundCommerce, order_id: str) -> dict[str, Any]:
    """The Order as Composable Commerce has it now, Payments expanded."""
    return await _read(commerce, "order", order_id)


async def mark_refunded(commerce: RefundCommerce, recorded: Recorded, order: dict[str, Any], max_conflicts: int = 5) -> bool:
    """Set this refund's return items on ``order`` to ``Refunded`` (once its Refund transactions are
    written); 409: re-read, retry. Returns whether it wrote anything. Raises :class:`Refused`."""
    current = order
    for _ in range(max_conflicts):
        marks = plan_refunded_marks(recorded.lines_of(current["id"]), current)
        if marks is None:
            return False
        try:
            await _apply(commerce, "orders", marks)
            log.info("refund.items_refunded", order_id=current["id"], items=len(marks.actions))
            return True
        except ConcurrentModification:
            current = await current_order(commerce, current["id"])
    raise Refused("too-many-conflicts", f"order {order['id']} kept changing")


__all__ = [
    "Found",
    "LineFields",
    "Outcome",
    "Recorded",
    "RefundCommerce",
    "RefundRequest",
    "current_order",
    "mark_refunded",
    "read_orders",
    "read_request",
    "record_refund",
    "return_item_key",
]
