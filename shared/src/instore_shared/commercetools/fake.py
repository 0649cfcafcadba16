"""An in-memory stand-in for the read side of :class:`CommercetoolsClient`, for unit tests.

It answers by id or key exactly like the real client (raw JSON bytes), and can be told
to fail, so handlers are tested without a network.
"""

from __future__ import annotations

from typing import Any

import msgspec

from instore_shared.commercetools.client import ApiResponse
from instore_shared.commercetools.errors import CommercetoolsError, NotFound


class InMemoryCommerce:
    """Carts and Orders held as JSON; ``fail_with`` makes every call raise that error."""

    def __init__(self) -> None:
        self.carts: dict[str, bytes] = {}
        self.orders: dict[str, bytes] = {}
        self.fail_with: CommercetoolsError | None = None
        self.calls: list[tuple[str, str]] = []

    def add_cart(self, cart: dict[str, Any]) -> None:
        """Store a Cart under its ``id`` and, when it has one, its ``key``."""
        raw = msgspec.json.encode(cart)
        self.carts[cart["id"]] = raw
        if cart.get("key"):
            self.carts[f"key={cart['key']}"] = raw

    def add_order(self, order: dict[str, Any]) -> None:
        """Store an Order under its ``id`` and, when it has one, its ``orderNumber``."""
        raw = msgspec.json.encode(order)
        self.orders[order["id"]] = raw
        if order.get("orderNumber"):
            self.orders[f"order-number={order['orderNumber']}"] = raw

    async def find_cart(self, ref: str, expand: tuple[str, ...] = ()) -> ApiResponse:
        """The cart by id, else by key. Raises :class:`NotFound`."""
        self.calls.append(("find_cart", ref))
        if self.fail_with:
            raise self.fail_with
        raw = self.carts.get(ref) or self.carts.get(f"key={ref}")
        if raw is None:
            raise NotFound(404, "ResourceNotFound", f"cart {ref} not found")
        return ApiResponse(200, raw)

    async def find_order(self, ref: str) -> ApiResponse:
        """The order by id, else by order number. Raises :class:`NotFound`."""
        self.calls.append(("find_order", ref))
        if self.fail_with:
            raise self.fail_with
        raw = self.orders.get(ref) or self.orders.get(f"order-number={ref}")
        if raw is None:
            raise NotFound(404, "ResourceNotFound", f"order {ref} not found")
        return ApiResponse(200, raw)
