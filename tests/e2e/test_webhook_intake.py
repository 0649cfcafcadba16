"""End to end: signed webhooks into the gateway process, durable in a real Kafka before acknowledged.

The last test stops the broker while webhooks arrive: every webhook answered 2xx must be in
Kafka after the broker is back; the others were answered 5xx, so InStore sends them again.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import time
import uuid
from collections.abc import Iterator

import httpx
import pytest
from aiokafka import AIOKafkaConsumer

from instore_devfakes.instore_samples import payment_webhook
from tests.support.processes import (
    CtMock,
    Kafka,
    Service,
    free_port,
    start_kafka,
    start_service,
)

pytestmark = pytest.mark.e2e

SECRET = "e2e-webhook-secret-" + uuid.uuid4().hex
API_KEY = "e2e-webhooks-key-" + uuid.uuid4().hex


def _sign(body: bytes) -> str:
    return hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()


def _webhook(cart_id: str) -> bytes:
    return payment_webhook(cart_id)


def _gateway(name: str, bootstrap: str) -> Service:
    port = free_port()
    return start_service(
        name,
        "instore_gateway",
        {
            "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "KAFKA_TOPIC_PARTITIONS": "3",
            "GATEWAY_HTTP_PORT": str(port),
            "INSTORE_CALLBACK_API_KEY": API_KEY,
            "INSTORE_WEBHOOK_SECRET": SECRET,
            "WEBHOOK_PUBLISH_TIMEOUT_SECONDS": "2",
        },
        port,
    )


async def _read_all(bootstrap: str, want: set[str], timeout_s: float = 30) -> dict[str, tuple[bytes | None, bytes]]:
    """webhook-id → (key, value) for every message on instore.webhooks.v1 until ``want`` are all seen."""
    consumer = AIOKafkaConsumer("instore.webhooks.v1", bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="earliest")
    await consumer.start()
    seen: dict[str, tuple[bytes | None, bytes]] = {}
    try:
        deadline = time.monotonic() + timeout_s
        while not want <= set(seen) and time.monotonic() < deadline:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                for record in records:
                    headers = {k: v.decode() for k, v in record.headers}
                    if "webhook-id" in headers:  # other tests on a shared broker publish without one
                        seen[headers["webhook-id"]] = (record.key, record.value)
    finally:
        await consumer.stop()
    return seen


@pytest.fixture(scope="module")
def gateway(kafka: Kafka) -> Iterator[Service]:
    service = _gateway("gateway-webhooks", kafka.bootstrap_servers)
    yield service
    service.stop()


async def test_signed_webhook_lands_in_kafka_byte_for_byte(gateway: Service, kafka: Kafka) -> None:
    body = _webhook("cart-e2e-1")
    async with httpx.AsyncClient() as http:
        response = await http.post(f"{gateway.url}/instore/webhooks", content=body, headers={"X-Signature": _sign(body)})
    assert response.status_code == 202, response.text
    webhook_id = response.json()["webhookId"]
    seen = await _read_all(kafka.bootstrap_servers, {webhook_id})
    assert seen[webhook_id] == (b"cart-e2e-1", body)


def test_forged_webhook_is_401(gateway: Service) -> None:
    body = _webhook("cart-e2e-2")
    response = httpx.post(f"{gateway.url}/instore/webhooks", content=body + b" ", headers={"X-Signature": _sign(body)})
    assert response.status_code == 401 and response.json()["type"].endswith(":invalid-signature")


async def test_every_acknowledged_webhook_survives_a_broker_outage_and_is_processed(ct_mock: CtMock) -> None:
    """The broker stops while webhooks for paid sales arrive: each is answered 202 only if it is
    in Kafka, else 503; InStore sends the refused ones again; in the end every sale is an Order."""
    from tests.e2e.test_order_flow import _orders_of, _sale

    carts = [await _sale(ct_mock, [("CREDIT_CARD", 2500, "Success")]) for _ in range(24)]
    kafka = await asyncio.to_thread(start_kafka, free_port(), free_port())
    gateway = await asyncio.to_thread(_gateway, "gateway-outage", kafka.bootstrap_servers)
    port = free_port()
    finalizer = await asyncio.to_thread(
        start_service,
        "order-finalization-outage",
        "instore_order_finalization",
        {"KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers, **ct_mock.settings_env(), "ORDER_FINALIZATION_HTTP_PORT": str(port)},
        port,
    )
    acknowledged: dict[str, str] = {}  # webhook id -> cart id
    refused: list[dict[str, str]] = []
    try:
        async with httpx.AsyncClient(timeout=10) as client:

            async def send(cart: dict[str, str]) -> None:
                body = payment_webhook(cart["id"])
                response = await client.post(
                    f"{gateway.url}/instore/webhooks", content=body, headers={"X-Signature": _sign(body)}
                )
                if response.status_code == 202:
                    acknowledged[response.json()["webhookId"]] = cart["id"]
                else:
                    assert response.status_code == 503 and response.headers["retry-after"], response.text
                    refused.append(cart)

            for cart in carts[:12]:
                await send(cart)
            await asyncio.to_thread(kafka.pause)
            for cart in carts[12:18]:
                await send(cart)  # broker down: answered 503, never 2xx
            await asyncio.to_thread(kafka.resume)
            retry = carts[18:] + refused
            refused = []
            deadline = time.monotonic() + 60
            while retry and time.monotonic() < deadline:  # InStore retries what was refused
                await send(retry.pop(0))
                retry += refused
                refused = []
        seen = await _read_all(kafka.bootstrap_servers, set(acknowledged), timeout_s=60)
        assert not set(acknowledged) - set(seen), "an acknowledged webhook was lost"

        async def all_ordered() -> bool:
            return all([await _orders_of(ct_mock, c["id"]) for c in carts])

        deadline = time.monotonic() + 90
        while not await all_ordered():
            assert time.monotonic() < deadline, "not every acknowledged sale became an Order"
            await asyncio.sleep(0.5)  # polling the mock's state, bounded by the deadline above
    finally:
        finalizer.stop()
        gateway.stop()
        kafka.stop()
    assert len(set(acknowledged.values())) == len(carts)
    assert all([len(await _orders_of(ct_mock, c["id"])) == 1 for c in carts])
