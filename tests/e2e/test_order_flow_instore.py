"""End to end, ORDER_CREATION=instore: InStore creates the Order, order-finalization only finds
it, waits a bounded time for it, and announces it — one Order per cart, one
``commerce.payments.completed.v1`` event per Order, with the gateway and order-finalization as
processes, real Kafka and the commercetools mock.

The test plays InStore: it pays the cart and creates the Order from it through the mock's API
(``POST /orders``, InStore's own order number). Everything runs under a KAFKA_TOPIC_PREFIX of
its own, so no integration-mode order-finalization of another module sees these webhooks.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaConsumer

from instore_devfakes.instore_samples import payment_webhook
from instore_shared.kafka.topics import PAYMENTS_COMPLETED, WEBHOOKS_DLQ, TopicNames
from tests.e2e.test_order_flow import _commerce, _marker, _orders_of, _sale
from tests.support.processes import REPO_ROOT, CtMock, Kafka, Service, free_port, start_service, wait_until

pytestmark = pytest.mark.e2e

SECRET = "e2e-instore-orders-secret-" + uuid.uuid4().hex
PREFIX = f"ordc-{uuid.uuid4().hex[:6]}."
TOPICS = TopicNames(PREFIX)
WAIT_SECONDS = 6
"""ORDER_FINALIZATION_INSTORE_ORDER_WAIT_SECONDS of this stack (short: the missing-Order test waits it out)."""


@dataclass
class Stack:
    gateway: Service
    finalizer: Service
    mock: CtMock
    kafka: Kafka


@pytest.fixture(scope="module")
def stack(kafka: Kafka, ct_mock: CtMock) -> Iterator[Stack]:
    common = {"KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers, "KAFKA_TOPIC_PREFIX": PREFIX}
    gateway_port, finalizer_port = free_port(), free_port()
    gateway = start_service(
        "gateway-instore-orders",
        "instore_gateway",
        {
            **common,
            "GATEWAY_HTTP_PORT": str(gateway_port),
            "INSTORE_CALLBACK_API_KEY": "e2e-instore-orders-key-" + uuid.uuid4().hex,
            "INSTORE_WEBHOOK_SECRET": SECRET,
        },
        gateway_port,
    )
    try:
        finalizer = start_service(
            "order-finalization-instore",
            "instore_order_finalization",
            {
                **common,
                **ct_mock.settings_env(),
                "ORDER_CREATION": "instore",
                "ORDER_FINALIZATION_INSTORE_ORDER_WAIT_SECONDS": str(WAIT_SECONDS),
                "ORDER_FINALIZATION_HTTP_PORT": str(finalizer_port),
                "ORDER_FINALIZATION_CONSUMER_GROUP": f"order-finalization-instore-{uuid.uuid4().hex[:6]}",
            },
            finalizer_port,
        )
    except BaseException:
        gateway.stop()
        raise
    try:
        yield Stack(gateway, finalizer, ct_mock, kafka)
    finally:
        gateway.stop()
        finalizer.stop()


async def _instore_orders(mock: CtMock, cart_id: str) -> dict[str, Any]:
    """What InStore does at checkout: the Order from the (paid) cart, numbered its own way."""
    async with _commerce(mock) as c:
        cart = (await c.get_cart(cart_id)).json()
        draft = {
            "cart": {"typeId": "cart", "id": cart_id},
            "version": cart["version"],
            "orderNumber": f"pos-3-{uuid.uuid4().hex[:8]}",
            "paymentState": "Paid",
        }
        return dict((await c.request("POST", "/orders", json=draft)).json())


def _send(stack: Stack, cart: dict[str, Any]) -> str:
    body = payment_webhook(cart["id"], f"evt-{uuid.uuid4().hex}")
    response = httpx.post(
        f"{stack.gateway.url}/instore/webhooks",
        content=body,
        headers={"X-Signature": hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()},
    )
    assert response.status_code == 202, response.text
    return str(response.json()["webhookId"])


def _logged(service: Service, event: str, needle: str) -> list[dict[str, Any]]:
    """The finalizer's JSON log lines of ``event`` that mention ``needle``."""
    lines = [line for line in service.process.output().splitlines() if f'"{event}"' in line and needle in line]
    return [json.loads(line[line.index("{") :]) for line in lines]


