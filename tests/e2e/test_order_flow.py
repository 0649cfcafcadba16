"""End to end: a sale's payment webhooks through the gateway become exactly one Order in the
commercetools mock and one ``commerce.payments.completed.v1`` event, with the services as processes.

Carts and Payments are created through the API for each test, like InStore would leave them.
"""

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

from instore_devfakes.instore_samples import payment_webhook
from instore_shared.announcements import CONTAINER
from instore_shared.commercetools import CommercetoolsClient, NotFound
from instore_shared.settings import CommercetoolsSettings
from tests.support.processes import (
    CtMock,
    Kafka,
    Service,
    free_port,
    start_service,
    wait_until,
)

pytestmark = pytest.mark.e2e

SECRET = "e2e-order-secret-" + uuid.uuid4().hex
GROUP = f"order-finalization-e2e-{uuid.uuid4().hex[:6]}"


@dataclass
class Stack:
    gateway: Service
    finalizer: Service
    mock: CtMock
    kafka: Kafka


def _finalizer(kafka: Kafka, mock: CtMock, name: str = "order-finalization", **extra: str) -> Service:
    port = free_port()
    return start_service(
        name,
        "instore_order_finalization",
        {
            "KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
            **mock.settings_env(),
            "ORDER_FINALIZATION_HTTP_PORT": str(port),
            "ORDER_FINALIZATION_CONSUMER_GROUP": GROUP,
            **extra,
        },
        port,
    )


@pytest.fixture(scope="module")
def stack(kafka: Kafka, ct_mock: CtMock) -> Iterator[Stack]:
    port = free_port()
    gateway = start_service(
        "gateway-orders",
        "instore_gateway",
        {
            "KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
            "GATEWAY_HTTP_PORT": str(port),
            "INSTORE_CALLBACK_API_KEY": "e2e-orders-key-" + uuid.uuid4().hex,
            "INSTORE_WEBHOOK_SECRET": SECRET,
        },
        port,
    )
    finalizer = _finalizer(kafka, ct_mock)
    try:
        yield Stack(gateway, finalizer, ct_mock, kafka)
    finally:
        gateway.stop()
        finalizer.stop()


def _commerce(mock: CtMock) -> CommercetoolsClient:
    return CommercetoolsClient(
        CommercetoolsSettings(**{k.removeprefix("CTP_").lower(): v for k, v in mock.settings_env().items()})
    )


async def _sale(mock: CtMock, tenders: list[tuple[str, int, str]]) -> dict[str, Any]:
    """A cart of 2 × SKU-MUG (2,500 cents) with a Payment per (method, cents, state) tender."""
    async with _commerce(mock) as c:
        cart = (
            await c.request(
                "POST",
                "/carts",
                json={
                    "currency": "EUR",
                    "country": "DE",
                    "key": f"sale-{uuid.uuid4().hex[:10]}",
                    "lineItems": [{"sku": "SKU-MUG", "quantity": 2}],
                    "custom": {
                        "type": {"typeId": "type", "key": "instore-order"},
                        "fields": {"locationId": "store-berlin-01", "workstationId": "pos-3", "userId": "colleague-42"},
                    },
                },
            )
        ).json()
        for method, cents, state in tenders:
            cart = await _add_payment(c, cart, method, cents, state)
        return cart


async def _add_payment(c: CommercetoolsClient, cart: dict[str, Any], method: str, cents: int, state: str) -> dict[str, Any]:
    payment = (
        await c.request(
            "POST",
            "/payments",
            json={
                "key": f"pay-{uuid.uuid4().hex[:10]}",
                "amountPlanned": {"currencyCode": "EUR", "centAmount": cents},
                "paymentMethodInfo": {"method": method, "paymentInterface": "instore"},
                "interfaceId": f"psp-{uuid.uuid4().hex[:6]}",
                "transactions": [{"type": "Charge", "state": state, "amount": {"currencyCode": "EUR", "centAmount": cents}}],
            },
        )
    ).json()
    return (
        await c.request(
            "POST",
            f"/carts/{cart['id']}",
            json={
                "version": cart["version"],
                "actions": [{"action": "addPayment", "payment": {"typeId": "payment", "id": payment["id"]}}],
            },
        )
    ).json()


def _send(stack: Stack, cart: dict[str, Any], webhook_id: str | None = None) -> str:
    body = payment_webhook(cart["id"], webhook_id)
    response = httpx.post(
        f"{stack.gateway.url}/instore/webhooks",
        content=body,
        headers={"X-Signature": hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()},
    )
    assert response.status_code == 202, response.text
    return response.json()["webhookId"]


