"""The refund service function, called directly with its ports (in-memory Composable Commerce,
recording publisher, fake clock): the recording and announcing guards under concurrent calls,
replays for Orders in any state, a failing marker write, one deadline per webhook."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import msgspec
import pytest

from instore_devfakes.instore_samples import refund_webhook
from instore_refund.plan import Refused
from instore_refund.service import handle_refund_webhook
from instore_refund.settings import RefundSettings
from instore_shared.announcements import Verdict
from instore_shared.commercetools.errors import TransientError
from instore_shared.kafka.consumer import KeyedLocks
from tests.fakes.clock import FakeClock
from tests.fakes.commerce import InMemoryCommerce
from tests.fakes.publisher import RecordingPublisher
from tests.unit.test_refund_service import EUR, _items, _refunds, _return_line, _world

SETTINGS = RefundSettings(refund_retry_seconds=120)
DOWN = TransientError(503, "ServiceUnavailable", "down")


class Ports:
    """One process's ports (own locks); commerce, publisher and clock may be shared."""

    def __init__(
        self, commerce: InMemoryCommerce, publisher: RecordingPublisher | None = None, clock: FakeClock | None = None
    ) -> None:
        self.commerce, self.publisher, self.clock = commerce, publisher or RecordingPublisher(), clock or FakeClock()
        self.order_locks, self.recording_locks = KeyedLocks(), KeyedLocks()

    async def handle(self, body: bytes, ref: str = "instore.webhooks.v1/0/0") -> Any:
        return await handle_refund_webhook(
            body,
            {"webhook-id": json.loads(body)["id"]},
            commerce=self.commerce,
            publisher=self.publisher,
            order_locks=self.order_locks,
            recording_locks=self.recording_locks,
            clock=self.clock,
            settings=SETTINGS,
            message_ref=ref,
        )


BODY = refund_webhook("ret-cart-1", [("rf-1", "p-card", 1999, EUR)], "evt-1")


@pytest.mark.parametrize("state", ["Open", "Confirmed", "Complete", "Cancelled"])
async def test_a_replay_for_an_order_in_any_state_publishes_nothing_and_changes_nothing(state: str) -> None:
    ports = Ports(_world())
    first = await ports.handle(BODY)
    assert first.announcements == {"order-1": Verdict.PUBLISHED} and len(ports.publisher.events) == 1
    order = ports.commerce.order("order-1")
    order.update(orderState=state, version=order["version"] + 1)  # the retailer's OMS moved it on
    ports.commerce.add_order(order)
    before = (
        dict(ports.commerce.orders),
        msgspec.json.encode(ports.commerce.payments),
        dict(ports.commerce.custom_objects),
        len(ports.commerce.updates),
    )
    again = await ports.handle(BODY, ref="instore.webhooks.v1/3/17")
    assert again.announcements == {"order-1": Verdict.ALREADY_PUBLISHED} and len(ports.publisher.events) == 1
    assert (
        dict(ports.commerce.orders),
        msgspec.json.encode(ports.commerce.payments),
        dict(ports.commerce.custom_objects),
        len(ports.commerce.updates),
    ) == before


async def test_the_marker_write_failing_n_times_gives_exactly_one_event_per_order() -> None:
    commerce, failures = _world(_return_line("r1", "order-1", "ol1"), _return_line("r2", "store-1-0002", "ol9")), []

    def published_fails(container: str, key: str, value: Any, version: int | None) -> None:
        if value["state"] == "published" and len(failures) < 10:
            failures.append(key)
            raise DOWN

    commerce.before_custom_object_write = published_fails
    ports = Ports(commerce)
    body = refund_webhook("ret-cart-1", [("rf-card", "p-card", 1999, EUR), ("rf-cash", "p-cash", 500, EUR)], "evt-2")
    handled = await ports.handle(body)
    assert len(failures) == 10 and handled.announcements == {"order-1": Verdict.PUBLISHED, "order-2": Verdict.PUBLISHED}
    assert sorted(json.loads(e.body)["orderId"] for e in ports.publisher.events) == ["order-1", "order-2"]
    assert [v["value"]["state"] for v in commerce.custom_objects.values()] == ["published", "published"]


