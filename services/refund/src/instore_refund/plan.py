"""What a finalized refund changes, computed before anything is written — pure functions.

Rules (../shared/reference/instore-contract.md §5 and §7; Composable Commerce
https://docs.commercetools.com/api/projects/orders#add-returninfo and
https://docs.commercetools.com/api/projects/payments#add-transaction):

- every returned line names its original Order and line item (the purchase-order and
  purchase-line-item Custom Fields); the quantity asked back may not exceed what was bought
  minus what is already returned;
- each returned line becomes one return item with ``shipmentState: Returned`` and the stable
  ``key`` ``ret-<return cart line item id>``; once its Refund transactions are written its
  ``paymentState`` goes from ``Initial`` to ``Refunded`` (a business effect, not the marker
  of the announcement, which is a Custom Object — see :mod:`instore_refund.record`);
- each refunded tender becomes one ``Refund`` transaction on the original Payment with
  ``interactionId`` = InStore's refund id, in the payment's currency, and refunds may not
  exceed what the payment captured (successful ``Charge`` transactions);
- what already carries our key or interaction id is recognised and not written again, so a
  replayed refund changes nothing;
- everything is validated first: a refusal (:class:`Refused`) means nothing is written.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from instore_shared.kafka.consumer import Unprocessable

RETURN_KEY_PREFIX = "ret-"


class Refused(Unprocessable):
    """This refund can never be recorded as it is; ``reason`` is a machine-readable slug (dead-lettered)."""


@dataclass(frozen=True, slots=True)
class ReturnLine:
    """A line of the return cart: its id, the original Order (id or number) and line, the quantity, a comment."""

    line_id: str
    order_ref: str
    order_line_id: str
    quantity: int
    comment: str | None = None
    custom_line: bool = False
    cent_amount: int = 0
    """The return cart line's ``totalPrice`` in minor units (what returning it is worth)."""


@dataclass(frozen=True, slots=True)
class TenderRefund:
    """One refunded tender as InStore reports it: its refund id, the original Payment, minor units of a currency."""

    refund_id: str
    payment_id: str
    cent_amount: int
    currency_code: str


@dataclass
class Update:
    """One versioned update of a resource: ``POST /{orders|payments}/{id}`` with ``{version, actions}``."""

    resource_id: str
    version: int
    actions: list[dict[str, Any]] = field(default_factory=list)

    def body(self) -> dict[str, Any]:
        """The request body."""
        return {"version": self.version, "actions": self.actions}


def return_item_key(line_id: str) -> str:
    """The stable key of the return item made from return-cart line ``line_id``."""
    return RETURN_KEY_PREFIX + line_id


def plan_returns(lines: list[ReturnLine], orders: dict[str, dict[str, Any]]) -> list[Update]:
    """One Order update per original Order: an ``addReturnInfo`` with the return items not yet recorded.

    ``orders`` maps each ``order_ref`` of ``lines`` to the Order JSON. Raises
    :class:`Refused` for a non-positive quantity, a line that points at no bought line, or
    one that asks back more than is left (bought minus every return item already on the
    Order, ours included). Orders with nothing to add are omitted. The items' ``Refunded``
    payment state is a later step (:func:`plan_refunded_marks`), taken once the Refund
    transactions are written.
    """
    by_order: dict[str, list[ReturnLine]] = defaultdict(list)
    for line in lines:
        if line.quantity <= 0:
            raise Refused("bad-quantity", f"return line {line.line_id} has quantity {line.quantity}")
        by_order[line.order_ref].append(line)
    updates: list[Update] = []
    for ref, order_lines in by_order.items():
        order = orders[ref]
        existing = {item.get("key"): item for info in order.get("returnInfo") or [] for item in info.get("items") or []}
        returned: dict[str, int] = defaultdict(int)
        for recorded in existing.values():
            returned[recorded.get("lineItemId") or recorded.get("customLineItemId") or ""] += int(recorded.get("quantity", 0))
        new_items: list[dict[str, Any]] = []
        for line in order_lines:
            key = return_item_key(line.line_id)
            if key in existing:
                continue  # recorded by an earlier delivery of this refund
            bought_lines = order.get("customLineItems" if line.custom_line else "lineItems") or []
            bought = next((b for b in bought_lines if b.get("id") == line.order_line_id), None)
            if bought is None:
                raise Refused(
                    "purchase-line-not-found", f"return line {line.line_id}: order {order['id']} has no line {line.order_line_id}"
                )
            left = int(bought["quantity"]) - returned[line.order_line_id]
            if line.quantity > left:
                raise Refused(
                    "return-quantity-exceeded",
                    f"line {line.order_line_id} of order {order['id']}: {line.quantity} asked back, {left} left",
                )
            returned[line.order_line_id] += line.quantity
            item: dict[str, Any] = {
                "quantity": line.quantity,
                "shipmentState": "Returned",
                "key": key,
                ("customLineItemId" if line.custom_line else "lineItemId"): line.order_line_id,
            }
            if line.comment:
                item["comment"] = line.comment
            new_items.append(item)
        if new_items:
            updates.append(Update(order["id"], int(order["version"]), [{"action": "addReturnInfo", "items": new_items}]))
    return updates


