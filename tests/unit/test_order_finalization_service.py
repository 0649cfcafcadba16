"""order-finalization's service function, called directly with its ports (in-memory Composable
Commerce, recording publisher, fake clock): one Order and one event per cart under replays,
concurrency, a failing marker write, and one deadline per webhook."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import msgspec
import pytest

from instore_order_finalization.service import handle_payment_webhook, marker_key
from instore_order_finalization.settings import OrderFinalizationSettings
from instore_shared.announcements import CONTAINER, Verdict
from instore_shared.commercetools.errors import TransientError
from instore_shared.kafka.consumer import KeyedLocks, Unprocessable, max_poll_interval_ms
from instore_shared.kafka.publisher import PublishFailed
from tests.fakes.clock import FakeClock
from tests.fakes.commerce import InMemoryCommerce
from tests.fakes.publisher import RecordingPublisher
from tests.unit.test_order_finalization import _payment, _world

SETTINGS = OrderFinalizationSettings(order_finalization_retry_seconds=120)
DOWN = TransientError(503, "ServiceUnavailable", "down")


def _webhook(cart_ref: str = "sale-1") -> bytes:
    return json.dumps({"id": "evt-1", "type": "payment.completed", "cartId": cart_ref}).encode()


class Ports:
    """One process's ports: its own locks; commerce and publisher may be shared (two replicas)."""

    def __init__(
        self,
        commerce: InMemoryCommerce,
        publisher: RecordingPublisher | None = None,
        clock: FakeClock | None = None,
        settings: OrderFinalizationSettings = SETTINGS,
    ) -> None:
        self.commerce, self.publisher = commerce, publisher or RecordingPublisher()
        self.clock, self.locks, self.settings = clock or FakeClock(), KeyedLocks(), settings

    async def handle(self, body: bytes = b"", ref: str = "instore.webhooks.v1/0/0") -> Any:
        return await handle_payment_webhook(
            body or _webhook(),
            {"webhook-id": "evt-1"},
            commerce=self.commerce,
            publisher=self.publisher,
            locks=self.locks,
            clock=self.clock,
            settings=self.settings,
            message_ref=ref,
        )


def _paid() -> InMemoryCommerce:
    return _world(payments=[_payment("p1", 3499)])


def _published_refused(container: str, key: str, value: Any, version: int | None) -> None:
    """A marker store hook: every write setting a marker ``published`` fails."""
    if value["state"] == "published":
        raise DOWN


def _marker(commerce: InMemoryCommerce, order_id: str) -> dict[str, Any]:
    return commerce.custom_objects[(CONTAINER, marker_key(order_id))]


async def test_one_webhook_makes_one_order_one_event_and_a_published_marker_the_order_stays_open() -> None:
    ports = Ports(_paid())
    handled = await ports.handle()
    assert handled.announcement is Verdict.PUBLISHED
    (event,) = ports.publisher.events
    body = json.loads(event.body)
    order = ports.commerce.order(body["orderId"])
    assert order["orderState"] == "Open" and order["version"] == 1 and ports.commerce.updates == []
    marker = _marker(ports.commerce, order["id"])
    assert marker["value"]["state"] == "published" and marker["value"]["eventId"] == body["eventId"]
    assert marker["value"]["claimedBy"] == "instore.webhooks.v1/0/0" and event.headers["event-id"] == body["eventId"]


@pytest.mark.parametrize("state", ["Open", "Confirmed", "Complete", "Cancelled"])
async def test_a_replay_for_an_order_in_any_state_publishes_nothing_and_changes_nothing(state: str) -> None:
    ports = Ports(_paid())
    await ports.handle(ref="instore.webhooks.v1/0/0")
    order = ports.commerce.order(json.loads(ports.publisher.events[0].body)["orderId"])
    order.update(orderState=state, version=order["version"] + 1)  # the retailer's OMS moved it on
    ports.commerce.add_order(order)
    before = (
        dict(ports.commerce.orders),
        dict(ports.commerce.carts),
        msgspec.json.encode(ports.commerce.payments),
        dict(ports.commerce.custom_objects),
    )
    writes = len(ports.commerce.custom_object_writes)
    for offset, body in enumerate([_webhook(), _webhook(order["cart"]["id"]), _webhook()], start=1):
        handled = await ports.handle(body, ref=f"instore.webhooks.v1/{offset}/{offset}")
        assert handled.announcement is Verdict.ALREADY_PUBLISHED
    assert len(ports.publisher.events) == 1
    assert (
        dict(ports.commerce.orders),
        dict(ports.commerce.carts),
        msgspec.json.encode(ports.commerce.payments),
        dict(ports.commerce.custom_objects),
    ) == before
    assert len(ports.commerce.custom_object_writes) == writes and ports.commerce.updates == []
    assert ports.commerce.order(order["id"])["orderState"] == state