async def test_two_returns_overdrawing_one_payment_at_once_the_loser_writes_nothing() -> None:
    """The recording locks, as the service function wires them: Order-2 was paid 1,500 in cash;
    two return carts each refund 1,000 of it at the same moment."""
    commerce = _world(_return_line("a1", "order-2", "ol9"), cart_id="ret-a")
    commerce.add_cart(_world(_return_line("b1", "order-2", "ol9"), cart_id="ret-b").cart("ret-b"))
    ports = Ports(commerce)
    results = await asyncio.gather(
        ports.handle(refund_webhook("ret-a", [("rf-a", "p-cash", 1000, EUR)], "evt-a"), ref="t/0/1"),
        ports.handle(refund_webhook("ret-b", [("rf-b", "p-cash", 1000, EUR)], "evt-b"), ref="t/1/1"),
        return_exceptions=True,
    )
    refused = [r for r in results if isinstance(r, Refused)]
    assert len(refused) == 1 and refused[0].reason == "refund-exceeds-capture"
    assert len(_items(commerce, "order-2")) == 1 and len(_refunds(commerce, "p-cash")) == 1
    assert len(ports.publisher.events) == 1


async def test_the_same_refund_three_times_at_once_one_event_no_conflicting_claims() -> None:
    """The per-Order announce lock: the later deliveries wait and find the marker published."""
    commerce = _world()
    ports = Ports(commerce, RecordingPublisher(yields=50))
    results = await asyncio.gather(*(ports.handle(BODY, ref=f"t/{i}/{i}") for i in range(3)))
    assert len(ports.publisher.events) == 1 and len(_refunds(commerce, "p-card")) == 1
    assert sorted(r.announcements["order-1"].value for r in results) == ["already-published"] * 2 + ["published"]
    assert [v["state"] for _, _, v in commerce.custom_object_writes] == ["claimed", "published"]


async def test_two_replicas_at_once_one_event_per_order() -> None:
    commerce, publisher, clock = _world(), RecordingPublisher(), FakeClock()
    a, b = Ports(commerce, publisher, clock), Ports(commerce, publisher, clock)
    await asyncio.gather(*(p.handle(BODY, ref=f"t/{i}/5") for i, p in enumerate([a, b, a, b])))
    assert len(publisher.events) == 1 and len(_refunds(commerce, "p-card")) == 1


async def test_one_deadline_covers_the_recording_and_every_order() -> None:
    """An outage of the cart reads for 100 s, then of Order-2's marker: the webhook gives up at its
    one deadline (then it is dead-lettered), not after a fresh budget for the second Order."""
    clock = FakeClock()
    commerce = _world(_return_line("r1", "order-1", "ol1"), _return_line("r2", "store-1-0002", "ol9"))
    find_cart, put_custom_object = commerce.find_cart, commerce.put_custom_object

    async def cart_down_at_first(ref: str, expand: tuple[str, ...] = ()) -> Any:
        if clock.monotonic() < 100:
            raise DOWN
        return await find_cart(ref, expand)

    async def order_2_marker_down(container: str, key: str, value: Any, version: int | None = None) -> Any:
        if ".order-2." in key:
            raise DOWN
        return await put_custom_object(container, key, value, version)

    commerce.find_cart = cart_down_at_first  # type: ignore[method-assign]
    commerce.put_custom_object = order_2_marker_down  # type: ignore[method-assign]
    ports = Ports(commerce, clock=clock)
    body = refund_webhook("ret-cart-1", [("rf-card", "p-card", 1999, EUR), ("rf-cash", "p-cash", 500, EUR)], "evt-2")
    with pytest.raises(TransientError):
        await ports.handle(body)
    assert [json.loads(e.body)["orderId"] for e in ports.publisher.events] == ["order-1"]
    assert 100 <= clock.monotonic() <= SETTINGS.refund_retry_seconds + 0.001


def test_the_consumer_poll_interval_covers_the_budget_and_its_grace() -> None:
    from instore_refund.app import create_broker
    from instore_shared.kafka.consumer import max_poll_interval_ms

    broker = create_broker(RefundSettings(refund_retry_seconds=3600), InMemoryCommerce())
    (subscriber,) = broker.subscribers
    assert subscriber._connection_args["max_poll_interval_ms"] == max_poll_interval_ms(3600) >= 3720_000
