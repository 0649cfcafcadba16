"""The cart lookup handler with an in-memory Composable Commerce."""

from __future__ import annotations

import copy
from typing import Any

import msgspec
import pytest

from instore_cart_mapping.handler import handle_cart_lookup
from instore_cart_mapping.settings import CartMappingSettings
from instore_shared.commercetools.errors import AuthenticationFailed, CommercetoolsError, InvalidInput, TransientError
from instore_shared.contract.cart_lookup import (
    CartKind,
    CartLookupRequest,
    LookupStatus,
)
from tests.conftest import load_example
from tests.fakes.commerce import InMemoryCommerce

SETTINGS = CartMappingSettings(instore_currency="EUR")


def _sale_cart() -> dict[str, Any]:
    cart = copy.deepcopy(load_example("cart.example.json"))
    cart["key"] = "sale-1"
    cart["lineItems"] = [{"id": "l1", "quantity": 2, "variant": {"sku": "SKU-1"}, "custom": None}]
    return cart


def _request(ref: str, kind: CartKind = CartKind.SALE) -> CartLookupRequest:
    return CartLookupRequest(cart_ref=ref, kind=kind, requested_at="2026-11-30T00:00:00Z")


async def test_found_by_id_and_by_key_returns_the_exact_bytes() -> None:
    commerce = InMemoryCommerce()
    cart = _sale_cart()
    commerce.add_cart(cart)
    for ref in (cart["id"], "sale-1"):
        reply = await handle_cart_lookup(_request(ref), commerce, SETTINGS)
        assert reply.status is LookupStatus.FOUND
        assert reply.cart_json() == commerce.carts[cart["id"]]


async def test_unknown_cart_is_not_found() -> None:
    reply = await handle_cart_lookup(_request("nope"), InMemoryCommerce(), SETTINGS)
    assert reply.status is LookupStatus.NOT_FOUND and reply.reason == "cart-not-found"


async def test_ordered_cart_is_refused_with_reason() -> None:
    commerce = InMemoryCommerce()
    cart = _sale_cart()
    cart["cartState"] = "Ordered"
    commerce.add_cart(cart)
    reply = await handle_cart_lookup(_request(cart["id"]), commerce, SETTINGS)
    assert (reply.status, reply.reason, reply.cart_json()) == (LookupStatus.CONFLICT, "cart-not-active", None)


async def test_commerce_down_is_an_upstream_error_not_an_exception() -> None:
    commerce = InMemoryCommerce()
    commerce.fail_with = TransientError(503, "", "down")
    reply = await handle_cart_lookup(_request("x1"), commerce, SETTINGS)
    assert reply.status is LookupStatus.UPSTREAM_ERROR


@pytest.mark.parametrize(
    ("error", "status", "reason", "detail"),
    [
        (InvalidInput(400, "InvalidInput", "bad key"), LookupStatus.INVALID, "commerce-refused", "answered 400 InvalidInput"),
        (CommercetoolsError(414, "", "URI too long"), LookupStatus.INVALID, "commerce-refused", "answered 414"),
        (CommercetoolsError(403, "insufficient_scope", "no"), LookupStatus.UPSTREAM_ERROR, "commerce-access-denied", "403"),
        (AuthenticationFailed(401, "invalid_client", "no"), LookupStatus.UPSTREAM_ERROR, "commerce-access-denied", "401"),
        (TransientError(429, "", "slow down"), LookupStatus.UPSTREAM_ERROR, "commerce-unavailable", "answered 429"),
        (TransientError(503, "", "down"), LookupStatus.UPSTREAM_ERROR, "commerce-unavailable", "answered 503"),
        (TransientError(0, "", "connect failed"), LookupStatus.UPSTREAM_ERROR, "commerce-unavailable", "could not be reached"),
    ],
)
async def test_a_4xx_from_commerce_is_a_refusal_never_unavailable(
    error: CommercetoolsError,
    status: LookupStatus,
    reason: str,
    detail: str,
) -> None:
    """Issue 10 B4: only 429/5xx/no answer are an outage; a 4xx is refused (401/403: our credentials)."""
    for kind in (CartKind.SALE, CartKind.RETURN):
        commerce = InMemoryCommerce()
        commerce.fail_with = error
        reply = await handle_cart_lookup(_request("k" * 256, kind), commerce, SETTINGS)
        assert (reply.status, reply.reason) == (status, reason)
        assert reply.detail is not None and detail in reply.detail


async def test_a_4xx_reading_the_purchase_order_is_a_refusal_too() -> None:
    commerce = InMemoryCommerce()
    cart = _sale_cart()
    cart["lineItems"] = [
        {
            "id": "r1",
            "quantity": 1,
            "variant": {"sku": "SKU-1"},
            "custom": {
                "type": {"typeId": "type", "id": "t"},
                "fields": {"purchaseOrderId": "o" * 256, "purchaseLineItemId": "ol1"},
            },
        }
    ]
    commerce.add_cart(cart)

    async def refusing_find_order(ref: str, expand: tuple[str, ...] = ()) -> Any:
        raise CommercetoolsError(414, "", "URI too long")

    commerce.find_order = refusing_find_order  # type: ignore[method-assign]
    reply = await handle_cart_lookup(_request(cart["id"], CartKind.RETURN), commerce, SETTINGS)
    assert (reply.status, reply.reason) == (LookupStatus.INVALID, "commerce-refused")


async def test_return_cart_is_checked_against_the_order() -> None:
    commerce = InMemoryCommerce()
    order = copy.deepcopy(load_example("order.example.json"))
    order["lineItems"] = [{"id": "ol1", "quantity": 1, "variant": {"sku": "SKU-1"}}]
    order["totalPrice"]["currencyCode"] = "EUR"
    order["orderNumber"] = "store-1-000001"
    commerce.add_order(order)
    cart = _sale_cart()
    cart["key"] = "ret-1"
    cart["lineItems"] = [
        {
            "id": "r1",
            "quantity": 1,
            "variant": {"sku": "SKU-1"},
            "custom": {
                "type": {"typeId": "type", "id": "t"},
                "fields": {"purchaseOrderId": "store-1-000001", "purchaseLineItemId": "ol1"},
            },
        }
    ]
    commerce.add_cart(cart)
    reply = await handle_cart_lookup(_request("ret-1", CartKind.RETURN), commerce, SETTINGS)
    assert reply.status is LookupStatus.FOUND, reply
    # the same cart asking back two of a line bought once
    cart["lineItems"][0]["quantity"] = 2
    commerce.add_cart(cart)
    reply = await handle_cart_lookup(_request("ret-1", CartKind.RETURN), commerce, SETTINGS)
    assert reply.reason == "return-quantity-exceeded"


async def test_reply_round_trips_through_the_wire_schema() -> None:
    from instore_shared.contract import cart_lookup as c

    commerce = InMemoryCommerce()
    commerce.add_cart(_sale_cart())
    reply = await handle_cart_lookup(_request("sale-1"), commerce, SETTINGS)
    decoded = c.decode_reply(c.encode(reply))
    assert msgspec.json.decode(decoded.cart_json()) == _sale_cart()  # type: ignore[arg-type]
