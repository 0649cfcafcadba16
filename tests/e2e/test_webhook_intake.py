"""End to end: signed webhooks into the gateway process, durable in a real Kafka before acknowledged.

The last test stops the broker while webhooks arrive: every webhook answered 2xx must be in
Kafka after the broker is back; the others were answered 5xx, so InStore sends them again.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import Iterator

import httpx
import pytest
from aiokafka import AIOKafkaConsumer

from tests.support.processes import Kafka, Service, free_port, start_kafka, start_service

pytestmark = pytest.mark.e2e

SECRET = "e2e-webhook-secret-" + uuid.uuid4().hex
API_KEY = "e2e-webhooks-key-" + uuid.uuid4().hex


def _sign(body: bytes) -> str:
    return hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()


def _webhook(cart_id: str) -> bytes:
    return json.dumps({"id": f"evt-{uuid.uuid4().hex}", "type": "payment.completed", "cartId": cart_id,
                       "data": {"tender": "card", "amount": {"centAmount": 3499, "currencyCode": "EUR"}}}).encode()


def _gateway(name: str, bootstrap: str) -> Service:
    port = free_port()
    return start_service(name, "instore_gateway", {
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap, "KAFKA_TOPIC_PARTITIONS": "3", "GATEWAY_HTTP_PORT": str(port),
        "INSTORE_CALLBACK_API_KEY": API_KEY, "INSTORE_WEBHOOK_SECRET": SECRET,
        "WEBHOOK_PUBLISH_TIMEOUT_SECONDS": "2",
    }, port)


async def _read_all(bootstrap: str, want: set[str], timeout: float = 30) -> dict[str, tuple[bytes | None, bytes]]:
    """webhook-id → (key, value) for every message on instore.webhooks.v1 until ``want`` are all seen."""
    consumer = AIOKafkaConsumer("instore.webhooks.v1", bootstrap_servers=bootstrap, group_id=None,
                                auto_offset_reset="earliest")
    await consumer.start()
    seen: dict[str, tuple[bytes | None, bytes]] = {}
    try:
        deadline = time.monotonic() + timeout
        while not want <= set(seen) and time.monotonic() < deadline:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                for record in records:
                    headers = {k: v.decode() for k, v in record.headers}
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
    response = httpx.post(f"{gateway.url}/instore/webhooks", content=body, headers={"X-Signature": _sign(body)})
    assert response.status_code == 202, response.text
    webhook_id = response.json()["webhookId"]
    seen = await _read_all(kafka.bootstrap_servers, {webhook_id})
    assert seen[webhook_id] == (b"cart-e2e-1", body)


def test_forged_webhook_is_401(gateway: Service) -> None:
    body = _webhook("cart-e2e-2")
    response = httpx.post(f"{gateway.url}/instore/webhooks", content=body + b" ", headers={"X-Signature": _sign(body)})
    assert response.status_code == 401 and response.json()["type"].endswith(":invalid-signature")


async def test_every_acknowledged_webhook_survives_a_broker_outage() -> None:
    kafka = await asyncio.to_thread(start_kafka, free_port(), free_port())
    gateway = await asyncio.to_thread(_gateway, "gateway-outage", kafka.bootstrap_servers)
    acknowledged: list[str] = []
    refused = 0
    try:
        async with httpx.AsyncClient(timeout=10) as client:

            async def send(n: int) -> None:
                nonlocal refused
                for _ in range(n):
                    body = _webhook(f"cart-{uuid.uuid4().hex[:8]}")
                    response = await client.post(f"{gateway.url}/instore/webhooks", content=body,
                                                 headers={"X-Signature": _sign(body)})
                    if response.status_code == 202:
                        acknowledged.append(response.json()["webhookId"])
                    else:
                        assert response.status_code == 503, response.text
                        assert response.headers["retry-after"]
                        refused += 1

            await send(20)
            await asyncio.to_thread(kafka.pause)
            await send(5)  # broker down: each is answered 503, none 2xx
            await asyncio.to_thread(kafka.resume)
            deadline = time.monotonic() + 60
            before = len(acknowledged)
            while len(acknowledged) < before + 10 and time.monotonic() < deadline:
                await send(1)  # the gateway's producer reconnects by itself
        seen = await _read_all(kafka.bootstrap_servers, set(acknowledged), timeout=60)
    finally:
        gateway.stop()
        kafka.stop()
    assert refused >= 5
    assert len(acknowledged) >= 30
    missing = set(acknowledged) - set(seen)
    assert not missing, f"{len(missing)} acknowledged webhooks were lost"
