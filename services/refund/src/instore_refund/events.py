"""Build the ``commerce.refunds.completed.v1`` event of one original Order from what was recorded (or, in
REFUND_MODE=instore-managed, verified) — the same fields in both modes."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from instore_refund.plan import return_item_key
from instore_refund.record import Recorded, payments_of
from instore_refund.settings import RefundSettings
from instore_shared.contract import refunds_completed as contract
from instore_shared.contract.payments_completed import Amount

COMMENT_LIMIT = 500
"""Characters of a return comment carried in the event (the Order keeps it whole)."""


def _short(comment: object) -> str | None:
    if not isinstance(comment, str):
        return None
    return comment if len(comment) <= COMMENT_LIMIT else comment[: COMMENT_LIMIT - 1] + "…"


def _field(cart: dict[str, Any], name: str) -> str | None:
    value = ((cart.get("custom") or {}).get("fields") or {}).get(name)
    return _short(value)


def refunds_completed(
    recorded: Recorded, order: dict[str, Any], webhook_id: str | None, settings: RefundSettings
) -> contract.RefundsCompleted:
    """The event for ``order`` (read with its Payments expanded, after the writes).

    Delegated mode: ``items`` are this refund's return items on the Order (our keys
    ``ret-<return cart line id>``); ``refunds`` the ``Refund`` transactions whose
    ``interactionId`` is one of this webhook's refund ids, on the Order's Payments.
    REFUND_MODE=instore-managed (``recorded.found`` set): both come from what verification
    matched (:mod:`instore_refund.verify`) — per return line the return item InStore wrote
    (its ``key``, or its ``id`` when it has none), per tender the Refund transaction found.
    Amounts in integer minor units of the Order's currency (ISO 4217). The event id depends
    only on the Order, the return cart, the refund ids and ``ret-<return cart line id>`` of the
    lines — the same in both modes, so a replay (or a change of mode between deliveries) gets
    the same id.
    """
    if recorded.found is not None:
        found = recorded.found[order["id"]]
        items = [
            contract.ReturnedItem(
                return_item_key=str(item.get("key") or item.get("id") or ""),
                return_line_item_id=line.line_id,
                line_item_id=line.order_line_id,
                custom_line_item=line.custom_line,
                quantity=line.quantity,
                comment=_short(line.comment),
            )
            for line, item in found.items
        ]
        refunds = [
            contract.RefundedTender(
                refund_id=tender.refund_id,
                payment_id=payment_id,
                transaction_id=str(t.get("id") or ""),
                amount=Amount(cent_amount=tender.cent_amount, currency_code=tender.currency_code),
            )
            for tender, payment_id, t in found.refunds
        ]
        keys = [return_item_key(line.line_id) for line, _ in found.items]
    else:
        lines = {return_item_key(line.line_id): line for line in recorded.lines_of(order["id"])}
        items = [
            contract.ReturnedItem(
                return_item_key=item["key"],
                return_line_item_id=lines[item["key"]].line_id,
                line_item_id=item.get("lineItemId") or item.get("customLineItemId") or "",
                custom_line_item=bool(item.get("customLineItemId")),
                quantity=int(item["quantity"]),
                comment=_short(item.get("comment")),
            )
            for info in order.get("returnInfo") or []
            for item in info.get("items") or []
            if item.get("key") in lines
        ]
        ours = {(r.payment_id, r.refund_id) for r in recorded.refunds}
        refunds = [
            contract.RefundedTender(
                refund_id=t["interactionId"],
                payment_id=payment_id,
                transaction_id=t["id"],
                amount=Amount(cent_amount=t["amount"]["centAmount"], currency_code=t["amount"]["currencyCode"]),
            )
            for payment_id, payment in payments_of(order).items()
            for t in payment.get("transactions") or []
            if t.get("type") == "Refund" and (payment_id, t.get("interactionId")) in ours
        ]
        keys = [i.return_item_key for i in items]
    currency = (order.get("totalPrice") or {}).get("currencyCode") or (refunds[0].amount.currency_code if refunds else "")
    cart = recorded.return_cart
    return contract.RefundsCompleted(
        event_id=contract.event_id(order["id"], cart["id"], [r.refund_id for r in refunds], keys),
        order_id=order["id"],
        order_number=order.get("orderNumber"),
        return_cart_id=cart["id"],
        items=items,
        refunds=refunds,
        total_refunded=Amount(cent_amount=sum(r.amount.cent_amount for r in refunds), currency_code=currency),
        location_id=_field(cart, settings.instore_field_location_id),
        workstation_id=_field(cart, settings.instore_field_workstation_id),
        colleague_id=_field(cart, settings.instore_field_user_id),
        occurred_at=datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        source_webhook_id=webhook_id,
    )
