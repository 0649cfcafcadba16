"""An in-memory stand-in for :class:`CommercetoolsClient`, for unit tests.

It answers by id or key exactly like the real client (raw JSON bytes), and can be told
to fail, so handlers are tested without a network. Creating an Order from a Cart enforces
the rules the npm mock does not (https://docs.commercetools.com/api/projects/orders#create-order-from-cart):
the cart's version must match (409 with the current version), the cart must be Active
(400 InvalidOperation), an ``orderNumber`` is unique (400 DuplicateField); the cart becomes
``Ordered``.

Updates (``update``) apply the Order and Payment actions the services send, with the
version check, as https://docs.commercetools.com/api/projects/orders#update-actions and
.../payments#update-actions describe them: ``addReturnInfo`` (return item ``key`` kept and
unique per Order; ``paymentState`` ``Initial`` for ``Returned`` items, ``NonRefundable``
otherwise), ``setReturnPaymentState`` by ``returnItemId`` or ``returnItemKey``,
``changeOrderState``, ``addTransaction``.

Custom Objects (https://docs.commercetools.com/api/projects/custom-objects): ``POST /custom-objects``
creates or replaces by (container, key); a draft ``version`` must equal the stored one, so
``version: 0`` creates only when absent (409 ``ConcurrentModification`` otherwise).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from typing import Any

import msgspec

from instore_shared.commercetools.client import ApiResponse
from instore_shared.commercetools.errors import (
    CommercetoolsError,
    ConcurrentModification,
    DuplicateField,
    InvalidInput,
    NotFound,
)


class InMemoryCommerce:
    """Carts and Orders held as JSON; ``fail_with`` makes calls raise that error — every call, or
    only the next ``fail_times`` calls when that is set (an outage that ends)."""

    def __init__(self) -> None:
        self.carts: dict[str, bytes] = {}
        self.orders: dict[str, bytes] = {}
        self.fail_with: CommercetoolsError | None = None
        self.fail_times: int | None = None
        self.calls: list[tuple[str, str]] = []
        self.payments: dict[str, dict[str, Any]] = {}
        self.orders_created = 0
        self.updates: list[tuple[str, str, list[dict[str, Any]]]] = []
        self.before_update: Callable[[str, str], None] | None = None
        """Called with (resource, id) before each update is applied; may raise (tests)."""
        self.custom_objects: dict[tuple[str, str], dict[str, Any]] = {}
        self.custom_object_writes: list[tuple[str, str, Any]] = []
        self.before_custom_object_write: Callable[[str, str, Any, int | None], None] | None = None
        """Called with (container, key, value, version) before each Custom Object write; may raise (tests)."""

    def _maybe_fail(self) -> None:
        if self.fail_with is None:
            return
        error = self.fail_with
        if self.fail_times is not None:
            self.fail_times -= 1
            if self.fail_times <= 0:
                self.fail_with, self.fail_times = None, None
        raise error

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

    def add_payment(self, payment: dict[str, Any]) -> None:
        """Store a Payment (referenced from carts' ``paymentInfo``)."""
        self.payments[payment["id"]] = payment

    def cart(self, ref: str) -> dict[str, Any]:
        """The stored cart as a dict (by id or key). Raises :class:`NotFound`."""
        raw = self.carts.get(ref) or self.carts.get(f"key={ref}")
        if raw is None:
            raise NotFound(404, "ResourceNotFound", f"cart {ref} not found")
        return msgspec.json.decode(raw)

    async def find_cart(self, ref: str, expand: tuple[str, ...] = ()) -> ApiResponse:
        """The cart by id, else by key, Payments inlined when ``expand`` asks. Raises :class:`NotFound`."""
        self.calls.append(("find_cart", ref))
        await asyncio.sleep(0)  # like a network call: other tasks run in between
        self._maybe_fail()
        raw = self.carts.get(ref) or self.carts.get(f"key={ref}")
        if raw is None:
            raise NotFound(404, "ResourceNotFound", f"cart {ref} not found")
        if "paymentInfo.payments[*]" in expand:
            cart = msgspec.json.decode(raw)
            for ref_ in (cart.get("paymentInfo") or {}).get("payments", []):
                ref_["obj"] = self.payments[ref_["id"]]
            raw = msgspec.json.encode(cart)
        return ApiResponse(200, raw)

    async def get_order_by_order_number(self, order_number: str, expand: tuple[str, ...] = ()) -> ApiResponse:
        """The order whose ``orderNumber`` is ``order_number``. Raises :class:`NotFound`."""
        await asyncio.sleep(0)
        raw = self.orders.get(f"order-number={order_number}")
        if raw is None:
            raise NotFound(404, "ResourceNotFound", f"order {order_number} not found")
        return ApiResponse(200, self._expanded(raw, expand))

    def order(self, ref: str) -> dict[str, Any]:
        """The stored order as a dict (by id or order number). Raises :class:`NotFound`."""
        raw = self.orders.get(ref) or self.orders.get(f"order-number={ref}")
        if raw is None:
            raise NotFound(404, "ResourceNotFound", f"order {ref} not found")
        return msgspec.json.decode(raw)

    def _expanded(self, raw: bytes, expand: tuple[str, ...]) -> bytes:
        if "paymentInfo.payments[*]" not in expand:
            return raw
        resource = msgspec.json.decode(raw)
        for ref_ in (resource.get("paymentInfo") or {}).get("payments", []):
            ref_["obj"] = self.payments[ref_["id"]]
        return msgspec.json.encode(resource)

    async def update(self, resource: str, resource_id: str, version: int, actions: list[dict[str, Any]]) -> ApiResponse:
        """Apply ``actions`` to an Order or Payment at ``version`` (see the module doc for what is supported).

        Raises ``ConcurrentModification`` for a stale version, ``NotFound``, ``DuplicateField`` for a
        return item key already on the Order, ``InvalidInput`` for an unknown return item or action.
        """
        self.calls.append((f"update_{resource}", resource_id))
        await asyncio.sleep(0)  # like a network call: other tasks run in between
        self._maybe_fail()
        if self.before_update:
            self.before_update(resource, resource_id)
        if resource == "orders":
            current = self.order(resource_id)
        elif resource == "payments" and resource_id in self.payments:
            current = msgspec.json.decode(msgspec.json.encode(self.payments[resource_id]))
        else:
            raise NotFound(404, "ResourceNotFound", f"{resource} {resource_id} not found")
        if current["version"] != version:
            raise ConcurrentModification(409, "ConcurrentModification", "version mismatch", current_version=current["version"])
        for action in actions:
            _apply(current, action)
        current["version"] += 1
        if resource == "orders":
            self.add_order(current)
        else:
            self.payments[resource_id] = current
        self.updates.append((resource, resource_id, actions))
        return ApiResponse(200, msgspec.json.encode(current))

    async def find_order_by_cart(self, cart_id: str) -> ApiResponse | None:
        """The order made from cart ``cart_id``, or None."""
        for key, raw in self.orders.items():
            if not key.startswith("order-number=") and msgspec.json.decode(raw).get("cart", {}).get("id") == cart_id:
                return ApiResponse(200, raw)
        return None

    async def change_order_state(self, order_id: str, version: int, order_state: str) -> ApiResponse:
        """``changeOrderState`` on a stored Order, with the version check."""
        raw = self.orders.get(order_id)
        if raw is None:
            raise NotFound(404, "ResourceNotFound", f"order {order_id} not found")
        order = msgspec.json.decode(raw)
        if order["version"] != version:
            raise ConcurrentModification(409, "ConcurrentModification", "version mismatch", current_version=order["version"])
        order["orderState"], order["version"] = order_state, order["version"] + 1
        self.add_order(order)
        return ApiResponse(200, msgspec.json.encode(order))

    async def create_order_from_cart(self, cart_id: str, cart_version: int, order_number: str, payment_state: str) -> ApiResponse:
        """Create an Order from the cart, enforcing version, state and unique order numbers (see module doc)."""
        self.calls.append(("create_order_from_cart", cart_id))
        await asyncio.sleep(0)
        self._maybe_fail()
        cart = self.cart(cart_id)
        if cart["version"] != cart_version:
            raise ConcurrentModification(409, "ConcurrentModification", "version mismatch", current_version=cart["version"])
        if cart["cartState"] != "Active":
            raise InvalidInput(400, "InvalidOperation", f"cart {cart_id} is {cart['cartState']}")
        if f"order-number={order_number}" in self.orders:
            raise DuplicateField(400, "DuplicateField", "orderNumber taken", field="orderNumber", duplicate_value=order_number)
        order = {
            "id": str(uuid.uuid4()),
            "version": 1,
            "orderNumber": order_number,
            "paymentState": payment_state,
            "orderState": "Open",
            "cart": {"typeId": "cart", "id": cart_id},
            "totalPrice": cart["totalPrice"],
            "lineItems": cart.get("lineItems", []),
            "paymentInfo": cart.get("paymentInfo"),
        }
        self.add_order(order)
        cart["cartState"], cart["version"] = "Ordered", cart["version"] + 1
        self.add_cart(cart)
        self.orders_created += 1
        return ApiResponse(201, msgspec.json.encode(order))

    async def get_custom_object(self, container: str, key: str) -> ApiResponse:
        """``GET /custom-objects/{container}/{key}``. Raises :class:`NotFound`."""
        self.calls.append(("get_custom_object", f"{container}/{key}"))
        await asyncio.sleep(0)  # like a network call: other tasks run in between
        self._maybe_fail()
        stored = self.custom_objects.get((container, key))
        if stored is None:
            raise NotFound(404, "ResourceNotFound", f"custom object {container}/{key} not found")
        return ApiResponse(200, msgspec.json.encode(stored))

    async def put_custom_object(self, container: str, key: str, value: Any, version: int | None = None) -> ApiResponse:
        """Create or replace the Custom Object; a ``version`` must be the stored one (0: none stored).

        Raises ``ConcurrentModification`` (409, with the current version) when it is not.
        """
        self.calls.append(("put_custom_object", f"{container}/{key}"))
        await asyncio.sleep(0)
        self._maybe_fail()
        if self.before_custom_object_write:
            self.before_custom_object_write(container, key, value, version)
        stored = self.custom_objects.get((container, key))
        current = stored["version"] if stored else 0
        if version is not None and version != current:
            raise ConcurrentModification(409, "ConcurrentModification", "version mismatch", current_version=current or None)
        obj = {
            "id": stored["id"] if stored else str(uuid.uuid4()),
            "version": current + 1,
            "container": container,
            "key": key,
            "value": value,
        }
        self.custom_objects[(container, key)] = obj
        self.custom_object_writes.append((container, key, value))
        return ApiResponse(200 if stored else 201, msgspec.json.encode(obj))

    async def find_order(self, ref: str, expand: tuple[str, ...] = ()) -> ApiResponse:
        """The order by id, else by order number. Raises :class:`NotFound`."""
        self.calls.append(("find_order", ref))
        self._maybe_fail()
        raw = self.orders.get(ref) or self.orders.get(f"order-number={ref}")
        if raw is None:
            raise NotFound(404, "ResourceNotFound", f"order {ref} not found")
        return ApiResponse(200, self._expanded(raw, expand))


def _apply(resource: dict[str, Any], action: dict[str, Any]) -> None:
    name = action.get("action")
    if name == "addReturnInfo":
        keys = {item.get("key") for info in resource.get("returnInfo") or [] for item in info["items"]}
        items = []
        for draft in action["items"]:
            if draft.get("key") is not None and draft["key"] in keys:
                raise DuplicateField(400, "DuplicateField", "return item key taken", field="key", duplicate_value=draft["key"])
            keys.add(draft.get("key"))
            items.append(
                {
                    **draft,
                    "id": str(uuid.uuid4()),
                    "type": "CustomLineItemReturnItem" if draft.get("customLineItemId") else "LineItemReturnItem",
                    "paymentState": "Initial" if draft["shipmentState"] == "Returned" else "NonRefundable",
                }
            )
        resource.setdefault("returnInfo", []).append({"items": items})
    elif name == "setReturnPaymentState":
        for info in resource.get("returnInfo") or []:
            for item in info["items"]:
                if item["id"] == action.get("returnItemId") or (
                    action.get("returnItemKey") and item.get("key") == action["returnItemKey"]
                ):
                    item["paymentState"] = action["paymentState"]
                    return
        raise InvalidInput(400, "InvalidOperation", "no such return item")
    elif name == "changeOrderState":
        resource["orderState"] = action["orderState"]
    elif name == "addTransaction":
        resource.setdefault("transactions", []).append({"id": str(uuid.uuid4()), "state": "Initial", **action["transaction"]})
    else:
        raise InvalidInput(400, "InvalidInput", f"the fake does not implement {name}")
