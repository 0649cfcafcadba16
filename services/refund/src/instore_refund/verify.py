"""REFUND_MODE=instore-managed: check that what InStore wrote to Composable Commerce matches the webhook — write nothing.

In InStore-managed refunds InStore's refund module writes the return to the original Order
and posts the refunds to Composable Commerce itself; only in delegated refunds is writing them
the integration's job (../shared/reference/instore-contract.md §5 and §9). The refund service
then reads exactly what delegated mode reads (the return cart, each line's original Order with
its Payments expanded) and verifies, per webhook:

(a) every returned line (return cart line → purchase Order and line item through the purchase
    Custom Fields) has return items on that Order for that line item
    (``returnInfo[*].items[*]`` with ``lineItemId``, or ``customLineItemId`` for a custom line)
    *created at or after the return cart* (the item's ``createdAt`` ≥ the cart's ``createdAt``)
    whose quantities add up to at least the quantity returned — lines of this webhook naming the
    same purchase line are added up;
(b) every refunded tender (refund id, Payment id, amount) names a Payment of one of those Orders,
    and that Payment has a ``Refund`` transaction in state ``Success`` of exactly that amount
    (integer minor units) and currency (ISO 4217): the one whose ``interactionId`` is the refund
    id when there is one (then it must be ``Success`` with that amount, whatever its time),
    otherwise one found by amount and currency among the ``Refund`` ``Success`` transactions
    with a ``timestamp`` at or after the return cart's ``createdAt`` that no other tender of this
    webhook matched (first in the Payment's order). A transaction with neither that
    ``interactionId`` nor a ``timestamp`` does not count.

Assumed — InStore's exact writes are not documented (../shared/reference/instore-contract.md §5):
which keys, ``interactionId`` s, states and timestamps InStore gives its return items and
transactions. Hence the looser matching: by purchase line item and quantity, by amount. What
keeps an *earlier* return of the same line or amount from standing in for this one is time:
evidence for this refund cannot predate this refund's return cart. ``createdAt`` of a return
item and of the cart are Composable Commerce's own clock
(https://docs.commercetools.com/api/projects/orders#returnitem); a transaction's ``timestamp``
is the writer's (https://docs.commercetools.com/api/projects/payments#transaction), so a clock
of InStore's running behind makes a mismatch (dead letter), never a false match. Left: writes
of another return made *after* this return cart (a later return, or an earlier return whose
writes came late) still count — the check proves enough was written since the cart, not which
write was this one's.

A webhook may come before InStore's writes. :func:`verify_refund` then reads the Orders again
every second on the injected clock, for at most the configured wait and never past the
webhook's deadline. Any mismatch left at the end raises :class:`Mismatch` (reason
``instore-managed-mismatch``, an ``Unprocessable``): the message is dead-lettered with that
reason, nothing is written and nothing announced. :func:`verify` and its parts are pure; the
reads are :mod:`instore_refund.record`'s.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime, timedelta
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
from instore_shared.clock import Clock
from instore_shared.kafka.consumer import Deadline, retry_transient
from instore_shared.logging import get_logger

log = get_logger(__name__)

MISMATCH = "instore-managed-mismatch"
POLL_SECONDS = 1.0
"""How often a mismatching webhook reads the Orders again while it waits for InStore's writes."""


class Mismatch(Refused):
    """What InStore wrote to Composable Commerce does not match the refund webhook (dead-lettered, nothing written)."""

    def __init__(self, message: str) -> None:
        super().__init__(MISMATCH, message)


def instant(value: Any) -> datetime | None:
    """A Composable Commerce date-time (ISO 8601, e.g. ``2026-12-04T10:12:01.123Z``) as an aware UTC
    datetime; None when absent or not a date-time. A value without offset is read as UTC."""
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def _since(since: datetime) -> str:
    return since.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _return_items(order: dict[str, Any]) -> list[dict[str, Any]]:
    return [item for info in order.get("returnInfo") or [] for item in info.get("items") or []]


CLOCK_TOLERANCE = timedelta(seconds=2)
"""Allowed for a writer's clock behind Composable Commerce's, or a timestamp cut to whole seconds: a valid refund
stamped in the return cart's own second is not dead-lettered (an earlier return's writes are minutes older)."""


def _at_or_after(value: Any, since: datetime) -> bool:
    at = instant(value)
    return at is not None and at >= since - CLOCK_TOLERANCE


