"""End to end: sales paid through the gateway become Orders, then signed refund webhooks through
the gateway become return items and Refund transactions on those Orders and Payments — once —
and ``commerce.refunds.completed.v1`` events; gateway, order-finalization and refund run as
processes against real Kafka and the commercetools mock (whose return actions
tools/ct-mock/server.mjs adds)."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import signal
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaConsumer

from instore_devfakes.instore_samples import payment_webhook, refund_webhook
from instore_shared.announcements import CONTAINER
from tests.e2e.test_order_flow import _commerce, _marker, _orders_of, _processed, _sale
from tests.support.processes import (
    CtMock,
    Kafka,
    Service,
    free_port,
    start_service,
    wait_until,
)

pytestmark = pytest.mark.e2e

SECRET = "e2e-refund-secret-" + uuid.uuid4().hex
REFUND_GROUP = f"refund-e2e-{uuid.uuid4().hex[:6]}"
EUR = "EUR"


@dataclass
class Stack:
    gateway: Service
    finalizer: Service
    refund: Service
    mock: CtMock
    kafka: Kafka


def _refund_service(kafka: Kafka, mock: CtMock, name: str = "refund", **extra: str) -> Service:
    port = free_port()
    return start_service(
        name,
        "instore_refund",
        {
            "KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
            **mock.settings_env(),
            "REFUND_HTTP_PORT": str(port),
            "REFUND_CONSUMER_GROUP": REFUND_GROUP,
            **extra,
        },
        port,
    )


@pytest.fixture(scope="module")
def stack(kafka: Kafka, ct_mock: CtMock) -> Iterator[Stack]:
    gateway_port, finalizer_port = free_port(), free_port()
    gateway = start_service(
        "gateway-refunds",
        "instore_gateway",
        {
            "KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
            "GATEWAY_HTTP_PORT": str(gateway_port),
            "INSTORE_CALLBACK_API_KEY": "e2e-refunds-key-" + uuid.uuid4().hex,
            "INSTORE_WEBHOOK_SECRET": SECRET,
        },
        gateway_port,
    )
    finalizer = start_service(
        "order-finalization-refunds",
        "instore_order_finalization",
        {
            "KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
            **ct_mock.settings_env(),
            "ORDER_FINALIZATION_HTTP_PORT": str(finalizer_port),
            "ORDER_FINALIZATION_CONSUMER_GROUP": f"order-finalization-refunds-{uuid.uuid4().hex[:6]}",
        },
        finalizer_port,
    )
    refund = _refund_service(kafka, ct_mock)
    try:
        yield Stack(gateway, finalizer, refund, ct_mock, kafka)
    finally:
        for service in (gateway, finalizer, refund):
            service.stop()


def _post_webhook(stack: Stack, body: bytes) -> str:
    response = httpx.post(
        f"{stack.gateway.url}/instore/webhooks",
        content=body,
        headers={"X-Signature": hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()},
    )
    assert response.status_code == 202, response.text
    return response.json()["webhookId"]


async def _ordered_sale(stack: Stack, tenders: list[tuple[str, int]]) -> dict[str, Any]:
    """A sale of 2 × SKU-MUG (2,500 cents) paid by ``tenders`` (method, cents), turned into an Order
    through the gateway and order-finalization; the Order with its Payments expanded."""
    cart = await _sale(stack.mock, [(method, cents, "Success") for method, cents in tenders])
    _post_webhook(stack, payment_webhook(cart["id"]))

    async def announced() -> bool:  # the Order exists and its payments-completed event went out
        orders = await _orders_of(stack.mock, cart["id"])
        marker = await _marker(stack.mock, orders[0]["id"]) if orders else None
        return marker is not None and marker["value"]["state"] == "published"

    await _wait_async(announced, 30, f"the Order of cart {cart['id']}")
    async with _commerce(stack.mock) as c:
        (order,) = await _orders_of(stack.mock, cart["id"])
        return (await c.get_order(order["id"], ("paymentInfo.payments[*]",))).json()


async def _wait_async(condition: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not await condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        await asyncio.sleep(0.1)


async def _return_cart(stack: Stack, lines: list[tuple[str, str, int]]) -> dict[str, Any]:
    """A return cart as InStore makes it: per (order ref, order line item id, quantity), a SKU-MUG line
    pointing at the purchase through the line item Custom Fields."""
    async with _commerce(stack.mock) as c:
        return (
            await c.request(
                "POST",
                "/carts",
                json={
                    "currency": EUR,
                    "country": "DE",
                    "key": f"return-{uuid.uuid4().hex[:10]}",
                    "custom": {
                        "type": {"typeId": "type", "key": "instore-order"},
                        "fields": {
                            "locationId": "store-berlin-01",
                            "workstationId": "pos-3",
                            "userId": "colleague-42",
                            "orderType": "return",
                        },
                    },
                    "lineItems": [
                        {
                            "sku": "SKU-MUG",
                            "quantity": qty,
                            "custom": {
                                "type": {"typeId": "type", "key": "instore-line-item"},
                                "fields": {
                                    "purchaseOrderId": order_ref,
                                    "purchaseLineItemId": line_id,
                                    "returnComment": "broken",
                                },
                            },
                        }
                        for order_ref, line_id, qty in lines
                    ],
                },
            )
        ).json()


def _payment_id(order: dict[str, Any], method: str) -> str:
    return next(ref["id"] for ref in order["paymentInfo"]["payments"] if ref["obj"]["paymentMethodInfo"]["method"] == method)


async def _state(stack: Stack, order_id: str) -> tuple[list[dict[str, Any]], dict[str, list[dict[str, Any]]]]:
    """The Order's return items, and the Refund transactions of each of its Payments."""
    async with _commerce(stack.mock) as c:
        order = (await c.get_order(order_id, ("paymentInfo.payments[*]",))).json()
    items = [item for info in order.get("returnInfo") or [] for item in info["items"]]
    refunds = {
        ref["id"]: [t for t in ref["obj"]["transactions"] if t["type"] == "Refund"] for ref in order["paymentInfo"]["payments"]
    }
    return items, refunds