async def test_the_marker_write_failing_n_times_gives_exactly_one_event() -> None:
    commerce, failures = _paid(), []

    def publish_write_fails(container: str, key: str, value: Any, version: int | None) -> None:
        if value["state"] == "published" and len(failures) < 8:
            failures.append(key)
            raise DOWN  # 503 — e.g. for 30 s

    commerce.before_custom_object_write = publish_write_fails
    ports = Ports(commerce)
    handled = await ports.handle()
    assert len(failures) == 8 and handled.announcement is Verdict.PUBLISHED
    assert len(ports.publisher.events) == 1
    assert _marker(commerce, json.loads(ports.publisher.events[0].body)["orderId"])["value"]["state"] == "published"
    assert 0 < sum(ports.clock.slept) < 60  # bounded, jittered backoff of that write alone


async def test_a_marker_write_that_never_succeeds_still_publishes_once_and_does_not_dead_letter() -> None:
    commerce = _paid()

    commerce.before_custom_object_write = _published_refused  # as if the process died after Kafka acked
    ports = Ports(commerce)
    assert (await ports.handle()).announcement is Verdict.PUBLISHED
    assert len(ports.publisher.events) == 1  # the claim stays; nothing is re-published for it


async def test_many_webhooks_of_one_cart_at_once_by_id_and_key_one_order_one_event() -> None:
    """The per-cart announce lock: the later webhooks wait and find the marker published (without
    it they would meet the first one's claim while Kafka is still acknowledging its event)."""
    commerce = _paid()
    cart_id = commerce.cart("sale-1")["id"]
    ports = Ports(commerce, RecordingPublisher(yields=50))
    bodies = [_webhook("sale-1") if i % 2 else _webhook(cart_id) for i in range(10)]
    results = await asyncio.gather(*(ports.handle(b, ref=f"instore.webhooks.v1/{i % 3}/{i}") for i, b in enumerate(bodies)))
    assert commerce.orders_created == 1 and len(ports.publisher.events) == 1
    assert sorted(r.announcement.value for r in results) == ["already-published"] * 9 + ["published"]
    assert [v["state"] for _, _, v in commerce.custom_object_writes] == ["claimed", "published"]


async def test_two_replicas_at_once_one_event_per_cart() -> None:
    """Two processes (own locks) sharing Composable Commerce and Kafka: the claim decides."""
    commerce, publisher, clock = _paid(), RecordingPublisher(), FakeClock()
    cart_id = commerce.cart("sale-1")["id"]
    a, b = Ports(commerce, publisher, clock), Ports(commerce, publisher, clock)
    results = await asyncio.gather(
        *(
            p.handle(_webhook(ref), ref=f"instore.webhooks.v1/{i}/7")
            for i, (p, ref) in enumerate([(a, "sale-1"), (b, cart_id)] * 5)
        )
    )
    assert commerce.orders_created == 1 and len(publisher.events) == 1
    assert [r.announcement for r in results].count(Verdict.PUBLISHED) == 1


async def test_a_redelivery_of_the_claiming_message_publishes_another_message_waits_for_it() -> None:
    commerce = _paid()
    ports = Ports(commerce)
    ports.publisher.fail_with, ports.publisher.fail_times = PublishFailed("kafka down"), 1
    with pytest.raises(PublishFailed):  # claimed, not published: the offset is not committed
        await ports.handle(ref="instore.webhooks.v1/2/40")
    other = await ports.handle(ref="instore.webhooks.v1/5/9")  # the same cart by another message
    assert other.announcement is Verdict.CLAIMED_ELSEWHERE and ports.publisher.events == []
    again = await ports.handle(ref="instore.webhooks.v1/2/40")  # the claimer's redelivery
    assert again.announcement is Verdict.PUBLISHED and len(ports.publisher.events) == 1