def plan_refunded_marks(lines: list[ReturnLine], order: dict[str, Any]) -> Update | None:
    """The Order update setting ``paymentState: Refunded`` on each of ``lines``' return items not yet so, or None.

    Only items that exist are marked (call after :func:`plan_returns`' update was applied).
    """
    existing = {item.get("key"): item for info in order.get("returnInfo") or [] for item in info.get("items") or []}
    actions = [
        {"action": "setReturnPaymentState", "returnItemKey": key, "paymentState": "Refunded"}
        for key in (return_item_key(line.line_id) for line in lines)
        if key in existing and existing[key].get("paymentState") != "Refunded"
    ]
    return Update(order["id"], int(order["version"]), actions) if actions else None


def plan_refunds(refunds: list[TenderRefund], payments: dict[str, dict[str, Any]]) -> list[Update]:
    """One Payment update per original Payment: a ``Refund`` transaction for each tender refund not yet recorded.

    ``payments`` maps the id of every Payment in scope (all the returned Orders') to its JSON.
    A refund id is InStore's and names one refund: one already recorded (as a Refund's
    ``interactionId`` on any of them) is skipped when it is the same refund — same
    Payment, amount and currency — and refused (``refund-id-conflict``) otherwise. Raises
    :class:`Refused` too for a payment that is unknown, a currency other than the payment's,
    a non-positive amount, or refunds beyond what the payment captured.
    """
    recorded: dict[str, tuple[str, int, str]] = {
        t["interactionId"]: (pid, t["amount"]["centAmount"], t["amount"]["currencyCode"])
        for pid, payment in payments.items()
        for t in payment.get("transactions") or []
        if t["type"] == "Refund" and t.get("interactionId")
    }
    by_payment: dict[str, list[TenderRefund]] = defaultdict(list)
    for refund in refunds:
        by_payment[refund.payment_id].append(refund)
    updates: list[Update] = []
    for payment_id, tender_refunds in by_payment.items():
        payment = payments.get(payment_id)
        if payment is None:
            raise Refused("payment-not-found", f"no payment {payment_id}")
        transactions = payment.get("transactions") or []
        currency = payment["amountPlanned"]["currencyCode"]
        captured = sum(t["amount"]["centAmount"] for t in transactions if t["type"] == "Charge" and t["state"] == "Success")
        refunded = sum(
            t["amount"]["centAmount"]
            for t in transactions
            if t["type"] == "Refund" and t["state"] in ("Success", "Pending", "Initial")
        )
        actions: list[dict[str, Any]] = []
        for refund in tender_refunds:
            earlier = recorded.get(refund.refund_id)
            if earlier is not None:
                if earlier != (payment_id, refund.cent_amount, refund.currency_code):
                    raise Refused(
                        "refund-id-conflict",
                        f"refund {refund.refund_id} is already recorded as {earlier[1]} {earlier[2]} on "
                        f"payment {earlier[0]}, not {refund.cent_amount} {refund.currency_code} on {payment_id}",
                    )
                continue  # recorded by an earlier delivery of this refund
            if refund.currency_code != currency:
                raise Refused(
                    "refund-currency-mismatch",
                    f"refund {refund.refund_id} in {refund.currency_code}, payment {payment_id} in {currency}",
                )
            if refund.cent_amount <= 0:
                raise Refused("bad-amount", f"refund {refund.refund_id} of {refund.cent_amount}")
            if refunded + refund.cent_amount > captured:
                raise Refused(
                    "refund-exceeds-capture",
                    f"payment {payment_id}: {refunded + refund.cent_amount} refunded of {captured} captured",
                )
            refunded += refund.cent_amount
            recorded[refund.refund_id] = (payment_id, refund.cent_amount, refund.currency_code)
            actions.append(
                {
                    "action": "addTransaction",
                    "transaction": {
                        "type": "Refund",
                        "state": "Success",
                        "interactionId": refund.refund_id,
                        "amount": {"currencyCode": currency, "centAmount": refund.cent_amount},
                    },
                }
            )
        if actions:
            updates.append(Update(payment_id, int(payment["version"]), actions))
    return updates