async def _read_topic(
    kafka: Kafka, topic: str, match: Any, settle: float = 2.0, timeout_s: float = 30, want: int = 1
) -> list[Any]:
    """Records of ``topic`` for which ``match(record)`` gives a value: read until ``want`` are there, then ``settle`` s more."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=kafka.bootstrap_servers, group_id=None, auto_offset_reset="earliest")
    await consumer.start()
    found: list[Any] = []
    try:
        deadline, settled = time.monotonic() + timeout_s, None
        while time.monotonic() < (settled or deadline):
            for records in (await consumer.getmany(timeout_ms=300)).values():
                found += [m for m in (match(r) for r in records) if m is not None]
            if len(found) >= want and settled is None:
                settled = time.monotonic() + settle
    finally:
        await consumer.stop()
    return found


async def _events(kafka: Kafka, return_cart_id: str, want: int = 1) -> list[dict[str, Any]]:
    def match(record: Any) -> dict[str, Any] | None:
        event = json.loads(record.value)
        return event if event["returnCartId"] == return_cart_id else None

    return await _read_topic(kafka, "commerce.refunds.completed.v1", match, want=want)


async def _dead_letter(kafka: Kafka, webhook_id: str) -> dict[str, str]:
    def match(record: Any) -> dict[str, str] | None:
        headers = {k: v.decode() for k, v in record.headers}
        return headers if headers.get("webhook-id") == webhook_id else None

    (headers,) = await _read_topic(kafka, "instore.webhooks.v1.dlq", match, settle=0.5)
    return headers


async def test_a_sale_then_a_full_return_through_the_gateway(stack: Stack) -> None:
    order = await _ordered_sale(stack, [("CREDIT_CARD", 2500)])
    line_id = order["lineItems"][0]["id"]
    cart = await _return_cart(stack, [(order["id"], line_id, 2)])
    card = _payment_id(order, "CREDIT_CARD")
    webhook_id = _post_webhook(stack, refund_webhook(cart["id"], [("rf-" + uuid.uuid4().hex, card, 2500, EUR)]))
    (event,) = await _events(stack.kafka, cart["id"])
    items, refunds = await _state(stack, order["id"])
    assert [(i["key"], i["lineItemId"], i["quantity"], i["shipmentState"], i["paymentState"], i["comment"]) for i in items] == [
        (f"ret-{cart['lineItems'][0]['id']}", line_id, 2, "Returned", "Refunded", "broken")
    ]
    (refund,) = refunds[card]
    assert (refund["state"], refund["amount"]["centAmount"]) == ("Success", 2500)
    assert (event["orderId"], event["orderNumber"], event["sourceWebhookId"]) == (order["id"], order["orderNumber"], webhook_id)
    assert event["totalRefunded"] == {"centAmount": 2500, "currencyCode": EUR}
    assert [(r["refundId"], r["transactionId"]) for r in event["refunds"]] == [(refund["interactionId"], refund["id"])]


async def test_a_replayed_refund_for_an_order_the_oms_completed_publishes_nothing_and_changes_nothing(stack: Stack) -> None:
    order = await _ordered_sale(stack, [("CREDIT_CARD", 2500)])
    cart = await _return_cart(stack, [(order["id"], order["lineItems"][0]["id"], 1)])
    body = refund_webhook(
        cart["id"], [("rf-" + uuid.uuid4().hex, _payment_id(order, "CREDIT_CARD"), 1250, EUR)], f"evt-{uuid.uuid4().hex}"
    )
    _post_webhook(stack, body)
    (event,) = await _events(stack.kafka, cart["id"])

    async def marked() -> bool:
        async with _commerce(stack.mock) as c:
            key = f"refunds-completed.{order['id']}.{event['eventId']}"
            return (await c.get_custom_object(CONTAINER, key)).json()["value"]["state"] == "published"

    await _wait_async(marked, 30, "the refund's announcement marker")
    async with _commerce(stack.mock) as c:
        current = (await c.get_order(order["id"])).json()
        assert current["orderState"] == "Open"  # the Order's state is never a marker
        moved = (await c.change_order_state(order["id"], current["version"], "Complete")).json()  # the OMS
    replay = _post_webhook(stack, body)
    wait_until(lambda: _processed(stack.refund, replay) >= 2, 30, "the replay processed")  # same body, same id
    assert [e["eventId"] for e in await _events(stack.kafka, cart["id"])] == [event["eventId"]]
    async with _commerce(stack.mock) as c:
        assert (await c.get_order(order["id"])).json() == moved


async def test_a_partial_return(stack: Stack) -> None:
    order = await _ordered_sale(stack, [("CREDIT_CARD", 2500)])
    cart = await _return_cart(stack, [(order["orderNumber"], order["lineItems"][0]["id"], 1)])
    card = _payment_id(order, "CREDIT_CARD")
    _post_webhook(stack, refund_webhook(cart["id"], [("rf-" + uuid.uuid4().hex, card, 1250, EUR)]))
    (event,) = await _events(stack.kafka, cart["id"])
    items, refunds = await _state(stack, order["id"])
    assert [(i["quantity"], i["paymentState"]) for i in items] == [(1, "Refunded")]
    assert [t["amount"]["centAmount"] for t in refunds[card]] == [1250]
    assert event["items"][0]["quantity"] == 1


async def test_a_return_over_two_orders_and_a_split_tender_sent_five_times(stack: Stack) -> None:
    first = await _ordered_sale(stack, [("CREDIT_CARD", 1500), ("CASH", 1000)])  # split tender
    second = await _ordered_sale(stack, [("CREDIT_CARD", 2500)])
    cart = await _return_cart(
        stack, [(first["id"], first["lineItems"][0]["id"], 2), (second["id"], second["lineItems"][0]["id"], 1)]
    )
    refunds = [
        (f"rf-card-{uuid.uuid4().hex[:8]}", _payment_id(first, "CREDIT_CARD"), 1500, EUR),
        (f"rf-cash-{uuid.uuid4().hex[:8]}", _payment_id(first, "CASH"), 1000, EUR),
        (f"rf-card2-{uuid.uuid4().hex[:8]}", _payment_id(second, "CREDIT_CARD"), 1250, EUR),
    ]
    body = refund_webhook(cart["id"], refunds, f"evt-{uuid.uuid4().hex}")
    for _ in range(5):
        _post_webhook(stack, body)
    events = await _events(stack.kafka, cart["id"], want=2)
    assert sorted(e["orderId"] for e in events) == sorted([first["id"], second["id"]])  # one per Order, not five
    items, by_payment = await _state(stack, first["id"])
    assert [(i["quantity"], i["paymentState"]) for i in items] == [(2, "Refunded")]
    assert sorted((t["interactionId"], t["amount"]["centAmount"]) for ts in by_payment.values() for t in ts) == sorted(
        (r[0], r[2]) for r in refunds[:2]
    )
    items, by_payment = await _state(stack, second["id"])
    assert len(items) == 1 and [len(ts) for ts in by_payment.values()] == [1]
    first_event = next(e for e in events if e["orderId"] == first["id"])
    assert first_event["totalRefunded"]["centAmount"] == 2500 and len(first_event["refunds"]) == 2


async def test_a_quantity_over_return_is_dead_lettered_and_writes_nothing(stack: Stack) -> None:
    order = await _ordered_sale(stack, [("CREDIT_CARD", 2500)])
    cart = await _return_cart(stack, [(order["id"], order["lineItems"][0]["id"], 3)])  # 2 were bought
    webhook_id = _post_webhook(
        stack, refund_webhook(cart["id"], [("rf-" + uuid.uuid4().hex, _payment_id(order, "CREDIT_CARD"), 100, EUR)])
    )
    letter = await _dead_letter(stack.kafka, webhook_id)
    assert letter["dlq-error-reason"] == "return-quantity-exceeded"
    assert letter["dlq-consumer-group"] == REFUND_GROUP
    items, refunds = await _state(stack, order["id"])
    assert items == [] and all(ts == [] for ts in refunds.values())


async def test_the_seeded_return_of_the_seeded_sale(stack: Stack) -> None:
    """docs/running-locally.md's walk-through: demo-sale-cart paid → Order store-berlin-01-000002; the refund
    webhook for demo-sale-return-cart records the cap's return and refund on it, once."""
    seed = stack.mock.seed
    _post_webhook(stack, payment_webhook(seed["saleCartId"]))

    async def ordered() -> bool:
        return bool(await _orders_of(stack.mock, seed["saleCartId"]))

    await _wait_async(ordered, 30, "Order store-berlin-01-000002")
    body = refund_webhook(seed["saleReturnCartKey"], [("rf-demo-1", seed["salePaymentId"], 1500, EUR)], "evt-demo-refund")
    _post_webhook(stack, body)
    _post_webhook(stack, body)
    (event,) = await _events(stack.kafka, seed["saleReturnCartId"])
    (order,) = await _orders_of(stack.mock, seed["saleCartId"])
    assert (event["orderNumber"], event["orderId"]) == ("store-berlin-01-000002", order["id"])
    items, refunds = await _state(stack, order["id"])
    assert [(i["lineItemId"], i["quantity"], i["paymentState"], i["comment"]) for i in items] == [
        (seed["saleLineItemIds"]["SKU-CAP"], 1, "Refunded", "wrong colour")
    ]
    assert [(t["interactionId"], t["amount"]["centAmount"]) for t in refunds[seed["salePaymentId"]]] == [("rf-demo-1", 1500)]


