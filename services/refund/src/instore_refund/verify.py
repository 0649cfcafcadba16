"""REFUND_MODE=instore-managed: check that what InStore wrote to Composable Commerce matches the webhook — write nothing.

In InStore-managed refunds InStore's refund module writes the return to the original Order
and posts the refunds to Composable Commerce itself; only in delegated refunds is writing them
the integration's job (../shared/reference/instore-contract.md §5 and §9). The refund service
then reads exactly what delegated mode reads (the return cart, each line's original Order with
its Payments expanded) and verifies, per webhook:

(a) every returned line (return cart line → purchase Order and line item through the purchase
    Custom Fields) has return items on that Order for that line item
    (``returnInfo[*].items[*]`` with ``lineItemId``, or ``customLineItemId`` for a custom line)
    whose quantities add up to at least the quantity returned — lines of this webhook naming the
    same purchase line are added up;
(b) every refunded tender (refund id, Payment id, amount) names a Payment of one of those Orders,
    and that Payment has a ``Refund`` transaction in state ``Success`` of exactly that amount
    (integer minor units) and currency (ISO 4217): the one whose ``interactionId`` is the refund
    id when there is one (then it must be ``Success`` with that amount), otherwise one found by
    amount and currency among the ``Refund`` ``Success`` transactions no other tender of this
    webhook matched (first in the Payment's order).

Assumed — InStore's exact writes are not documented (../shared/reference/instore-contract.md §5):
which keys, ``interactionId`` s and states InStore gives its return items and transactions. Hence
the looser matching: by purchase line item and quantity, by amount. Consequence: a return item or
Refund of an *earlier* return of the same line or of the same amount also satisfies the check; it
proves that enough was written, not which write was this one's.

Any mismatch raises :class:`Mismatch` (reason ``instore-managed-mismatch``, an
``Unprocessable``): the message is dead-lettered with that reason, nothing is written and
nothing announced. Pure functions here; the reads are :mod:`instore_refund.record`'s.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from instore_refund.plan import Refused, ReturnLine, TenderRefund
from instore_refund.record import (
    Found,
    LineFields,
    Outcome,
    Recorded,
    RefundCommerce,
    payments_of,
    read_orders,
    read_request,
)

MISMATCH = "instore-managed-mismatch"


class Mismatch(Refused):
    """What InStore wrote to Composable Commerce does not match the refund webhook (dead-lettered, nothing written)."""

    def __init__(self, message: str) -> None:
        super().__init__(MISMATCH, message)


def _return_items(order: dict[str, Any]) -> list[dict[str, Any]]:
    return [item for info in order.get("returnInfo") or [] for item in info.get("items") or []]


def verify_returns(
    lines: list[ReturnLine], orders: dict[str, dict[str, Any]]
) -> dict[str, list[tuple[ReturnLine, dict[str, Any]]]]:
    """Check (a) of the module doc. ``lines`` carry the Order *id* as ``order_ref``; ``orders`` by id.

    Returns per Order id, per line, the return item that stands for it in the event: the last
    one (most recent) on its purchase line item. Raises :class:`Mismatch` naming the Order, the
    line item, the quantity returned and the quantity found.
    """
    wanted: dict[tuple[str, str, bool], int] = defaultdict(int)
    for line in lines:
        wanted[(line.order_ref, line.order_line_id, line.custom_line)] += line.quantity
    found: dict[str, list[tuple[ReturnLine, dict[str, Any]]]] = defaultdict(list)
    for (order_id, line_item_id, custom), quantity in wanted.items():
        field = "customLineItemId" if custom else "lineItemId"
        items = [item for item in _return_items(orders[order_id]) if item.get(field) == line_item_id]
        have = sum(int(item.get("quantity") or 0) for item in items)
        if have < quantity:
            kind = "custom line item" if custom else "line item"
            raise Mismatch(
                f"order {order_id}, {kind} {line_item_id}: {quantity} returned, return items for {have} found "
                "(InStore-managed refunds: InStore writes the return to the Order)"
            )
        for line in lines:
            if (line.order_ref, line.order_line_id, line.custom_line) == (order_id, line_item_id, custom):
                found[order_id].append((line, items[-1]))
    return dict(found)


def _money(transaction: dict[str, Any]) -> tuple[int, str]:
    amount = transaction.get("amount") or {}
    return int(amount.get("centAmount") or 0), str(amount.get("currencyCode") or "")


def verify_refunds(
    refunds: list[TenderRefund], orders: dict[str, dict[str, Any]]
) -> dict[str, list[tuple[TenderRefund, str, dict[str, Any]]]]:
    """Check (b) of the module doc. ``orders`` by id, Payments expanded.

    Returns per Order id the tenders with their Payment id and matched Refund transaction.
    Raises :class:`Mismatch` naming the Payment, the refund id, the amount expected (minor units
    and currency) and, for an ``interactionId`` match, what was found.
    """
    order_of = {pid: order_id for order_id, order in orders.items() for pid in payments_of(order)}
    payments = {pid: payment for order in orders.values() for pid, payment in payments_of(order).items()}
    matched: dict[str, dict[str, Any]] = {}  # refund id → transaction
    taken: set[tuple[str, str]] = set()  # (payment id, transaction id)
    for refund in refunds:  # first pass: the transactions that name the refund id
        if refund.payment_id not in payments:
            raise Mismatch(
                f"refund {refund.refund_id}: payment {refund.payment_id} is not a payment of the returned orders {sorted(orders)}"
            )
        refund_transactions = [t for t in payments[refund.payment_id].get("transactions") or [] if t.get("type") == "Refund"]
        named = next((t for t in refund_transactions if t.get("interactionId") == refund.refund_id), None)
        if named is None:
            continue
        if named.get("state") != "Success" or _money(named) != (refund.cent_amount, refund.currency_code):
            cents, currency = _money(named)
            raise Mismatch(
                f"payment {refund.payment_id}, refund {refund.refund_id}: expected a Success Refund of "
                f"{refund.cent_amount} {refund.currency_code}, found {named.get('state')} {cents} {currency} "
                f"(transaction {named.get('id')})"
            )
        matched[refund.refund_id] = named
        taken.add((refund.payment_id, str(named.get("id"))))
    for refund in refunds:  # second pass: by amount, among the Success Refunds nothing matched yet
        if refund.refund_id in matched:
            continue
        candidate = next(
            (
                t
                for t in payments[refund.payment_id].get("transactions") or []
                if t.get("type") == "Refund"
                and t.get("state") == "Success"
                and (refund.payment_id, str(t.get("id"))) not in taken
                and _money(t) == (refund.cent_amount, refund.currency_code)
            ),
            None,
        )
        if candidate is None:
            raise Mismatch(
                f"payment {refund.payment_id}, refund {refund.refund_id}: no Success Refund transaction of "
                f"{refund.cent_amount} {refund.currency_code} found (InStore-managed refunds: InStore posts the refunds)"
            )
        matched[refund.refund_id] = candidate
        taken.add((refund.payment_id, str(candidate.get("id"))))
    by_order: dict[str, list[tuple[TenderRefund, str, dict[str, Any]]]] = defaultdict(list)
    for refund in refunds:
        by_order[order_of[refund.payment_id]].append((refund, refund.payment_id, matched[refund.refund_id]))
    return dict(by_order)


def verify(lines: list[ReturnLine], refunds: list[TenderRefund], orders: dict[str, dict[str, Any]]) -> dict[str, Found]:
    """Checks (a) and (b); per Order id (every Order of ``orders``) what was found. Raises :class:`Mismatch`."""
    items = verify_returns(lines, orders)
    tenders = verify_refunds(refunds, orders)
    return {order_id: Found(items.get(order_id, []), tenders.get(order_id, [])) for order_id in orders}


async def verify_refund(body: bytes, commerce: RefundCommerce, fields: LineFields) -> Recorded:
    """Process one webhook's raw ``body`` in REFUND_MODE=instore-managed: read, verify, write nothing.

    Returns :class:`Recorded` with outcome ``VERIFIED`` (``NOT_A_REFUND`` for other webhooks),
    the Orders as read and ``found`` per Order. Raises :class:`Mismatch`, or :class:`Refused` for
    what delegated mode refuses before reading the Orders (a malformed webhook, an unknown return
    cart or Order, refunds beyond the return's worth); lets ``TransientError`` through.
    """
    request = await read_request(body, commerce, fields)
    if request is None:
        return Recorded(Outcome.NOT_A_REFUND)
    lines, orders = await read_orders(commerce, request.lines)
    found = verify(lines, request.refunds, orders)
    return Recorded(Outcome.VERIFIED, request.cart, lines, request.refunds, list(orders), dict(orders), found)
