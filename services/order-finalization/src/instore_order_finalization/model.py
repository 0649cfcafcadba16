"""The parts of Carts (with expanded Payments) and Orders the finalization reads (msgspec views).

Shapes: https://docs.commercetools.com/api/projects/carts, .../payments, .../orders. Unknown
fields are ignored. Money is integer ``centAmount`` in minor units of ``currencyCode``.
"""

from __future__ import annotations

from typing import Any

import msgspec


class Money(msgspec.Struct, frozen=True):
    """``TypedMoney``: ``centAmount`` minor units of ``currencyCode`` (ISO 4217)."""

    currencyCode: str
    centAmount: int


class Transaction(msgspec.Struct, frozen=True):
    """A payment transaction: ``type`` Authorization|CancelAuthorization|Charge|Refund|Chargeback,
    ``state`` Initial|Pending|Success|Failure."""

    id: str
    type: str
    state: str
    amount: Money
    interactionId: str | None = None


class PaymentMethodInfo(msgspec.Struct, frozen=True):
    """How the tender was paid (``method``, e.g. CREDIT_CARD or CASH) and through which ``paymentInterface``."""

    method: str | None = None
    paymentInterface: str | None = None


class Payment(msgspec.Struct, frozen=True):
    """A Payment with its transactions."""

    id: str
    amountPlanned: Money
    transactions: list[Transaction] = []
    interfaceId: str | None = None
    key: str | None = None
    paymentMethodInfo: PaymentMethodInfo = PaymentMethodInfo()


class PaymentRef(msgspec.Struct, frozen=True):
    """``Reference`` to a Payment; ``obj`` is present when the cart was read with ``expand=paymentInfo.payments[*]``."""

    id: str
    obj: Payment | None = None


class PaymentInfo(msgspec.Struct, frozen=True):
    """The Payments of a Cart or Order."""

    payments: list[PaymentRef] = []


class CustomFields(msgspec.Struct, frozen=True):
    """``CustomFields``: values by the project's field names."""

    fields: dict[str, Any] = {}


class Cart(msgspec.Struct, frozen=True):
    """A Cart as the finalization needs it."""

    id: str
    version: int
    cartState: str
    totalPrice: Money
    key: str | None = None
    paymentInfo: PaymentInfo | None = None
    custom: CustomFields | None = None
    lineItems: list[Any] = []
    customLineItems: list[Any] = []


class CartRef(msgspec.Struct, frozen=True):
    """``Reference`` to the Cart an Order was created from."""

    id: str


class OrderRef(msgspec.Struct, frozen=True):
    """An Order's identity (``id``, ``version``, ``orderNumber``), the Cart it was created from (absent for an
    imported Order) and ``orderState`` (read, never changed here)."""

    id: str
    version: int
    orderNumber: str | None = None
    orderState: str = "Open"
    cart: CartRef | None = None


cart_decoder = msgspec.json.Decoder(Cart)
order_decoder = msgspec.json.Decoder(OrderRef)
