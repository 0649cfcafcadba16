"""``commerce.refunds.completed.v1``: a return and its refund are recorded on an original Order (our contract).

One event per original Order a finalized refund touched, keyed by that Order's id.
``eventId`` is derived from the Order id, the return cart id, the InStore refund ids and the
return item keys, so a
replay or a redelivery carries the same id and consumers can deduplicate by it. Money is
integer minor units plus an ISO 4217 currency.
"""

from __future__ import annotations

import uuid

import msgspec

from instore_shared.contract.payments_completed import Amount

_NAMESPACE = uuid.UUID("0b8e64f2-3c1d-5e7a-8f90-a1b2c3d4e5f6")
MESSAGE_TYPE = "refunds-completed.v1"


class ReturnedItem(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """One return item on the Order: its key (``ret-<return cart line id>``), the original line, the quantity."""

    return_item_key: str
    return_line_item_id: str
    line_item_id: str
    custom_line_item: bool
    quantity: int
    comment: str | None


class RefundedTender(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """One ``Refund`` transaction on an original Payment; ``refund_id`` is InStore's (the ``interactionId``)."""

    refund_id: str
    payment_id: str
    transaction_id: str
    amount: Amount


class RefundsCompleted(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """The return is recorded on the Order (items ``Returned``, ``Refunded``) and the refunds on its Payments."""

    event_id: str
    order_id: str
    order_number: str | None
    return_cart_id: str
    items: list[ReturnedItem]
    refunds: list[RefundedTender]
    total_refunded: Amount
    location_id: str | None
    workstation_id: str | None
    colleague_id: str | None
    occurred_at: str
    source_webhook_id: str | None
    type: str = "refunds-completed"


def event_id(order_id: str, return_cart_id: str, refund_ids: list[str], return_item_keys: list[str]) -> str:
    """The deterministic event id (UUID5) of what one refund webhook recorded on ``order_id``: its
    refund ids and return item keys there, of return cart ``return_cart_id``."""
    name = f"refunds-completed:{order_id}:{return_cart_id}:{','.join(sorted(refund_ids))}:{','.join(sorted(return_item_keys))}"
    return str(uuid.uuid5(_NAMESPACE, name))


def encode(event: RefundsCompleted) -> bytes:
    """JSON bytes of the event."""
    return msgspec.json.encode(event)
