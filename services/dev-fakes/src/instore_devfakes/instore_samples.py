"""What the simulated InStore sends: sample bodies of its webhooks and payment-extension requests.

The shapes are the ones this integration assumes (the decoders in :mod:`instore_shared.contract`
read them; ../shared/reference/instore-contract.md §4-§6). Used by the simulator, the dev host page,
the tests, the fault suite and the benchmarks — never by a service, so they live in the dev-fakes
package, which no service image carries.
"""

from __future__ import annotations

import json
import uuid
from typing import Any


def payment_webhook(cart_id: str, webhook_id: str | None = None, **extra: Any) -> bytes:
    """An InStore-shaped payment webhook body as we assume it:
    ``{"id", "type": "payment.completed", "createdAt", "tenantId", "locationId", "workstationId",
    "userId", "cartId", "data": {...}}`` — see ../shared/reference/instore-contract.md §4."""
    body = {
        "id": webhook_id or f"evt-{uuid.uuid4().hex}",
        "type": "payment.completed",
        "createdAt": "2026-11-30T12:00:00.000Z",
        "tenantId": "local-tenant",
        "locationId": "store-berlin-01",
        "workstationId": "pos-3",
        "userId": "colleague-42",
        "cartId": cart_id,
        "data": {"tender": "card"},
    }
    body.update(extra)
    return json.dumps(body).encode()


def refund_webhook(
    return_cart_id: str,
    refunds: list[tuple[str, str, int, str]],
    webhook_id: str | None = None,
    line_item_ids: list[str] | None = None,
    **extra: Any,
) -> bytes:
    """An InStore-shaped refund webhook body as we assume it.

    ``refunds`` holds ``(refund id, original payment id, cent amount, ISO 4217 currency)`` per
    tender. Shape: see :class:`RefundWebhook` and ../shared/reference/instore-contract.md §5.
    """
    data: dict[str, Any] = {
        "refunds": [
            {"refundId": refund_id, "paymentId": payment_id, "amount": {"centAmount": cents, "currencyCode": currency}}
            for refund_id, payment_id, cents, currency in refunds
        ]
    }
    if line_item_ids is not None:
        data["lineItemIds"] = line_item_ids
    body = {
        "id": webhook_id or f"evt-{uuid.uuid4().hex}",
        "type": "refund.completed",
        "createdAt": "2026-11-30T12:00:00.000Z",
        "tenantId": "local-tenant",
        "locationId": "store-berlin-01",
        "workstationId": "pos-3",
        "userId": "colleague-42",
        "returnCartId": return_cart_id,
        "data": data,
    }
    body.update(extra)
    return json.dumps(body).encode()


def payment_request(
    request_id: str,
    *,
    status_url: str,
    callback_url: str,
    payment_id: str | None = None,
    cent_amount: int | None = None,
    currency: str = "EUR",
    **extra: Any,
) -> bytes:
    """A payment-extension request body as we assume InStore sends it (../shared/reference/instore-contract.md §6)."""
    body: dict[str, Any] = {
        "requestId": request_id,
        "statusUrl": status_url,
        "callbackUrl": callback_url,
        "locationId": "store-berlin-01",
        "workstationId": "pos-3",
        "userId": "colleague-42",
    }
    if payment_id is not None:
        body["paymentId"] = payment_id
    if cent_amount is not None:
        body["amount"] = {"centAmount": cent_amount, "currencyCode": currency}
    body.update(extra)
    return json.dumps(body).encode()