async def test_an_abandoned_claim_is_taken_over_after_the_lease() -> None:
    commerce = _paid()
    ports = Ports(commerce)
    ports.publisher.fail_with, ports.publisher.fail_times = Unprocessable("event-too-large", "x"), 1
    with pytest.raises(Unprocessable):  # dead-lettered after claiming
        await ports.handle(ref="instore.webhooks.v1/2/40")
    ports.clock.advance(max_poll_interval_ms(SETTINGS.order_finalization_retry_seconds) / 1000 + 1)
    replay = await ports.handle(ref="instore.webhooks.v1/2/99")  # the dead letter replayed
    assert replay.announcement is Verdict.PUBLISHED and len(ports.publisher.events) == 1


async def test_one_deadline_covers_every_retry_of_a_webhook() -> None:
    """An outage that moves from the cart reads to the marker: the webhook gives up at its one
    deadline (then it is dead-lettered), not after a fresh budget for each step."""
    clock = FakeClock()

    class Outage(InMemoryCommerce):
        async def find_cart(self, ref: str, expand: tuple[str, ...] = ()) -> Any:
            if clock.monotonic() < 100:
                raise DOWN
            return await super().find_cart(ref, expand)

        async def put_custom_object(self, container: str, key: str, value: Any, version: int | None = None) -> Any:
            raise DOWN

    commerce = Outage()
    paid = _paid()
    commerce.carts, commerce.payments = paid.carts, paid.payments
    ports = Ports(commerce, clock=clock)
    with pytest.raises(TransientError):
        await ports.handle()
    assert commerce.orders_created == 1 and ports.publisher.events == []
    assert 100 <= clock.monotonic() <= SETTINGS.order_finalization_retry_seconds + 0.001


def test_the_consumer_poll_interval_covers_the_budget_and_its_grace() -> None:
    from instore_order_finalization.app import create_broker

    for budget in (0, 120, 900, 3600):
        broker = create_broker(OrderFinalizationSettings(order_finalization_retry_seconds=budget), InMemoryCommerce())
        (subscriber,) = broker.subscribers
        configured = subscriber._connection_args["max_poll_interval_ms"]
        assert configured == max_poll_interval_ms(budget) >= (budget + 120) * 1000
        assert configured >= 300_000  # never below Kafka's default


async def test_a_crash_between_publishing_and_marking_does_not_repeat_the_event() -> None:
    """The fault suite's kills with a 300 ms marker write: 5 of 10 Orders announced twice. The
    redelivery finds its own claim not marked published, looks in the topic, finds the event."""
    commerce = _paid()

    commerce.before_custom_object_write = _published_refused  # as if the process died after Kafka acked
    ports = Ports(commerce)
    await ports.handle(ref="instore.webhooks.v1/2/40")
    commerce.before_custom_object_write = None
    again = await ports.handle(ref="instore.webhooks.v1/2/40")  # the same message, delivered again
    assert again.announcement is Verdict.PUBLISHED and len(ports.publisher.events) == 1
    assert _marker(commerce, json.loads(ports.publisher.events[0].body)["orderId"])["value"]["state"] == "published"


async def test_a_claim_taken_over_after_its_event_went_out_publishes_nothing_again() -> None:
    commerce = _paid()

    commerce.before_custom_object_write = _published_refused  # as if the process died after Kafka acked
    ports = Ports(commerce)
    await ports.handle(ref="instore.webhooks.v1/2/40")
    commerce.before_custom_object_write = None
    ports.clock.advance(max_poll_interval_ms(SETTINGS.order_finalization_retry_seconds) / 1000 + 1)
    replay = await ports.handle(ref="instore.webhooks.v1/3/77")  # another message, after the lease
    assert replay.announcement is Verdict.PUBLISHED and len(ports.publisher.events) == 1
