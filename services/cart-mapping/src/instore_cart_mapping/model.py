"""The parts of Composable Commerce Carts and Orders the rules read (msgspec views).

Unknown fields are ignored on purpose: we decode only what we check and pass the Cart on
as the raw bytes the API returned. Shapes: https://docs.commercetools.com/api/projects/carts
and https://docs.commercetools.com/api/projects/orders.
"""

from __future__ import annotations

from typing import Any

import msgspec


class Money(msgspec.Struct, frozen=True):
    """``TypedMoney``: integer ``centAmount`` in minor units of ``currencyCode`` (ISO 4217)."""

    currencyCode: str
    centAmount: int


class CustomFields(msgspec.Struct, frozen=True):
    """``CustomFields``: the values, keyed by the project's field names."""

    fields: dict[str, Any] = {}


class Variant(msgspec.Struct, frozen=True):
    """The product variant of a line item (only its SKU is read)."""

    sku: str | None = None


class LineItem(msgspec.Struct, frozen=True):
    """A (product) line item."""

    id: str
    quantity: int
    variant: Variant | None = None
    productId: str | None = None
    custom: CustomFields | None = None


class CustomLineItem(msgspec.Struct, frozen=True):
    """A custom line item (no product behind it)."""

    id: str
    quantity: int
    slug: str | None = None
    custom: CustomFields | None = None


class Cart(msgspec.Struct, frozen=True):
    """A Cart."""

    id: str
    version: int
    cartState: str
    totalPrice: Money
    key: str | None = None
    lineItems: list[LineItem] = []
    customLineItems: list[CustomLineItem] = []


class ReturnItem(msgspec.Struct, frozen=True):
    """One returned quantity of one line item (``LineItemReturnItem`` or ``CustomLineItemReturnItem``)."""

    quantity: int
    lineItemId: str | None = None
    customLineItemId: str | None = None


class ReturnInfo(msgspec.Struct, frozen=True):
    """A return recorded on an Order."""

    items: list[ReturnItem] = []


class Order(msgspec.Struct, frozen=True):
    """An Order."""

    id: str
    version: int
    totalPrice: Money
    orderNumber: str | None = None
    lineItems: list[LineItem] = []
    customLineItems: list[CustomLineItem] = []
    returnInfo: list[ReturnInfo] = []


cart_decoder = msgspec.json.Decoder(Cart)
order_decoder = msgspec.json.Decoder(Order)