def verify_returns(
    lines: list[ReturnLine], orders: dict[str, dict[str, Any]], since: datetime
) -> dict[str, list[tuple[ReturnLine, dict[str, Any]]]]:
    """Check (a) of the module doc. ``lines`` carry the Order *id* as ``order_ref``; ``orders`` by id;
    ``since`` is the return cart's ``createdAt``: only return items created at or after it count
    (one without ``createdAt`` does not).

    Returns per Order id, per line, the return item that stands for it in the event: the last
    one (most recent) counted on its purchase line item. Raises :class:`Mismatch` naming the
    Order, the line item, the quantity returned and found, and how many earlier items were not
    counted.
    """
    wanted: dict[tuple[str, str, bool], int] = defaultdict(int)
    for line in lines:
        wanted[(line.order_ref, line.order_line_id, line.custom_line)] += line.quantity
    found: dict[str, list[tuple[ReturnLine, dict[str, Any]]]] = defaultdict(list)
    for (order_id, line_item_id, custom), quantity in wanted.items():
        field = "customLineItemId" if custom else "lineItemId"
        on_line = [item for item in _return_items(orders[order_id]) if item.get(field) == line_item_id]
        items = [item for item in on_line if _at_or_after(item.get("createdAt"), since)]
        have = sum(int(item.get("quantity") or 0) for item in items)
        if have < quantity:
            kind = "custom line item" if custom else "line item"
            earlier = sum(int(item.get("quantity") or 0) for item in on_line) - have
            raise Mismatch(
                f"order {order_id}, {kind} {line_item_id}: {quantity} returned, return items for {have} found "
                f"created since the return cart ({_since(since)}; {earlier} more in earlier return items, not counted) "
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
    refunds: list[TenderRefund], orders: dict[str, dict[str, Any]], since: datetime
) -> dict[str, list[tuple[TenderRefund, str, dict[str, Any]]]]:
    """Check (b) of the module doc. ``orders`` by id, Payments expanded; ``since`` is the return
    cart's ``createdAt``: a transaction found by amount counts only with a ``timestamp`` at or after it.

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
                and _at_or_after(t.get("timestamp"), since)
            ),
            None,
        )
        if candidate is None:
            raise Mismatch(
                f"payment {refund.payment_id}, refund {refund.refund_id}: no Success Refund transaction of "
                f"{refund.cent_amount} {refund.currency_code} found with interactionId {refund.refund_id} or a timestamp "
                f"since the return cart ({_since(since)}) (InStore-managed refunds: InStore posts the refunds)"
            )
        matched[refund.refund_id] = candidate
        taken.add((refund.payment_id, str(candidate.get("id"))))
    by_order: dict[str, list[tuple[TenderRefund, str, dict[str, Any]]]] = defaultdict(list)
    for refund in refunds:
        by_order[order_of[refund.payment_id]].append((refund, refund.payment_id, matched[refund.refund_id]))
    return dict(by_order)


def verify(
    lines: list[ReturnLine], refunds: list[TenderRefund], orders: dict[str, dict[str, Any]], since: datetime
) -> dict[str, Found]:
    """Checks (a) and (b), counting only what was written since ``since`` (the return cart's ``createdAt``);
    per Order id (every Order of ``orders``) what was found. Raises :class:`Mismatch`."""
    items = verify_returns(lines, orders, since)
    tenders = verify_refunds(refunds, orders, since)
    return {order_id: Found(items.get(order_id, []), tenders.get(order_id, [])) for order_id in orders}


async def verify_refund(
    body: bytes,
    commerce: RefundCommerce,
    fields: LineFields,
    *,
    clock: Clock,
    wait_seconds: float,
    deadline: Deadline,
    poll_seconds: float = POLL_SECONDS,
) -> Recorded:
    """Process one webhook's raw ``body`` in REFUND_MODE=instore-managed: read, verify, write nothing.

    Reads the return cart, then the Orders, and verifies (:func:`verify`). On a mismatch the
    Orders are read and verified again every ``poll_seconds`` on ``clock`` — InStore's writes
    may land after its webhook — for ``wait_seconds`` at most and never past ``deadline`` (the
    webhook's one deadline, within which every read also retries ``TransientError``).

    Returns :class:`Recorded` with outcome ``VERIFIED`` (``NOT_A_REFUND`` for other webhooks),
    the Orders as read and ``found`` per Order. Raises :class:`Mismatch` when it still
    mismatches at the end (the message says how long it waited; a return cart without
    ``createdAt`` mismatches at once), :class:`Refused` for what delegated mode refuses before
    reading the Orders (a malformed webhook, an unknown return cart or Order, refunds beyond the
    return's worth), and the last ``TransientError`` when Composable Commerce stayed unavailable
    until the deadline.
    """
    request = await retry_transient(lambda: read_request(body, commerce, fields), deadline, "refund")
    if request is None:
        return Recorded(Outcome.NOT_A_REFUND)
    cart_id = request.cart.get("id")
    since = instant(request.cart.get("createdAt"))
    if since is None:
        raise Mismatch(f"return cart {cart_id} has no createdAt: nothing InStore wrote can be told to be for it")

    async def look() -> tuple[list[ReturnLine], dict[str, dict[str, Any]], dict[str, Found] | Mismatch]:
        lines, orders = await read_orders(commerce, request.lines)
        try:
            return lines, orders, verify(lines, request.refunds, orders, since)
        except Mismatch as exc:
            return lines, orders, exc

    lines, orders, found = await retry_transient(look, deadline, "refund")
    if isinstance(found, Mismatch):
        wait = max(0.0, min(wait_seconds, deadline.remaining()))
        started, polls = clock.monotonic(), 0
        log.info("refund.awaiting_instore_writes", return_cart_id=cart_id, wait_s=wait, mismatch=found.detail[:300])
        while isinstance(found, Mismatch) and (left := started + wait - clock.monotonic()) > 0:
            await clock.sleep(min(poll_seconds, left))
            polls += 1
            lines, orders, found = await retry_transient(look, deadline, "refund")
        waited = clock.monotonic() - started
        if isinstance(found, Mismatch):
            raise Mismatch(
                f"{found.detail} — still after waiting {waited:.1f} s for InStore's writes "
                f"(REFUND_MODE=instore-managed, REFUND_INSTORE_MANAGED_WAIT_SECONDS={wait_seconds:g})"
            )
        log.info("refund.instore_writes_appeared", return_cart_id=cart_id, polls=polls, waited_s=round(waited, 3))
    return Recorded(Outcome.VERIFIED, request.cart, lines, request.refunds, list(orders), dict(orders), found)