async def _orders_of(mock: CtMock, cart_id: str) -> list[dict[str, Any]]:
    async with _commerce(mock) as c:
        return (await c.request("GET", "/orders", params={"where": f'cart(id="{cart_id}")'})).json()["results"]


async def _events_for(kafka: Kafka, cart_id: str, settle: float = 2.0, timeout_s: float = 30) -> list[dict[str, Any]]:
    """Every payments-completed event of ``cart_id``: read until one is there, then ``settle`` s more."""
    consumer = AIOKafkaConsumer(
        "commerce.payments.completed.v1", bootstrap_servers=kafka.bootstrap_servers, group_id=None, auto_offset_reset="earliest"
    )
    await consumer.start()
    found: list[dict[str, Any]] = []
    try:
        deadline, settled = time.monotonic() + timeout_s, None
        while time.monotonic() < (settled or deadline):
            for records in (await consumer.getmany(timeout_ms=300)).values():
                found += [e for e in (json.loads(r.value) for r in records) if e["cartId"] == cart_id]
            if found and settled is None:
                settled = time.monotonic() + settle
    finally:
        await consumer.stop()
    return found


async def _marker(mock: CtMock, order_id: str) -> dict[str, Any] | None:
    """The announcement marker of Order ``order_id`` (a Custom Object), or None."""
    async with _commerce(mock) as c:
        try:
            return (await c.get_custom_object(CONTAINER, f"payments-completed.{order_id}")).json()
        except NotFound:
            return None


def _processed(service: Service, webhook_id: str) -> int:
    return sum(1 for line in service.process.output().splitlines() if '"webhook.processed"' in line and webhook_id in line)


async def test_a_paid_sale_becomes_one_order_and_one_event_the_order_left_as_created(stack: Stack) -> None:
    cart = await _sale(stack.mock, [("CREDIT_CARD", 2500, "Success")])
    webhook_id = _send(stack, cart)
    events = await _events_for(stack.kafka, cart["id"])
    (order,) = await _orders_of(stack.mock, cart["id"])
    assert order["paymentState"] == "Paid" and order["orderState"] == "Open" and order["version"] == 1
    marker = await _marker(stack.mock, order["id"])
    assert marker is not None and marker["value"]["state"] == "published"
    assert marker["value"]["eventId"] == events[0]["eventId"]
    assert order["orderNumber"] == f"instore-{cart['id']}"
    (event,) = events
    assert (event["orderId"], event["orderNumber"], event["sourceWebhookId"]) == (order["id"], order["orderNumber"], webhook_id)
    assert event["total"] == {"centAmount": 2500, "currencyCode": "EUR"}
    assert (event["locationId"], event["workstationId"], event["colleagueId"]) == ("store-berlin-01", "pos-3", "colleague-42")
    assert [(p["method"], p["amount"]["centAmount"]) for p in event["payments"]] == [("CREDIT_CARD", 2500)]


async def test_the_same_webhook_ten_times_is_one_order_and_one_event(stack: Stack) -> None:
    cart = await _sale(stack.mock, [("CREDIT_CARD", 2500, "Success")])
    webhook_id = f"evt-{uuid.uuid4().hex}"
    for _ in range(10):
        _send(stack, cart, webhook_id)
    wait_until(lambda: _processed(stack.finalizer, webhook_id) >= 10, 60, "ten deliveries processed")
    assert len(await _orders_of(stack.mock, cart["id"])) == 1
    assert len(await _events_for(stack.kafka, cart["id"])) == 1


@pytest.mark.parametrize("state", ["Complete", "Cancelled"])
async def test_a_replay_for_an_order_the_oms_moved_on_publishes_nothing_and_changes_nothing(stack: Stack, state: str) -> None:
    cart = await _sale(stack.mock, [("CREDIT_CARD", 2500, "Success")])
    _send(stack, cart)
    (first,) = await _events_for(stack.kafka, cart["id"], settle=0.5)
    deadline = time.monotonic() + 30
    while ((await _marker(stack.mock, first["orderId"])) or {}).get("value", {}).get("state") != "published":
        assert time.monotonic() < deadline, "the marker was not set published"
        await asyncio.sleep(0.1)  # polling a condition with a deadline
    async with _commerce(stack.mock) as c:
        order = (await c.get_order(first["orderId"])).json()
        moved = (await c.change_order_state(order["id"], order["version"], state)).json()  # the retailer's OMS
    before = await _marker(stack.mock, moved["id"])
    replayed = [_send(stack, cart), _send(stack, {"id": cart["key"]})]  # by id and by key
    wait_until(lambda: all(_processed(stack.finalizer, w) >= 1 for w in replayed), 30, "the replays processed")
    assert [e["eventId"] for e in await _events_for(stack.kafka, cart["id"])] == [first["eventId"]]
    async with _commerce(stack.mock) as c:
        assert (await c.get_order(moved["id"])).json() == moved  # not a field, not a version changed
    assert await _marker(stack.mock, moved["id"]) == before


