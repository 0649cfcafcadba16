"""End to end: every service's ``GET /metrics`` moves by exactly what happened.

The gateway, cart-mapping, order-finalization and refund run as processes against real Kafka
and the commercetools mock. One sale (its cart callback, its payment webhook → one Order, one
event), its return (a refund webhook → one refund event) and one webhook that can never be
processed (→ one dead letter with its reason) go through the stack; each ``/metrics`` is
scraped before and after and parsed with prometheus_client's parser, and the differences are
asserted exactly. No label value may be an id.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import re
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from prometheus_client.parser import text_string_to_metric_families

from instore_devfakes.instore_samples import payment_webhook, refund_webhook
from tests.e2e.test_order_flow import _commerce, _orders_of, _sale
from tests.support.processes import CtMock, Kafka, Service, free_port, start_service

pytestmark = pytest.mark.e2e

SECRET = "e2e-metrics-secret-" + uuid.uuid4().hex
API_KEY = "e2e-metrics-key-" + uuid.uuid4().hex
PAYMENTS = "commerce.payments.completed.v1"
REFUNDS = "commerce.refunds.completed.v1"
WEBHOOKS = "instore.webhooks.v1"

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


@dataclass
class Stack:
    gateway: Service
    cart_mapping: Service
    finalizer: Service
    refund: Service
    mock: CtMock

    def services(self) -> dict[str, Service]:
        return {
            "gateway": self.gateway,
            "cart-mapping": self.cart_mapping,
            "order-finalization": self.finalizer,
            "refund": self.refund,
        }


async def _start_group_at_end(kafka: Kafka, group: str, topic: str) -> None:
    """Commit ``group``'s offsets at the end of every partition of ``topic``: the service starting in
    that group sees only what this test sends, not what earlier tests left in the shared broker."""
    consumer = AIOKafkaConsumer(bootstrap_servers=kafka.bootstrap_servers, group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        cluster = await consumer._client.fetch_all_metadata()
        tps = [TopicPartition(topic, p) for p in sorted(cluster.partitions_for_topic(topic) or ())]
        assert tps, f"{topic} has no partitions"
        consumer.assign(tps)  # manual assignment: the commit needs no group membership
        await consumer.commit(await consumer.end_offsets(tps))
    finally:
        await consumer.stop()


@pytest.fixture(scope="module")
def stack(kafka: Kafka, ct_mock: CtMock) -> Iterator[Stack]:
    suffix = uuid.uuid4().hex[:8]
    groups = {
        "cart": f"cart-mapping-metrics-{suffix}",
        "order": f"order-finalization-metrics-{suffix}",
        "refund": f"refund-metrics-{suffix}",
    }

    async def position() -> None:
        await _start_group_at_end(kafka, groups["cart"], "instore.cart-requests.v1")
        await _start_group_at_end(kafka, groups["order"], WEBHOOKS)
        await _start_group_at_end(kafka, groups["refund"], WEBHOOKS)

    common = {"KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers}
    started: list[Service] = []
    try:
        gateway_port = free_port()
        started.append(
            start_service(
                "gateway-metrics",
                "instore_gateway",
                {
                    **common,
                    "GATEWAY_HTTP_PORT": str(gateway_port),
                    "INSTORE_CALLBACK_API_KEY": API_KEY,
                    "INSTORE_WEBHOOK_SECRET": SECRET,
                },
                gateway_port,
            )
        )
        asyncio.run(position())  # the gateway has created the topics by now
        for name, module, prefix, group in (
            ("cart-mapping-metrics", "instore_cart_mapping", "CART_MAPPING", groups["cart"]),
            ("order-finalization-metrics", "instore_order_finalization", "ORDER_FINALIZATION", groups["order"]),
            ("refund-metrics", "instore_refund", "REFUND", groups["refund"]),
        ):
            port = free_port()
            started.append(
                start_service(
                    name,
                    module,
                    {**common, **ct_mock.settings_env(), f"{prefix}_HTTP_PORT": str(port), f"{prefix}_CONSUMER_GROUP": group},
                    port,
                )
            )
        gateway, cart_mapping, finalizer, refund = started
        yield Stack(gateway, cart_mapping, finalizer, refund, ct_mock)
    finally:
        for service in started:
            service.stop()


def _scrape(service: Service) -> Samples:
    response = httpx.get(service.url + "/metrics", timeout=5)
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    samples: Samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def _value(samples: Samples, name: str, **labels: str) -> float:
    """The sum of ``name``'s samples whose labels include ``labels``."""
    return sum(v for (n, ls), v in samples.items() if n == name and set(labels.items()) <= set(ls))


