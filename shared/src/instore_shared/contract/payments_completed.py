"""``commerce.payments.completed.v1``: a sale is paid and its Order exists (our contract, for downstream teams).

Keyed by the Order id. ``eventId`` is derived from the Order id, so a replay or a
redelivery carries the same id and consumers can deduplicate by it. Money is integer minor
units plus an ISO 4217 currency.
"""

from __future__ import annotations

import uuid

import msgspec

_NAMESPACE = uuid.UUID("6f1d7d3c-4a0b-5b8e-9d0e-1c2b3a4d5e6f")
MESSAGE_TYPE = "payments-completed.v1"


class Amount(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """Money: ``cent_amount`` minor units of ``currency_code`` (ISO 4217)."""

    cent_amount: int
    currency_code: str


class PaidTender(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """One Payment of the sale: its id, method (e.g. CREDIT_CARD, CASH), what it charged, the provider's id."""

    payment_id: str
    method: str | None
    amount: Amount
    provider_id: str | None


class PaymentsCompleted(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """The sale's Order exists and its successful charges cover its total."""

    event_id: str
    order_id: str
    order_number: str
    cart_id: str
    total: Amount
    payments: list[PaidTender]
    location_id: str | None
    workstation_id: str | None
    colleague_id: str | None
    occurred_at: str
    source_webhook_id: str | None
    type: str = "payments-completed"


def event_id(order_id: str) -> str:
    """The deterministic event id of the Order ``order_id`` (UUID5)."""
    return str(uuid.uuid5(_NAMESPACE, f"payments-completed:{order_id}"))


def encode(event: PaymentsCompleted) -> bytes:
    """JSON bytes of the event."""
    return msgspec.json.encode(event)
