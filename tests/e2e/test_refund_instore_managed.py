"""End to end, REFUND_MODE=instore-managed: the test plays InStore — after a sale became an Order
(gateway + order-finalization), it writes the return to the Order and the Refund transactions to
the Payment itself through the commercetools mock, then sends the signed refund webhook through the
gateway; the refund service (a process, real Kafka) writes nothing, verifies, and announces
``commerce.refunds.completed.v1`` once. A webhook that does not match what InStore wrote ends on the
dead-letter topic with reason ``instore-managed-mismatch``. The whole stack runs under a
KAFKA_TOPIC_PREFIX of its own, so the delegated-mode services of test_refund_flow.py never see
these webhooks (and this refund service never sees theirs)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from instore_devfakes.instore_samples import refund_webhook
from instore_shared.announcements import CONTAINER
from tests.e2e.test_order_flow import _commerce, _processed
from tests.e2e.test_refund_flow import (
    EUR,
    SECRET,
    Stack,
    _ordered_sale,
    _payment_id,
    _post_webhook,
    _read_topic,
    _return_cart,
    _wait_async,
)
from tests.support.processes import CtMock, Kafka, free_port, start_service, wait_until

pytestmark = pytest.mark.e2e

PREFIX = f"rm{uuid.uuid4().hex[:6]}."


@pytest.fixture(scope="module")
def stack(kafka: Kafka, ct_mock: CtMock) -> Iterator[Stack]:
    gateway_port, finalizer_port, refund_port = free_port(), free_port(), free_port()
    common = {"KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers, "KAFKA_TOPIC_PREFIX": PREFIX}
    gateway = start_service(
        "gateway-instore-managed",
        "instore_gateway",
        {
            **common,
            "GATEWAY_HTTP_PORT": str(gateway_port),
            "INSTORE_CALLBACK_API_KEY": "e2e-managed-key-" + uuid.uuid4().hex,
            "INSTORE_WEBHOOK_SECRET": SECRET,
        },
        gateway_port,
    )
    finalizer = start_service(
        "order-finalization-instore-managed",
        "instore_order_finalization",
        {**common, **ct_mock.settings_env(), "ORDER_FINALIZATION_HTTP_PORT": str(finalizer_port)},
        finalizer_port,
    )
    refund = start_service(
        "refund-instore-managed",
        "instore_refund",
        {**common, **ct_mock.settings_env(), "REFUND_HTTP_PORT": str(refund_port), "REFUND_MODE": "instore-managed"},
        refund_port,
    )
    try:
        yield Stack(gateway, finalizer, refund, ct_mock, kafka)
    finally:
        for service in (gateway, finalizer, refund):
            service.stop()


async def _play_instore(stack: Stack, order: dict[str, Any], quantity: int, payment_id: str, cents: int) -> tuple[int, int]:
    """What InStore's refund module writes in this mode (assumed shape): a return item of ``quantity`` of the
    Order's first line (no key of ours) and a Success Refund of ``cents`` EUR on ``payment_id`` (InStore's own
    interaction id). Returns the Order's and the Payment's versions afterwards."""
    async with _commerce(stack.mock) as c:
        written = (
            await c.update(
                "orders",
                order["id"],
                (await c.get_order(order["id"])).json()["version"],
                [
                    {
                        "action": "addReturnInfo",
                        "items": [{"quantity": quantity, "lineItemId": order["lineItems"][0]["id"], "shipmentState": "Returned"}],
                    }
                ],
            )
        ).json()
        payment = (await c.request("GET", f"/payments/{payment_id}")).json()
        refunded = (
            await c.update(
                "payments",
                payment_id,
                payment["version"],
                [
                    {
                        "action": "addTransaction",
                        "transaction": {
                            "type": "Refund",
                            "state": "Success",
                            "interactionId": f"instore-{uuid.uuid4().hex[:8]}",
                            "amount": {"currencyCode": EUR, "centAmount": cents},
                        },
                    }
                ],
            )
        ).json()
    return written["version"], refunded["version"]


async def _versions(stack: Stack, order_id: str, payment_id: str) -> tuple[int, int]:
    async with _commerce(stack.mock) as c:
        order = (await c.get_order(order_id)).json()
        payment = (await c.request("GET", f"/payments/{payment_id}")).json()
    return order["version"], payment["version"]


async def _events(stack: Stack, return_cart_id: str, timeout_s: float = 30, want: int = 1) -> list[dict[str, Any]]:
    def match(record: Any) -> dict[str, Any] | None:
        event = json.loads(record.value)
        return event if event["returnCartId"] == return_cart_id else None

    return await _read_topic(stack.kafka, f"{PREFIX}commerce.refunds.completed.v1", match, timeout_s=timeout_s, want=want)


async def test_instore_wrote_the_return_the_service_writes_nothing_and_announces_once(stack: Stack) -> None:
    order = await _ordered_sale(stack, [("CREDIT_CARD", 2500)])
    card = _payment_id(order, "CREDIT_CARD")
    cart = await _return_cart(stack, [(order["id"], order["lineItems"][0]["id"], 2)])
    versions = await _play_instore(stack, order, 2, card, 2500)
    body = refund_webhook(cart["id"], [("rf-" + uuid.uuid4().hex, card, 2500, EUR)], f"evt-{uuid.uuid4().hex}")
    webhook_id = _post_webhook(stack, body)
    (event,) = await _events(stack, cart["id"])
    assert (event["orderId"], event["orderNumber"], event["sourceWebhookId"]) == (order["id"], order["orderNumber"], webhook_id)
    assert event["totalRefunded"] == {"centAmount": 2500, "currencyCode": EUR}
    assert [(i["lineItemId"], i["quantity"], i["returnLineItemId"]) for i in event["items"]] == [
        (order["lineItems"][0]["id"], 2, cart["lineItems"][0]["id"])
    ]
    assert [(r["paymentId"], r["amount"]["centAmount"]) for r in event["refunds"]] == [(card, 2500)]
    assert await _versions(stack, order["id"], card) == versions  # the refund service wrote neither

    async def marked() -> bool:
        async with _commerce(stack.mock) as c:
            key = f"refunds-completed.{order['id']}.{event['eventId']}"
            return (await c.get_custom_object(CONTAINER, key)).json()["value"]["state"] == "published"

    await _wait_async(marked, 30, "the refund's announcement marker")
    _post_webhook(stack, body)  # a replay
    wait_until(lambda: _processed(stack.refund, webhook_id) >= 2, 30, "the replay processed")
    assert [e["eventId"] for e in await _events(stack, cart["id"])] == [event["eventId"]]
    assert await _versions(stack, order["id"], card) == versions


async def test_a_webhook_that_does_not_match_what_instore_wrote_is_dead_lettered(stack: Stack) -> None:
    order = await _ordered_sale(stack, [("CREDIT_CARD", 2500)])
    card = _payment_id(order, "CREDIT_CARD")
    cart = await _return_cart(stack, [(order["id"], order["lineItems"][0]["id"], 2)])
    versions = await _play_instore(stack, order, 2, card, 2400)  # InStore refunded 24.00
    refund_id = "rf-" + uuid.uuid4().hex
    webhook_id = _post_webhook(stack, refund_webhook(cart["id"], [(refund_id, card, 2500, EUR)]))  # the webhook says 25.00

    def match(record: Any) -> dict[str, str] | None:
        headers = {k: v.decode() for k, v in record.headers}
        return headers if headers.get("webhook-id") == webhook_id else None

    (letter,) = await _read_topic(stack.kafka, f"{PREFIX}instore.webhooks.v1.dlq", match, settle=0.5)
    assert letter["dlq-error-reason"] == "instore-managed-mismatch"
    assert f"payment {card}, refund {refund_id}: no Success Refund transaction of 2500 EUR" in letter["dlq-error-detail"]
    # dead-lettered after the handler gave up: nothing can follow on the event topic for this cart
    assert await _events(stack, cart["id"], timeout_s=3) == []
    assert await _versions(stack, order["id"], card) == versions
