"""Build the ``commerce.payments.completed.v1`` event from the Cart and its Order."""

from __future__ import annotations

from datetime import UTC, datetime

from instore_order_finalization import rules
from instore_order_finalization.model import Cart, OrderRef
from instore_order_finalization.settings import OrderFinalizationSettings
from instore_shared.contract import payments_completed as contract


def _field(cart: Cart, name: str) -> str | None:
    value = cart.custom.fields.get(name) if cart.custom else None
    return value if isinstance(value, str) else None


def payments_completed(
    cart: Cart, order: OrderRef, webhook_id: str | None, settings: OrderFinalizationSettings
) -> contract.PaymentsCompleted:
    """The event for ``order`` made from ``cart`` (read with its Payments expanded).

    Each tender's ``amount`` is what its successful ``Charge`` transactions took, in the
    cart's currency (minor units). Raises ``rules.MissingPayments`` for an unexpanded cart.
    """
    currency = cart.totalPrice.currencyCode
    tenders = []
    for payment in rules.payments(cart):
        charged = sum(
            t.amount.centAmount
            for t in payment.transactions
            if t.type == "Charge" and t.state == "Success" and t.amount.currencyCode == currency
        )
        tenders.append(
            contract.PaidTender(
                payment_id=payment.id,
                method=payment.paymentMethodInfo.method,
                amount=contract.Amount(cent_amount=charged, currency_code=currency),
                provider_id=payment.interfaceId,
            )
        )
    return contract.PaymentsCompleted(
        event_id=contract.event_id(order.id),
        order_id=order.id,
        order_number=order.orderNumber or "",
        cart_id=cart.id,
        total=contract.Amount(cent_amount=cart.totalPrice.centAmount, currency_code=currency),
        payments=tenders,
        location_id=_field(cart, settings.instore_field_location_id),
        workstation_id=_field(cart, settings.instore_field_workstation_id),
        colleague_id=_field(cart, settings.instore_field_user_id),
        occurred_at=datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        source_webhook_id=webhook_id,
    )
