"""order-finalization's subscriber with TestKafkaBroker: one Order and one event however often a
webhook comes; an Order left unannounced by a crash is announced on redelivery; dead letters
carry the original bytes and name the error."""

from __future__ import annotations

import json
from typing import Any

from faststream.kafka import KafkaMessage, TestKafkaBroker

from instore_devfakes.instore_samples import payment_webhook
from instore_order_finalization.app import create_broker
from instore_order_finalization.settings import OrderFinalizationSettings
from instore_shared.kafka.consumer import the_message
from instore_shared.kafka.topics import PAYMENTS_COMPLETED, WEBHOOKS
from tests.fakes.commerce import InMemoryCommerce
from tests.unit.test_order_finalization import _payment, _world

SETTINGS = OrderFinalizationSettings()


def _collect(broker, topic: str) -> list[KafkaMessage]:  # type: ignore[no-untyped-def]
    seen: list[KafkaMessage] = []

    @broker.subscriber(topic, decoder=the_message)
    async def collect(message: KafkaMessage) -> None:
        seen.append(message)

    return seen


def _webhook(cart_ref: str = "sale-1") -> bytes:
    return json.dumps({"id": "evt-1", "type": "payment.completed", "cartId": cart_ref}).encode()


async def test_ten_deliveries_make_one_order_and_one_event() -> None:
    commerce = _world(payments=[_payment("p1", 2000), _payment("p2", 1499, method="CASH")])
    broker = create_broker(SETTINGS, commerce)
    events = _collect(broker, PAYMENTS_COMPLETED.name)
    async with TestKafkaBroker(broker) as br:
        for _ in range(10):
            await br.publish(_webhook(), WEBHOOKS.name, key=b"sale-1", headers={"webhook-id": "evt-1"})
    assert commerce.orders_created == 1
    assert len(events) == 1
    event = json.loads(events[0].body)
    order = json.loads(commerce.orders[event["orderId"]])
    assert order["orderState"] == "Open" and order["paymentState"] == "Paid"  # the Order stays as created
    assert event["eventId"] and event["sourceWebhookId"] == "evt-1" and event["type"] == "payments-completed"
    assert event["total"] == {"centAmount": 3499, "currencyCode": "EUR"}
    assert [(p["method"], p["amount"]["centAmount"]) for p in event["payments"]] == [("CREDIT_CARD", 2000), ("CASH", 1499)]
    assert events[0].raw_message.key == event["orderId"].encode()


async def test_an_order_left_unannounced_is_announced_on_redelivery() -> None:
    commerce = _world(payments=[_payment("p1", 3499)])
    cart = commerce.cart("sale-1")
    # as if the service died right after creating the Order: Open, no event, offset not committed
    await commerce.create_order_from_cart(cart["id"], cart["version"], f"instore-{cart['id']}", "Paid")
    broker = create_broker(SETTINGS, commerce)
    events = _collect(broker, PAYMENTS_COMPLETED.name)
    async with TestKafkaBroker(broker) as br:
        await br.publish(_webhook(), WEBHOOKS.name)
        await br.publish(_webhook(), WEBHOOKS.name)
    assert commerce.orders_created == 1 and len(events) == 1


async def test_what_cannot_be_processed_is_dead_lettered_with_its_bytes() -> None:
    broker = create_broker(SETTINGS, InMemoryCommerce())
    dead = _collect(broker, "instore.webhooks.v1.dlq")
    events = _collect(broker, PAYMENTS_COMPLETED.name)
    async with TestKafkaBroker(broker) as br:
        await br.publish(b"{not json", WEBHOOKS.name, key=b"k1", headers={"webhook-id": "w-1"})
        await br.publish(_webhook("no-such-cart"), WEBHOOKS.name, headers={"webhook-id": "w-2"})
    assert [m.body for m in dead] == [b"{not json", _webhook("no-such-cart")]
    assert [m.headers["dlq-error-reason"] for m in dead] == ["bad-body", "cart-not-found"]
    assert dead[0].headers["webhook-id"] == "w-1" and dead[0].headers["dlq-source-topic"] == WEBHOOKS.name
    assert events == []