async def test_killed_between_the_return_and_the_refund_then_restarted_is_consistent(stack: Stack) -> None:
    """Last on purpose: replaces the module's refund service by one that dies after writing the return items."""
    order = await _ordered_sale(stack, [("CREDIT_CARD", 2500)])
    stack.refund.stop(signal.SIGTERM)
    crashing = _refund_service(stack.kafka, stack.mock, "refund-crashing", REFUND_CRASH_AFTER_RETURNS_RECORDED="true")
    cart = await _return_cart(stack, [(order["id"], order["lineItems"][0]["id"], 2)])
    card = _payment_id(order, "CREDIT_CARD")
    _post_webhook(stack, refund_webhook(cart["id"], [("rf-" + uuid.uuid4().hex, card, 2500, EUR)]))
    wait_until(lambda: not crashing.process.alive(), 60, "the refund service to die after writing the return")
    assert crashing.process.proc.returncode == 3
    items, refunds = await _state(stack, order["id"])
    assert [i["paymentState"] for i in items] == ["Initial"] and refunds[card] == []  # half done, not committed
    restarted = _refund_service(stack.kafka, stack.mock, "refund-restarted")
    try:
        (event,) = await _events(stack.kafka, cart["id"])
    finally:
        restarted.stop()
    items, refunds = await _state(stack, order["id"])
    assert [i["paymentState"] for i in items] == ["Refunded"] and len(refunds[card]) == 1
    assert event["totalRefunded"]["centAmount"] == 2500