def _delta(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return _value(after, name, **labels) - _value(before, name, **labels)


def _post_webhook(stack: Stack, body: bytes) -> str:
    response = httpx.post(
        f"{stack.gateway.url}/instore/webhooks",
        content=body,
        headers={"X-Signature": hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()},
    )
    assert response.status_code == 202, response.text
    return str(response.json()["webhookId"])


def _get_cart(stack: Stack, cart_id: str) -> httpx.Response:
    return httpx.get(f"{stack.gateway.url}/instore/callbacks/carts/{cart_id}", headers={"X-Api-Key": API_KEY}, timeout=10)


async def _until(condition: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        await asyncio.sleep(0.2)


_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.IGNORECASE)


async def test_a_sale_a_return_and_a_dead_letter_move_every_counter_by_exactly_what_happened(stack: Stack) -> None:
    services = stack.services()
    before = {name: _scrape(service) for name, service in services.items()}

    # 1. the sale: its cart callback, then its payment webhook
    cart = await _sale(stack.mock, [("CREDIT_CARD", 2500, "Success")])
    callback = _get_cart(stack, cart["id"])
    assert callback.status_code == 200, callback.text
    sale_webhook = _post_webhook(stack, payment_webhook(cart["id"]))

    def counted(service: str, name: str, want: float, **labels: str) -> Any:
        return lambda: _delta(before[service], _scrape(services[service]), name, **labels) >= want

    await _until(
        counted("order-finalization", "instore_events_announced_total", 1, topic=PAYMENTS, verdict="published"),
        30,
        "the payments-completed event",
    )
    (order,) = await _orders_of(stack.mock, cart["id"])
    async with _commerce(stack.mock) as c:
        order = (await c.get_order(order["id"], ("paymentInfo.payments[*]",))).json()
        payment_id = order["paymentInfo"]["payments"][0]["id"]
        line_id = order["lineItems"][0]["id"]
        # 2. its return: a return cart pointing at the purchase, and the refund webhook
        return_cart = (
            await c.request(
                "POST",
                "/carts",
                json={
                    "currency": "EUR",
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
                            "quantity": 1,
                            "custom": {
                                "type": {"typeId": "type", "key": "instore-line-item"},
                                "fields": {
                                    "purchaseOrderId": order["id"],
                                    "purchaseLineItemId": line_id,
                                    "returnComment": "broken",
                                },
                            },
                        }
                    ],
                },
            )
        ).json()
    refund_id = "rf-" + uuid.uuid4().hex
    return_webhook = _post_webhook(stack, refund_webhook(return_cart["id"], [(refund_id, payment_id, 1250, "EUR")]))
    # 3. a webhook that can never be processed: a payment of a cart that does not exist
    missing_cart = str(uuid.uuid4())
    bad_webhook = _post_webhook(stack, payment_webhook(missing_cart))

    await _until(
        counted("refund", "instore_events_announced_total", 1, topic=REFUNDS, verdict="published"),
        30,
        "the refunds-completed event",
    )
    await _until(counted("order-finalization", "instore_dead_letters_total", 1), 30, "the dead letter")
    # every service has processed all three webhooks (the refund service sees the payments too)
    await _until(
        counted("refund", "instore_received_processed_messages_total", 3, handler=WEBHOOKS),
        30,
        "refund to process three webhooks",
    )
    await _until(
        counted("order-finalization", "instore_received_processed_messages_total", 3, handler=WEBHOOKS),
        30,
        "order-finalization to process three webhooks",
    )
    await _until(
        lambda: any(n == "instore_kafka_consumer_lag" for n, _ in _scrape(stack.finalizer)),
        15,
        "the consumer lag of order-finalization",
    )
    after = {name: _scrape(service) for name, service in services.items()}

    def d(service: str, name: str, **labels: str) -> float:
        return _delta(before[service], after[service], name, **labels)

    # gateway: one callback answered 200, three webhooks accepted, none refused, publishes acked
    assert d("gateway", "instore_cart_lookups_total", kind="sale", outcome="200") == 1
    assert d("gateway", "instore_cart_lookups_total") == 1
    assert d("gateway", "instore_cart_lookup_round_trip_seconds_count", kind="sale") == 1
    assert d("gateway", "instore_webhooks_accepted_total") == 3
    assert d("gateway", "instore_webhooks_refused_total") == 0
    assert d("gateway", "instore_published_messages_total", destination=WEBHOOKS, status="success") == 3
    assert d("gateway", "instore_published_messages_total", destination="instore.cart-requests.v1", status="success") == 1
    assert d("gateway", "instore_http_requests_total", path="/instore/webhooks", method="POST", status_code="202") == 3
    assert d("gateway", "instore_http_requests_total", path="/instore/callbacks/carts/{cartId}", status_code="200") == 1
    assert _value(after["gateway"], "instore_ready") == 1

    # cart-mapping: one request consumed, one reply published, the cart read from Composable Commerce
    assert d("cart-mapping", "instore_received_messages_total", handler="instore.cart-requests.v1") == 1
    assert d("cart-mapping", "instore_published_messages_total", destination="instore.cart-replies.v1", status="success") == 1
    assert d("cart-mapping", "instore_commerce_requests_total", operation="GET carts/{id}", status="200") == 1

    # order-finalization: one Order, one event, one dead letter (cart-not-found), the return not a payment
    assert d("order-finalization", "instore_webhooks_processed_total", outcome="order-created") == 1
    assert d("order-finalization", "instore_webhooks_processed_total", outcome="not-a-payment") == 1
    assert d("order-finalization", "instore_webhooks_processed_total") == 2
    assert d("order-finalization", "instore_commerce_requests_total", operation="POST orders", status="201") == 1
    assert d("order-finalization", "instore_events_announced_total") == 1
    assert d("order-finalization", "instore_published_messages_total", destination=PAYMENTS, status="success") == 1
    assert d("order-finalization", "instore_webhook_to_event_seconds_count", topic=PAYMENTS) == 1
    assert d("order-finalization", "instore_dead_letters_total", topic=WEBHOOKS, reason="cart-not-found") == 1
    assert d("order-finalization", "instore_dead_letters_total") == 1
    assert d("order-finalization", "instore_published_messages_total", destination=WEBHOOKS + ".dlq", status="success") == 1

    # refund: one refund recorded and announced; the two payments are not refunds; no dead letter
    assert d("refund", "instore_webhooks_processed_total", outcome="recorded") == 1
    assert d("refund", "instore_webhooks_processed_total", outcome="not-a-refund") == 2
    assert d("refund", "instore_events_announced_total", topic=REFUNDS, verdict="published") == 1
    assert d("refund", "instore_events_announced_total") == 1
    assert d("refund", "instore_published_messages_total", destination=REFUNDS, status="success") == 1
    assert d("refund", "instore_webhook_to_event_seconds_count", topic=REFUNDS) == 1
    assert d("refund", "instore_dead_letters_total") == 0

    # nobody waited for an outage; no message failed
    for name in services:
        assert d(name, "instore_outage_retries_total") == 0, name
        assert d(name, "instore_received_processed_messages_exceptions_total") == 0, name

    # consumer lag is reported per partition of the consumed topic, and nothing is left behind
    lag = [(dict(labels), v) for (n, labels), v in after["order-finalization"].items() if n == "instore_kafka_consumer_lag"]
    assert lag and all(labels["topic"] == WEBHOOKS and labels["partition"].isdigit() for labels, _ in lag)

    # no label value is an id
    ids = {
        cart["id"],
        order["id"],
        order["orderNumber"],
        return_cart["id"],
        payment_id,
        refund_id,
        missing_cart,
        sale_webhook,
        return_webhook,
        bad_webhook,
    }
    for name, samples in after.items():
        for (metric, labels), _ in samples.items():
            for key, value in labels:
                assert value not in ids and not any(i in value for i in ids), (name, metric, key, value)
                assert not _UUID.search(value), (name, metric, key, value)
