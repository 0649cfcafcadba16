"""Whether InStore may take a cart — pure functions, no I/O.

Sale cart (https://docs.commercetools.com/instore/ — InStore retrieves the Cart before
it collects a payment; the checks below are ours, see ../shared/reference/instore-contract.md §3):
``Active``, at least one line item or custom line item, in the environment's currency.

Return cart (§5, assumed — see docs): every line points at a line of an existing Order
through the purchase-order and purchase-line-item Custom Fields, and the quantity asked
for is not more than was bought and not yet returned (returns already recorded on the
Order, and other lines of the same return cart pointing at the same purchased line,
count against it).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from instore_cart_mapping.model import Cart, CustomFields, CustomLineItem, LineItem, Order
from instore_shared.contract.cart_lookup import LookupStatus


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a cart may not be taken.

    ``status`` is ``conflict`` (state: HTTP 409) or ``invalid`` (content: HTTP 422);
    ``reason`` is a stable machine-readable code; ``detail`` a sentence for people.
    """

    status: LookupStatus
    reason: str
    detail: str


@dataclass(frozen=True, slots=True)
class PurchaseRef:
    """A return line's pointer at what was bought: order id or number, and line item id."""

    return_line_id: str
    order_ref: str
    line_item_id: str
    quantity: int
    custom_line: bool


def _common_checks(cart: Cart, currency: str) -> Refusal | None:
    if cart.cartState != "Active":
        return Refusal(LookupStatus.CONFLICT, "cart-not-active", f"cart {cart.id} is {cart.cartState}, not Active")
    if not cart.lineItems and not cart.customLineItems:
        return Refusal(LookupStatus.INVALID, "cart-empty", f"cart {cart.id} has no line items")
    if cart.totalPrice.currencyCode != currency:
        return Refusal(
            LookupStatus.INVALID,
            "wrong-currency",
            f"cart {cart.id} is in {cart.totalPrice.currencyCode}; this InStore environment uses {currency}",
        )
    return None


def check_sale_cart(cart: Cart, currency: str, order_field: str) -> Refusal | None:
    """None when InStore may collect payment for ``cart``, else the :class:`Refusal`.

    ``currency`` is the environment's ISO 4217 code; ``order_field`` the line item Custom
    Field that marks a returned line (LINEITEM_PURCHASEORDERID_FIELD): a cart with such a
    line is a return cart and is refused on the sale path (assumed — see docs).
    """
    refused = _common_checks(cart, currency)
    if refused:
        return refused
    lines: list[LineItem | CustomLineItem] = [*cart.lineItems, *cart.customLineItems]
    if any(_field(line.custom, order_field) for line in lines):
        return Refusal(
            LookupStatus.INVALID,
            "cart-is-a-return",
            f"cart {cart.id} has returned lines ({order_field!r} set): use the return cart callback",
        )
    return None


def _field(custom: CustomFields | None, name: str) -> Any:
    return custom.fields.get(name) if custom is not None else None


def purchase_refs(cart: Cart, order_field: str, line_field: str) -> tuple[list[PurchaseRef], Refusal | None]:
    """The purchase pointers of every line of a return cart, or the refusal for a line without one.

    ``order_field`` and ``line_field`` are the project's Custom Field names
    (LINEITEM_PURCHASEORDERID_FIELD, LINEITEM_PURCHASELINEITEM_ID_FIELD).
    """
    refs: list[PurchaseRef] = []
    lines = [(li.id, li.quantity, li.custom, False) for li in cart.lineItems]
    lines += [(cli.id, cli.quantity, cli.custom, True) for cli in cart.customLineItems]
    for line_id, quantity, custom, is_custom in lines:
        order_ref = _field(custom, order_field)
        line_ref = _field(custom, line_field)
        if not isinstance(order_ref, str) or not order_ref or not isinstance(line_ref, str) or not line_ref:
            return [], Refusal(
                LookupStatus.INVALID,
                "return-line-without-purchase",
                f"return line {line_id} does not name the purchased order and line "
                f"(Custom Fields {order_field!r}, {line_field!r})",
            )
        refs.append(PurchaseRef(line_id, order_ref, line_ref, quantity, is_custom))
    return refs, None


def check_return_cart(
    cart: Cart,
    refs: list[PurchaseRef],
    orders: dict[str, Order | None],
    currency: str,
) -> Refusal | None:
    """None when InStore may refund ``cart``, else the :class:`Refusal`.

    Args:
        cart: the return cart.
        refs: its lines' purchase pointers (from :func:`purchase_refs`).
        orders: each ``order_ref`` of ``refs`` mapped to its Order, or None when it does not exist.
        currency: the environment's ISO 4217 code.
    """
    refused = _common_checks(cart, currency)
    if refused:
        return refused
    asked: dict[tuple[str, str], int] = defaultdict(int)
    for ref in refs:
        order = orders.get(ref.order_ref)
        if order is None:
            return Refusal(
                LookupStatus.INVALID,
                "purchase-order-not-found",
                f"return line {ref.return_line_id} points at order {ref.order_ref!r}, which does not exist",
            )
        if order.totalPrice.currencyCode != cart.totalPrice.currencyCode:
            return Refusal(
                LookupStatus.INVALID,
                "purchase-currency-mismatch",
                f"order {order.id} is in {order.totalPrice.currencyCode}, the return cart in {cart.totalPrice.currencyCode}",
            )
        bought_lines = order.customLineItems if ref.custom_line else order.lineItems
        bought = next((li for li in bought_lines if li.id == ref.line_item_id), None)
        if bought is None:
            return Refusal(
                LookupStatus.INVALID,
                "purchase-line-not-found",
                f"return line {ref.return_line_id} points at line {ref.line_item_id!r}, which order {order.id} does not have",
            )
        returned = sum(
            item.quantity
            for info in order.returnInfo
            for item in info.items
            if (item.customLineItemId if ref.custom_line else item.lineItemId) == ref.line_item_id
        )
        asked[(order.id, ref.line_item_id)] += ref.quantity
        left = bought.quantity - returned
        if asked[(order.id, ref.line_item_id)] > left:
            return Refusal(
                LookupStatus.INVALID,
                "return-quantity-exceeded",
                f"line {ref.line_item_id} of order {order.id}: {asked[(order.id, ref.line_item_id)]} asked back, "
                f"{bought.quantity} bought, {returned} already returned",
            )
        if isinstance(bought, LineItem):  # i.e. not ref.custom_line: only a line item has a variant
            line = next(li for li in cart.lineItems if li.id == ref.return_line_id)
            bought_sku = bought.variant.sku if bought.variant else None
            line_sku = line.variant.sku if line.variant else None
            if bought_sku and line_sku and bought_sku != line_sku:
                return Refusal(
                    LookupStatus.INVALID,
                    "return-product-mismatch",
                    f"return line {ref.return_line_id} is {line_sku}, the purchased line is {bought_sku}",
                )
    return None
