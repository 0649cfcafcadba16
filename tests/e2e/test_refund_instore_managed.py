"""End to end, REFUND_MODE=instore-managed: the test plays InStore — after a sale became an Order
(gateway + order-finalization), it writes the return to the Order and the Refund transactions to
the Payment itself through the commercetools mock, then sends the signed refund webhook through the
gateway; the refund service (a process, real Kafka) writes nothing, verifies, and announces
``commerce.refunds.completed.v1`` once — also when the webhook comes before InStore's writes (it waits
for them, up to REFUND_INSTORE_MANAGED_WAIT_SECONDS). A webhook that still does not match what InStore
wrote — e.g. a second return whose writes failed, which an earlier return's writes must not stand in
for — ends on the dead-letter topic with reason ``instore-managed-mismatch``. The whole stack runs under a
KAFKA_TOPIC_PREFIX of its own, so the delegated-mode services of test_refund_flow.py never see
these webhooks (and this refund service never sees theirs)."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
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
from tests.support.processes import CtMock, Kafka, Service, free_port, start_service, wait_until

pytestmark = pytest.mark.e2e

PREFIX = f"rm{uuid.uuid4().hex[:6]}."
WAIT_SECONDS = 6
"""REFUND_INSTORE_MANAGED_WAIT_SECONDS of this stack (short: the mismatch tests wait it out)."""


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
        {
            **common,
            **ct_mock.settings_env(),
            "REFUND_HTTP_PORT": str(refund_port),
            "REFUND_MODE": "instore-managed",
            "REFUND_INSTORE_MANAGED_WAIT_SECONDS": str(WAIT_SECONDS),
        },
        refund_port,
    )
    try:
        yield Stack(gateway, finalizer, refund, ct_mock, kafka)
    finally:
        for service in (gateway, finalizer, refund):
            service.stop()


async def _play_instore(
    stack: Stack,
    order: dict[str, Any],
    quantity: int,
    payment_id: str,
    cents: int,
    interaction_id: str | None = None,
    timestamp: bool = True,
) -> tuple[int, int]:
    """What InStore's refund module writes in this mode (assumed shape): a return item of ``quantity`` of the
    Order's first line (no key of ours; Composable Commerce gives it ``createdAt``) and a Success Refund of
    ``cents`` EUR on ``payment_id`` with ``interaction_id`` (default: an id of InStore's own, not the refund
    id) and, unless ``timestamp`` is false, the time it refunded. Returns the Order's and the Payment's
    versions afterwards."""
    transaction: dict[str, Any] = {
        "type": "Refund",
        "state": "Success",
        "interactionId": interaction_id or f"instore-{uuid.uuid4().hex[:8]}",
        "amount": {"currencyCode": EUR, "centAmount": cents},
    }
    if timestamp:
        transaction["timestamp"] = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
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
                [{"action": "addTransaction", "transaction": transaction}],
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


async def _dead_letters(stack: Stack, webhook_id: str, timeout_s: float = 30) -> list[dict[str, str]]:
    """The dead letters' headers of webhook ``webhook_id`` (read until one is there, then 0.5 s more)."""

    def match(record: Any) -> dict[str, str] | None:
        headers = {k: v.decode() for k, v in record.headers}
        return headers if headers.get("webhook-id") == webhook_id else None

    return await _read_topic(stack.kafka, f"{PREFIX}instore.webhooks.v1.dlq", match, timeout_s=timeout_s, settle=0.5)


def _logged(service: Service, event: str, needle: str) -> list[dict[str, Any]]:
    """The service's JSON log lines of ``event`` that mention ``needle``."""
    lines = [line for line in service.process.output().splitlines() if f'"{event}"' in line and needle in line]
    return [json.loads(line[line.index("{") :]) for line in lines]


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
    (letter,) = await _dead_letters(stack, webhook_id)
    assert letter["dlq-error-reason"] == "instore-managed-mismatch"
    assert f"payment {card}, refund {refund_id}: no Success Refund transaction of 2500 EUR" in letter["dlq-error-detail"]
    # dead-lettered after the handler gave up: nothing can follow on the event topic for this cart
    assert await _events(stack, cart["id"], timeout_s=3) == []
    assert await _versions(stack, order["id"], card) == versions