async def test_nothing_blocks_the_partition() -> None:
    """Refusals, bugs and bad input are dead-lettered and the next webhook is processed."""
    from instore_shared.commercetools.errors import InvalidInput

    class Refusing(InMemoryCommerce):
        async def find_cart(self, ref: str, expand: tuple[str, ...] = ()) -> Any:
            if ref == "refused-cart":
                raise InvalidInput(414, "", "URI too long")
            if ref == "buggy-cart":
                raise RuntimeError("a bug")
            return await super().find_cart(ref, expand)

    commerce = Refusing()
    paid = _world(payments=[_payment("p1", 3499)])
    commerce.carts, commerce.payments = paid.carts, paid.payments
    broker = create_broker(SETTINGS, commerce)
    dead = _collect(broker, "instore.webhooks.v1.dlq")
    events = _collect(broker, PAYMENTS_COMPLETED.name)
    async with TestKafkaBroker(broker) as br:
        for ref in ("refused-cart", "buggy-cart", "x" * 10_000):
            await br.publish(_webhook(ref), WEBHOOKS.name)
        await br.publish(b"[1, 2]", WEBHOOKS.name)
        await br.publish(payment_webhook("sale-1", type="refund.completed", cartId={"weird": 1}), WEBHOOKS.name)
        await br.publish(_webhook("sale-1"), WEBHOOKS.name)
    assert [m.headers["dlq-error-reason"] for m in dead] == ["commerce-refused", "unexpected-error", "bad-cart-id", "bad-body"]
    assert len(events) == 1  # the paid sale behind them still became an Order


async def test_empty_and_foreign_currency_carts_are_not_ordered() -> None:
    empty = _world(payments=[_payment("p1", 0)], total=0)
    cart = empty.cart("sale-1")
    cart["lineItems"] = []
    empty.add_cart(cart)
    usd = _world(payments=[_payment("p1", 3499, currency="USD")])
    cart = usd.cart("sale-1")
    cart["totalPrice"]["currencyCode"] = "USD"
    usd.add_cart(cart)
    for commerce, reason in ((empty, "cart-empty"), (usd, "wrong-currency")):
        broker = create_broker(SETTINGS, commerce)
        dead = _collect(broker, "instore.webhooks.v1.dlq")
        async with TestKafkaBroker(broker) as br:
            await br.publish(_webhook(), WEBHOOKS.name)
        assert [m.headers["dlq-error-reason"] for m in dead] == [reason] and commerce.orders_created == 0


async def test_keyed_locks_serialise_per_key_and_forget_idle_keys() -> None:
    import asyncio

    from instore_shared.kafka.consumer import KeyedLocks

    locks, order = KeyedLocks(), []

    async def work(key: str, tag: str) -> None:
        async with locks.hold(key):
            order.append(f"{tag}+")
            await asyncio.sleep(0)
            order.append(f"{tag}-")

    await asyncio.gather(work("a", "1"), work("a", "2"), work("b", "3"))
    assert order.index("1-") < order.index("2+")  # same key: one after the other
    assert locks._locks == {}


async def test_an_outage_that_ends_delays_the_order_instead_of_dead_lettering_it() -> None:
    from instore_shared.commercetools.errors import TransientError

    commerce = _world(payments=[_payment("p1", 3499)])
    commerce.fail_with, commerce.fail_times = TransientError(503, "ServiceUnavailable", "down"), 2
    broker = create_broker(OrderFinalizationSettings(order_finalization_retry_seconds=30), commerce)
    events = _collect(broker, PAYMENTS_COMPLETED.name)
    dead = _collect(broker, "instore.webhooks.v1.dlq")
    async with TestKafkaBroker(broker) as br:
        await br.publish(_webhook(), WEBHOOKS.name)
    assert commerce.orders_created == 1 and len(events) == 1 and dead == []