async def test_two_replicas_the_same_webhook_ten_times_and_by_id_and_key_at_once_one_order_one_event(stack: Stack) -> None:
    """Two order-finalization processes in one consumer group: webhooks naming a cart by id and by
    key land on different partitions, so possibly on different replicas — the claim decides."""
    second = _finalizer(stack.kafka, stack.mock, "order-finalization-replica")
    try:
        carts = [await _sale(stack.mock, [("CREDIT_CARD", 2500, "Success")]) for _ in range(4)]
        sends = []
        for cart in carts:
            webhook_id = f"evt-{uuid.uuid4().hex}"
            sends += [(cart, webhook_id)] * 10 + [({"id": cart["key"]}, None)] * 5 + [(cart, None)] * 5
        await asyncio.gather(*(asyncio.to_thread(_send, stack, cart, webhook_id) for cart, webhook_id in sends))
        for cart in carts:
            events = await _events_for(stack.kafka, cart["id"], settle=1.0, timeout_s=60)
            assert len(events) == 1, f"{len(events)} events for cart {cart['id']}"
            assert len(await _orders_of(stack.mock, cart["id"])) == 1
    finally:
        second.stop()


async def test_split_tender_over_two_webhooks(stack: Stack) -> None:
    cart = await _sale(stack.mock, [("CREDIT_CARD", 1500, "Success")])
    first = _send(stack, cart)
    wait_until(lambda: _processed(stack.finalizer, first) >= 1, 30, "the first tender's webhook")
    assert await _orders_of(stack.mock, cart["id"]) == []  # 1,500 of 2,500: waiting
    async with _commerce(stack.mock) as c:
        await _add_payment(c, (await c.get_cart(cart["id"])).json(), "CASH", 1000, "Success")
    _send(stack, cart)
    (event,) = await _events_for(stack.kafka, cart["id"])
    assert sorted((p["method"], p["amount"]["centAmount"]) for p in event["payments"]) == [("CASH", 1000), ("CREDIT_CARD", 1500)]
    assert len(await _orders_of(stack.mock, cart["id"])) == 1


async def test_an_unknown_cart_goes_to_the_dead_letter_topic(stack: Stack) -> None:
    missing = {"id": str(uuid.uuid4())}
    webhook_id = _send(stack, missing)
    consumer = AIOKafkaConsumer(
        "instore.webhooks.v1.dlq", bootstrap_servers=stack.kafka.bootstrap_servers, group_id=None, auto_offset_reset="earliest"
    )
    await consumer.start()
    found = None
    try:
        deadline = time.monotonic() + 30
        while found is None and time.monotonic() < deadline:
            for records in (await consumer.getmany(timeout_ms=300)).values():
                for r in records:
                    headers = {k: v.decode() for k, v in r.headers}
                    if headers.get("webhook-id") == webhook_id:
                        found = headers
    finally:
        await consumer.stop()
    assert found is not None and found["dlq-error-reason"] == "cart-not-found"


async def test_killed_after_creating_the_order_then_restarted_is_one_order_and_one_event(stack: Stack) -> None:
    """Last on purpose: replaces the module's service by one that dies right after creating an Order."""
    stack.finalizer.stop(signal.SIGTERM)
    crashing = _finalizer(
        stack.kafka, stack.mock, "order-finalization-crashing", ORDER_FINALIZATION_CRASH_AFTER_ORDER_CREATED="true"
    )
    cart = await _sale(stack.mock, [("CREDIT_CARD", 2500, "Success")])
    _send(stack, cart)
    wait_until(lambda: not crashing.process.alive(), 60, "the service to die after creating the Order")
    assert crashing.process.proc.returncode == 3
    (order,) = await _orders_of(stack.mock, cart["id"])
    assert order["orderState"] == "Open"  # created, not yet announced, offset not committed
    assert await _marker(stack.mock, order["id"]) is None
    restarted = _finalizer(stack.kafka, stack.mock, "order-finalization-restarted")
    try:
        events = await _events_for(stack.kafka, cart["id"])
    finally:
        restarted.stop()
    assert len(events) == 1
    (order,) = await _orders_of(stack.mock, cart["id"])
    assert order["orderState"] == "Open" and order["version"] == 1  # never changed as a marker
    marker = await _marker(stack.mock, order["id"])
    assert marker is not None and marker["value"]["state"] == "published"
