"""End to end: Kafka stops for longer than every timeout of the gateway and order-finalization
while InStore keeps sending (and resending) payment webhooks (issue 10 A6, A9).

Measured before the fix, after an outage of a minute or two: the gateway answered 503 to every
webhook (its producer broken for good) and order-finalization failed the same webhooks in a loop,
both with ``/readyz`` 200, until restarted. Here the timeouts are short (request timeout 2 s,
publish timeout 1 s) so an outage of a few seconds outlasts them all. Required: during the
outage every webhook is answered 503 with ``Retry-After`` and a problem type saying whether it
may be stored, and both ``/readyz`` answer 503; afterwards both are ready again, every webhook is
taken and every sale becomes exactly one Order — with the same processes, none restarted.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import time
import uuid
from typing import Any

import httpx
import pytest

from instore_devfakes.instore_samples import payment_webhook
from tests.e2e.test_order_flow import _orders_of, _sale
from tests.integration.test_kafka_resilience import until
from tests.support.processes import CtMock, free_port, start_kafka, start_service

pytestmark = pytest.mark.e2e

SECRET = "e2e-outage-secret-" + uuid.uuid4().hex
PROBLEM = "urn:instore-integration:problem:"
OUTAGE_SECONDS = 6.0
"""How long the broker stays down once stopped (stopping takes a few seconds more): longer than
the gateway's producer request timeout (2 s) and publish timeout (1 s)."""


async def test_after_an_outage_longer_than_every_timeout_webhooks_are_taken_and_become_orders(ct_mock: CtMock) -> None:
    carts = [await _sale(ct_mock, [("CREDIT_CARD", 2500, "Success")]) for _ in range(14)]
    kafka = await asyncio.to_thread(start_kafka, free_port(), free_port())
    services = []
    try:
        port = free_port()
        gateway = await asyncio.to_thread(
            start_service,
            "gateway-kafka-outage",
            "instore_gateway",
            {
                "KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
                "KAFKA_TOPIC_PARTITIONS": "3",
                "GATEWAY_HTTP_PORT": str(port),
                "INSTORE_CALLBACK_API_KEY": "e2e-outage-key-" + uuid.uuid4().hex,
                "INSTORE_WEBHOOK_SECRET": SECRET,
                "WEBHOOK_PUBLISH_TIMEOUT_SECONDS": "1",
                "GATEWAY_KAFKA_REQUEST_TIMEOUT_MS": "2000",
            },
            port,
        )
        services.append(gateway)
        port = free_port()
        finalizer = await asyncio.to_thread(
            start_service,
            "order-finalization-kafka-outage",
            "instore_order_finalization",
            {
                "KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
                **ct_mock.settings_env(),
                "ORDER_FINALIZATION_HTTP_PORT": str(port),
            },
            port,
        )
        services.append(finalizer)
        pids = [s.process.proc.pid for s in services]

        async with httpx.AsyncClient(timeout=10) as http:

            async def send(cart: dict[str, Any]) -> httpx.Response:
                body = payment_webhook(cart["id"])
                return await http.post(
                    f"{gateway.url}/instore/webhooks",
                    content=body,
                    headers={"X-Signature": hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()},
                )

            async def ready(expected: int) -> bool:
                answers = [await http.get(s.url + "/readyz") for s in services]
                return all(a.status_code == expected for a in answers)

            for cart in carts[:4]:
                assert (await send(cart)).status_code == 202
            assert await ready(200)

            # InStore keeps sending (and resending) while the broker stops and stays down: publishing
            # through the shutdown is what left aiokafka's idempotent producer broken for good.
            stopping = asyncio.create_task(asyncio.to_thread(kafka.pause))
            answered: set[str] = set()
            stopped_at: float | None = None
            while stopped_at is None or time.monotonic() - stopped_at < OUTAGE_SECONDS:
                if stopped_at is None and stopping.done():
                    stopped_at = time.monotonic()
                *responses, _ = await asyncio.gather(*(send(c) for c in carts[4:10]), asyncio.sleep(0.2))
                for response in responses:
                    if response.status_code == 202 and stopped_at is None:
                        continue  # taken before the broker went away
                    assert response.status_code == 503, response.text
                    assert response.headers["retry-after"]
                    answered.add(response.json()["type"].removeprefix(PROBLEM))
            await stopping
            assert answered and answered <= {"webhook-not-stored", "webhook-not-acknowledged"}, answered
            await until(lambda: ready(503), 30, "both /readyz to answer 503 during the outage")
            assert (await http.get(gateway.url + "/readyz")).json()["type"] == PROBLEM + "not-ready"
            await asyncio.to_thread(kafka.resume)

            await until(lambda: ready(200), 60, "both /readyz to answer 200 after the outage")
            for cart in carts[4:]:  # what was refused, sent again, and new sales
                await until(lambda c=cart: _taken(send, c), 30, f"the webhook of cart {cart['id']} to be taken")

        async def every_sale_has_one_order() -> bool:
            return all([len(await _orders_of(ct_mock, c["id"])) == 1 for c in carts])

        await until(every_sale_has_one_order, 90, "every sale to become exactly one Order")
        assert [s.process.proc.pid for s in services] == pids and all(s.process.alive() for s in services), (
            "a process was restarted"
        )
    finally:
        for service in services:
            service.stop()
        kafka.stop()
    assert all([len(await _orders_of(ct_mock, c["id"])) == 1 for c in carts])


async def _taken(send: Any, cart: dict[str, Any]) -> bool:
    response = await send(cart)
    assert response.status_code in (202, 503), response.text
    return bool(response.status_code == 202)