async def _read(kafka: Kafka, topic: str, match: Any, settle: float = 2.0, timeout_s: float = 30) -> list[Any]:
    """Records of ``topic`` for which ``match(record)`` is true: read until one is there, then ``settle`` s more."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=kafka.bootstrap_servers, group_id=None, auto_offset_reset="earliest")
    await consumer.start()
    found: list[Any] = []
    try:
        deadline, settled = time.monotonic() + timeout_s, None
        while time.monotonic() < (settled or deadline):
            for records in (await consumer.getmany(timeout_ms=300)).values():
                found += [r for r in records if match(r)]
            if found and settled is None:
                settled = time.monotonic() + settle
    finally:
        await consumer.stop()
    return found


async def _events_for(kafka: Kafka, cart_id: str, settle: float = 2.0, timeout_s: float = 30) -> list[dict[str, Any]]:
    topic = TOPICS.name(PAYMENTS_COMPLETED)
    records = await _read(kafka, topic, lambda r: json.loads(r.value)["cartId"] == cart_id, settle, timeout_s)
    return [json.loads(r.value) for r in records]


async def _dead_letter(kafka: Kafka, webhook_id: str) -> dict[str, str]:
    def headers(record: Any) -> dict[str, str]:
        return {k: v.decode() for k, v in record.headers}

    records = await _read(
        kafka,
        TOPICS.name(WEBHOOKS_DLQ),
        lambda r: headers(r).get("webhook-id") == webhook_id,
        settle=0.5,
        timeout_s=WAIT_SECONDS + 30,
    )
    assert len(records) == 1, f"{len(records)} dead letters for {webhook_id}"
    return headers(records[0])


async def _published_marker(mock: CtMock, order_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 30
    while (marker := await _marker(mock, order_id)) is None or marker["value"]["state"] != "published":
        assert time.monotonic() < deadline, "the marker was not set published"
        await asyncio.sleep(0.1)  # polling a condition with a deadline
    return marker


async def test_an_order_instore_created_before_the_webhook_is_announced_once(stack: Stack) -> None:
    cart = await _sale(stack.mock, [("CREDIT_CARD", 2500, "Success")])
    order = await _instore_orders(stack.mock, cart["id"])
    webhook_id = _send(stack, cart)
    (event,) = await _events_for(stack.kafka, cart["id"])
    assert (event["orderId"], event["orderNumber"], event["sourceWebhookId"]) == (order["id"], order["orderNumber"], webhook_id)
    assert (await _published_marker(stack.mock, order["id"]))["value"]["eventId"] == event["eventId"]
    replay = _send(stack, cart)  # InStore retries: nothing new
    wait_until(lambda: bool(_logged(stack.finalizer, "webhook.processed", replay)), 30, "the replayed webhook processed")
    assert [e["eventId"] for e in await _events_for(stack.kafka, cart["id"], settle=1.0)] == [event["eventId"]]
    assert [o["id"] for o in await _orders_of(stack.mock, cart["id"])] == [order["id"]]
    assert [line["outcome"] for line in _logged(stack.finalizer, "webhook.processed", webhook_id)] == ["already-ordered"]


async def test_the_webhook_first_and_instore_creating_the_order_a_moment_later_is_one_order_one_event(stack: Stack) -> None:
    cart = await _sale(stack.mock, [("CREDIT_CARD", 2500, "Success")])
    webhook_id = _send(stack, cart)
    wait_until(
        lambda: bool(_logged(stack.finalizer, "finalize.awaiting_instore_order", cart["id"])), 30, "order-finalization waiting"
    )
    assert await _orders_of(stack.mock, cart["id"]) == []  # paid, and still no Order of ours
    order = await _instore_orders(stack.mock, cart["id"])
    (event,) = await _events_for(stack.kafka, cart["id"])
    assert (event["orderId"], event["orderNumber"]) == (order["id"], order["orderNumber"])
    assert [o["id"] for o in await _orders_of(stack.mock, cart["id"])] == [order["id"]]
    (processed,) = _logged(stack.finalizer, "webhook.processed", webhook_id)
    assert processed["outcome"] == "order-appeared"


async def test_no_order_from_instore_dead_letters_the_webhook_and_a_replay_announces_it_once_the_order_exists(
    stack: Stack,
) -> None:
    cart = await _sale(stack.mock, [("CREDIT_CARD", 2500, "Success")])
    started = time.monotonic()
    webhook_id = _send(stack, cart)
    letter = await _dead_letter(stack.kafka, webhook_id)
    assert time.monotonic() - started >= WAIT_SECONDS  # it waited, boundedly, before giving up
    assert letter["dlq-error-reason"] == "instore-order-missing"
    assert cart["id"] in letter["dlq-error-detail"] and f"instore-{cart['id']}" in letter["dlq-error-detail"]
    assert await _orders_of(stack.mock, cart["id"]) == []  # none created by us
    assert await _events_for(stack.kafka, cart["id"], timeout_s=2) == []  # the handler ended before the dead letter

    order = await _instore_orders(stack.mock, cart["id"])  # InStore catches up; the operator replays the dead letter
    script = shutil.which("instore-integration", path=str(Path(sys.executable).parent))
    assert script, "the instore-integration console script is not installed (uv sync)"
    env = {k: v for k, v in os.environ.items() if not k.startswith("KAFKA_")}
    env.update(KAFKA_BOOTSTRAP_SERVERS=stack.kafka.bootstrap_servers, KAFKA_TOPIC_PREFIX=PREFIX)
    replayed = await asyncio.to_thread(
        subprocess.run,
        [script, "replay-dlq", "--topic", WEBHOOKS_DLQ.name, "--idle-timeout", "3"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert replayed.returncode == 0, replayed.stderr
    assert "replayed=1 " in replayed.stdout, replayed.stdout
    (event,) = await _events_for(stack.kafka, cart["id"])
    assert (event["orderId"], event["orderNumber"]) == (order["id"], order["orderNumber"])
    assert [o["id"] for o in await _orders_of(stack.mock, cart["id"])] == [order["id"]]
