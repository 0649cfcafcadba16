"""The cart rules, on the official example Cart and variations of it."""

from __future__ import annotations

import copy
from typing import Any

import msgspec
import pytest

from instore_cart_mapping import rules
from instore_cart_mapping.model import Cart, Order
from instore_shared.contract.cart_lookup import LookupStatus
from tests.conftest import load_example

ORDER_FIELD, LINE_FIELD = "purchaseOrderId", "purchaseLineItemId"


def _line(line_id: str, qty: int, sku: str = "SKU-1", custom: dict[str, Any] | None = None) -> dict[str, Any]:
    line: dict[str, Any] = {"id": line_id, "quantity": qty, "variant": {"sku": sku}}
    if custom is not None:
        line["custom"] = {"type": {"typeId": "type", "id": "t"}, "fields": custom}
    return line


def _cart(**changes: Any) -> Cart:
    raw = load_example("cart.example.json")
    raw = copy.deepcopy(raw)
    raw["lineItems"] = [_line("l1", 1)]
    raw.update(changes)
    return msgspec.convert(raw, Cart)


def _order(lines: list[dict[str, Any]], returned: list[dict[str, Any]] | None = None, currency: str = "EUR") -> Order:
    raw = copy.deepcopy(load_example("order.example.json"))
    raw["lineItems"] = lines
    raw["customLineItems"] = []
    raw["returnInfo"] = [{"items": returned}] if returned else []
    raw["totalPrice"]["currencyCode"] = currency
    return msgspec.convert(raw, Order)


def test_official_example_cart_decodes_and_empty_cart_is_refused() -> None:
    cart = msgspec.convert(load_example("cart.example.json"), Cart)
    refusal = rules.check_sale_cart(cart, "EUR", ORDER_FIELD)
    assert refusal is not None and refusal.reason == "cart-empty" and refusal.status is LookupStatus.INVALID


def test_active_nonempty_cart_in_currency_is_accepted() -> None:
    assert rules.check_sale_cart(_cart(), "EUR", ORDER_FIELD) is None


def test_custom_line_items_alone_make_a_cart_nonempty() -> None:
    cart = _cart(lineItems=[], customLineItems=[{"id": "c1", "quantity": 1, "slug": "gift-wrap"}])
    assert rules.check_sale_cart(cart, "EUR", ORDER_FIELD) is None


@pytest.mark.parametrize("state", ["Ordered", "Merged", "Frozen"])
def test_cart_not_active_is_a_conflict(state: str) -> None:
    refusal = rules.check_sale_cart(_cart(cartState=state), "EUR", ORDER_FIELD)
    assert refusal is not None and refusal.status is LookupStatus.CONFLICT and refusal.reason == "cart-not-active"


def test_wrong_currency_is_refused() -> None:
    refusal = rules.check_sale_cart(_cart(), "USD", ORDER_FIELD)
    assert refusal is not None and refusal.reason == "wrong-currency"


def _return_cart(lines: list[dict[str, Any]]) -> Cart:
    return _cart(lineItems=lines)


def _check(cart: Cart, orders: dict[str, Order | None]) -> rules.Refusal | None:
    refs, refusal = rules.purchase_refs(cart, ORDER_FIELD, LINE_FIELD)
    assert refusal is None
    return rules.check_return_cart(cart, refs, orders, "EUR")


def test_return_line_without_purchase_fields_is_refused() -> None:
    cart = _return_cart([_line("r1", 1, custom={ORDER_FIELD: "o1"})])
    refs, refusal = rules.purchase_refs(cart, ORDER_FIELD, LINE_FIELD)
    assert refs == [] and refusal is not None and refusal.reason == "return-line-without-purchase"


def test_return_within_bought_quantity_is_accepted() -> None:
    cart = _return_cart([_line("r1", 2, custom={ORDER_FIELD: "o1", LINE_FIELD: "ol1"})])
    assert _check(cart, {"o1": _order([_line("ol1", 3)])}) is None


def test_return_counts_earlier_returns_and_sibling_lines() -> None:
    order = _order([_line("ol1", 3)], returned=[{"quantity": 1, "lineItemId": "ol1", "shipmentState": "Returned"}])
    ok = _return_cart([_line("r1", 2, custom={ORDER_FIELD: "o1", LINE_FIELD: "ol1"})])
    assert _check(ok, {"o1": order}) is None
    two_lines = _return_cart(
        [
            _line("r1", 1, custom={ORDER_FIELD: "o1", LINE_FIELD: "ol1"}),
            _line("r2", 2, custom={ORDER_FIELD: "o1", LINE_FIELD: "ol1"}),
        ]
    )
    refusal = _check(two_lines, {"o1": order})
    assert refusal is not None and refusal.reason == "return-quantity-exceeded"


def test_unknown_order_or_line_is_refused() -> None:
    cart = _return_cart([_line("r1", 1, custom={ORDER_FIELD: "o1", LINE_FIELD: "nope"})])
    assert _check(cart, {"o1": None}).reason == "purchase-order-not-found"  # type: ignore[union-attr]
    assert _check(cart, {"o1": _order([_line("ol1", 3)])}).reason == "purchase-line-not-found"  # type: ignore[union-attr]


def test_other_product_or_currency_is_refused() -> None:
    cart = _return_cart([_line("r1", 1, sku="SKU-2", custom={ORDER_FIELD: "o1", LINE_FIELD: "ol1"})])
    assert _check(cart, {"o1": _order([_line("ol1", 3)])}).reason == "return-product-mismatch"  # type: ignore[union-attr]
    same = _return_cart([_line("r1", 1, custom={ORDER_FIELD: "o1", LINE_FIELD: "ol1"})])
    assert _check(same, {"o1": _order([_line("ol1", 3)], currency="USD")}).reason == "purchase-currency-mismatch"  # type: ignore[union-attr]


def test_return_cart_is_refused_on_the_sale_path() -> None:
    cart = _return_cart([_line("r1", 1, custom={ORDER_FIELD: "o1", LINE_FIELD: "ol1"})])
    refusal = rules.check_sale_cart(cart, "EUR", ORDER_FIELD)
    assert refusal is not None and refusal.reason == "cart-is-a-return"