async def test_a_webhook_ahead_of_instores_writes_waits_for_them_and_is_announced_once(stack: Stack) -> None:
    """review16 #late-write: the webhook came first, InStore's writes a moment later — once the service is
    already waiting for them (deterministic: no sleep decides the order). Before the fix it was dead-lettered
    at once ("2 returned, return items for 0 found")."""
    order = await _ordered_sale(stack, [("CREDIT_CARD", 2500)])
    card = _payment_id(order, "CREDIT_CARD")
    cart = await _return_cart(stack, [(order["id"], order["lineItems"][0]["id"], 2)])
    refund_id = "rf-" + uuid.uuid4().hex
    webhook_id = _post_webhook(stack, refund_webhook(cart["id"], [(refund_id, card, 2500, EUR)]))
    wait_until(lambda: bool(_logged(stack.refund, "refund.awaiting_instore_writes", cart["id"])), 30, "the refund waiting")
    # InStore's writes land now; this time its Refund names the refund id (the exact rule), without timestamp
    versions = await _play_instore(stack, order, 2, card, 2500, interaction_id=refund_id, timestamp=False)
    (event,) = await _events(stack, cart["id"])
    assert event["sourceWebhookId"] == webhook_id and event["totalRefunded"] == {"centAmount": 2500, "currencyCode": EUR}
    assert [(r["refundId"], r["paymentId"]) for r in event["refunds"]] == [(refund_id, card)]
    assert await _dead_letters(stack, webhook_id, timeout_s=2) == []
    (appeared,) = _logged(stack.refund, "refund.instore_writes_appeared", cart["id"])
    assert appeared["polls"] >= 1
    assert [line["outcome"] for line in _logged(stack.refund, "webhook.processed", webhook_id)] == ["verified"]
    assert await _versions(stack, order["id"], card) == versions  # the refund service wrote neither


async def test_a_second_return_instore_never_wrote_is_dead_lettered_not_verified_by_the_first_ones_writes(
    stack: Stack,
) -> None:
    """review16 #second-return: 2 × SKU-MUG bought, returned one at a time. InStore wrote the first return;
    its writes for the second failed. The first one's return item and Refund (same line, same amount) must not
    verify the second: it is dead-lettered as instore-managed-mismatch and not announced."""
    order = await _ordered_sale(stack, [("CREDIT_CARD", 2500)])
    card = _payment_id(order, "CREDIT_CARD")
    line = order["lineItems"][0]["id"]
    first = await _return_cart(stack, [(order["id"], line, 1)])
    await _play_instore(stack, order, 1, card, 1250)  # InStore wrote the first return
    _post_webhook(stack, refund_webhook(first["id"], [("rf-" + uuid.uuid4().hex, card, 1250, EUR)]))
    assert len(await _events(stack, first["id"])) == 1
    versions = await _versions(stack, order["id"], card)

    second = await _return_cart(stack, [(order["id"], line, 1)])  # the other mug: InStore's writes failed
    started = time.monotonic()
    webhook_id = _post_webhook(stack, refund_webhook(second["id"], [("rf-" + uuid.uuid4().hex, card, 1250, EUR)]))
    (letter,) = await _dead_letters(stack, webhook_id)
    assert time.monotonic() - started >= WAIT_SECONDS  # it waited for InStore's writes, boundedly, first
    assert letter["dlq-error-reason"] == "instore-managed-mismatch"
    detail = letter["dlq-error-detail"]
    assert f"order {order['id']}, line item {line}: 1 returned, return items for 0 found created since the return cart" in detail
    assert "1 more in earlier return items, not counted" in detail and "still after waiting" in detail
    assert f"REFUND_INSTORE_MANAGED_WAIT_SECONDS={WAIT_SECONDS})" in detail
    assert await _events(stack, second["id"], timeout_s=2) == []  # dead-lettered after the handler gave up
    assert await _versions(stack, order["id"], card) == versions
