"""ORDER_CREATION=instore: InStore creates the Order, order-finalization finds it (by number, and
always by cart), waits a bounded time for it on the injected clock, and announces it once —
it never creates one. Called directly with its ports (in-memory Composable Commerce, recording
publisher, fake clock: no real waiting)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from pydantic import ValidationError

from instore_order_finalization.finalize import INSTORE_ORDER_POLL_SECONDS, Outcome, PermanentFailure
from instore_order_finalization.service import handle_payment_webhook
from instore_order_finalization.settings import OrderFinalizationSettings
from instore_shared.announcements import Verdict
from instore_shared.commercetools.client import ApiResponse
from instore_shared.commercetools.errors import TransientError
from instore_shared.kafka.consumer import KeyedLocks
from tests.fakes.clock import FakeClock
from tests.fakes.commerce import InMemoryCommerce
from tests.fakes.publisher import RecordingPublisher
from tests.unit.test_order_finalization import _payment, _world

WAIT = 30.0
INSTORE = OrderFinalizationSettings(
    order_creation="instore", order_finalization_retry_seconds=120, order_finalization_instore_order_wait_seconds=WAIT
)
INSTORE_NUMBER = "store-berlin-01-000042"  # InStore's own numbering, not derived from the cart id


class InStoreCommerce(InMemoryCommerce):
    """Composable Commerce where only InStore (the test) creates Orders: the service must never try."""

    def __init__(self) -> None:
        super().__init__()
        self.created_by_us: list[str] = []

    async def create_order_from_cart(self, cart_id: str, cart_version: int, order_number: str, payment_state: str) -> ApiResponse:
        self.created_by_us.append(cart_id)
        raise AssertionError("ORDER_CREATION=instore: order-finalization created an Order")

    async def instore_creates_the_order(self, number: str = INSTORE_NUMBER) -> dict[str, Any]:
        """InStore checks out: the Order from the cart (the cart turns Ordered)."""
        cart = self.cart("sale-1")
        created = await InMemoryCommerce.create_order_from_cart(self, cart["id"], cart["version"], number, "Paid")
        return json.loads(created.content)


class SleepHookClock(FakeClock):
    """A fake clock that runs ``on_sleep(n)`` after its n-th sleep (InStore acting while we wait)."""

    def __init__(self, on_sleep: Callable[[int], Any] | None = None) -> None:
        super().__init__()
        self.on_sleep = on_sleep

    async def sleep(self, seconds: float) -> None:
        await super().sleep(seconds)
        if self.on_sleep is not None:
            await self.on_sleep(len(self.slept))


def _paid(payments: list[dict[str, Any]] | None = None, custom_number: str | None = None) -> InStoreCommerce:
    world = _world(payments=payments or [_payment("p1", 3499)], custom_number=custom_number)
    commerce = InStoreCommerce()
    commerce.carts, commerce.payments = world.carts, world.payments
    return commerce


def _webhook(cart_ref: str = "sale-1") -> bytes:
    return json.dumps({"id": "evt-1", "type": "payment.completed", "cartId": cart_ref}).encode()


class Ports:
    def __init__(self, commerce: InMemoryCommerce, clock: FakeClock | None = None, settings: OrderFinalizationSettings = INSTORE):
        self.commerce, self.publisher, self.locks = commerce, RecordingPublisher(), KeyedLocks()
        self.clock, self.settings = clock or FakeClock(), settings

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

    def event(self) -> dict[str, Any]:
        (event,) = self.publisher.events
        return dict(json.loads(event.body))


@pytest.mark.parametrize(
    ("custom_number", "instore_number"),
    [(INSTORE_NUMBER, INSTORE_NUMBER), (None, INSTORE_NUMBER)],
    ids=["by-the-cart-order-number-field", "by-cart-instore-numbered-it-its-own-way"],
)
async def test_an_order_instore_created_is_announced_once_and_none_is_created(
    custom_number: str | None, instore_number: str
) -> None:
    commerce = _paid(custom_number=custom_number)
    order = await commerce.instore_creates_the_order(instore_number)
    ports = Ports(commerce)
    handled = await ports.handle()
    assert handled.result.outcome is Outcome.ALREADY_ORDERED and handled.announcement is Verdict.PUBLISHED
    event = ports.event()
    assert (event["orderId"], event["orderNumber"], event["cartId"]) == (order["id"], instore_number, order["cart"]["id"])
    assert ports.clock.slept == []  # found at the first look: no wait
    for offset in range(1, 4):  # replays, by id and by key
        body = _webhook(order["cart"]["id"] if offset % 2 else "sale-1")
        again = await ports.handle(body, ref=f"instore.webhooks.v1/{offset}/{offset}")
        assert again.announcement is Verdict.ALREADY_PUBLISHED
    assert len(ports.publisher.events) == 1 and commerce.created_by_us == [] and commerce.orders_created == 1


async def test_the_order_is_looked_up_by_cart_even_when_the_cart_read_is_still_active() -> None:
    """InStore ordered the cart after it was read (or the read lagged): its Order, under InStore's
    number, is found by cart although the cart said Active — no wait, no Order of ours."""
    commerce = _paid()
    cart = commerce.cart("sale-1")
    commerce.add_order(
        {"id": "o-instore", "version": 1, "orderNumber": INSTORE_NUMBER, "cart": {"typeId": "cart", "id": cart["id"]}}
    )
    assert commerce.cart("sale-1")["cartState"] == "Active"
    ports = Ports(commerce)
    handled = await ports.handle()
    assert handled.result.outcome is Outcome.ALREADY_ORDERED and ports.event()["orderId"] == "o-instore"
    assert ports.clock.slept == [] and commerce.created_by_us == []


async def test_an_order_that_appears_after_three_polls_is_announced() -> None:
    commerce = _paid()
    created: list[dict[str, Any]] = []

    async def instore_after_three(n: int) -> None:
        if n == 3:
            created.append(await commerce.instore_creates_the_order())

    ports = Ports(commerce, SleepHookClock(instore_after_three))
    handled = await ports.handle()
    assert handled.result.outcome is Outcome.ORDER_APPEARED and handled.announcement is Verdict.PUBLISHED
    assert ports.clock.slept == [INSTORE_ORDER_POLL_SECONDS] * 3  # polled on the clock, stopped once found
    assert ports.event()["orderId"] == created[0]["id"] and commerce.created_by_us == []
    replay = await ports.handle(ref="instore.webhooks.v1/0/1")
    assert replay.result.outcome is Outcome.ALREADY_ORDERED and replay.announcement is Verdict.ALREADY_PUBLISHED
    assert len(ports.publisher.events) == 1 and commerce.orders_created == 1


async def test_an_order_that_never_appears_is_a_permanent_failure_after_the_bounded_wait() -> None:
    commerce = _paid()
    ports = Ports(commerce)
    with pytest.raises(PermanentFailure) as info:
        await ports.handle()
    cart_id = commerce.cart("sale-1")["id"]
    assert info.value.reason == "instore-order-missing"
    assert cart_id in info.value.detail and f"'instore-{cart_id}'" in info.value.detail  # the number looked for
    assert "waiting 30.0 s" in info.value.detail and "ORDER_FINALIZATION_INSTORE_ORDER_WAIT_SECONDS=30" in info.value.detail
    assert sum(ports.clock.slept) == pytest.approx(WAIT) and max(ports.clock.slept) <= INSTORE_ORDER_POLL_SECONDS
    assert ports.clock.monotonic() == pytest.approx(WAIT)
    assert commerce.created_by_us == [] and commerce.orders == {} and ports.publisher.events == []
    assert commerce.custom_object_writes == []  # nothing claimed: a replay of the dead letter starts afresh


async def test_the_dead_letter_replayed_once_instore_created_the_order_announces_it() -> None:
    commerce = _paid()
    ports = Ports(commerce)
    with pytest.raises(PermanentFailure):
        await ports.handle(ref="instore.webhooks.v1/0/0")
    order = await commerce.instore_creates_the_order()
    replayed = await ports.handle(ref="instore.webhooks.v1.dlq/0/0")
    assert replayed.announcement is Verdict.PUBLISHED and ports.event()["orderId"] == order["id"]


@pytest.mark.parametrize(
    "payments",
    [[_payment("p1", 2000)], [_payment("p1", 3499, state="Pending")]],
    ids=["partly-paid", "charge-pending"],
)
async def test_a_cart_not_yet_covered_is_awaiting_payment_without_waiting(payments: list[dict[str, Any]]) -> None:
    commerce = _paid(payments)
    ports = Ports(commerce)
    handled = await ports.handle()
    assert handled.result.outcome is Outcome.AWAITING_PAYMENT and handled.announcement is None
    assert ports.clock.slept == [] and ports.publisher.events == [] and commerce.created_by_us == []


async def test_the_wait_never_outlives_the_webhooks_deadline() -> None:
    """An outage ate 100 s of the 120 s deadline before the cart could be read: the wait gets
    the 20 s left, not its 30 s, so the handler stays within max.poll.interval.ms."""
    clock = FakeClock()
    down = TransientError(503, "ServiceUnavailable", "down")

    class Outage(InStoreCommerce):
        async def find_cart(self, ref: str, expand: tuple[str, ...] = ()) -> ApiResponse:
            if clock.monotonic() < 100:
                raise down
            return await super().find_cart(ref, expand)

    commerce = Outage()
    paid = _paid()
    commerce.carts, commerce.payments = paid.carts, paid.payments
    with pytest.raises(PermanentFailure) as info:
        await Ports(commerce, clock).handle()
    assert info.value.reason == "instore-order-missing"
    assert 100 <= clock.monotonic() <= INSTORE.order_finalization_retry_seconds + 0.001


async def test_integration_mode_still_creates_the_order_itself() -> None:
    settings = OrderFinalizationSettings(order_finalization_retry_seconds=120)
    assert settings.order_creation == "integration"
    commerce = _world(payments=[_payment("p1", 3499)])
    ports = Ports(commerce, settings=settings)
    handled = await ports.handle()
    assert handled.result.outcome is Outcome.ORDER_CREATED and commerce.orders_created == 1
    assert ports.event()["orderNumber"] == f"instore-{commerce.cart('sale-1')['id']}" and ports.clock.slept == []


def test_order_creation_is_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORDER_CREATION", "instore")
    monkeypatch.setenv("ORDER_FINALIZATION_INSTORE_ORDER_WAIT_SECONDS", "12.5")
    settings = OrderFinalizationSettings()
    assert (settings.order_creation, settings.order_finalization_instore_order_wait_seconds) == ("instore", 12.5)
    monkeypatch.setenv("ORDER_CREATION", "both")
    with pytest.raises(ValidationError):
        OrderFinalizationSettings()


def test_the_wait_must_fit_in_the_webhooks_deadline_in_instore_mode() -> None:
    with pytest.raises(ValidationError, match="must not exceed ORDER_FINALIZATION_RETRY_SECONDS"):
        OrderFinalizationSettings(
            order_creation="instore", order_finalization_retry_seconds=20, order_finalization_instore_order_wait_seconds=30
        )
    # integration mode never waits: the wait setting does not constrain the deadline there
    OrderFinalizationSettings(order_finalization_retry_seconds=0, order_finalization_instore_order_wait_seconds=30)
    with pytest.raises(ValidationError):
        OrderFinalizationSettings(order_finalization_instore_order_wait_seconds=601)
