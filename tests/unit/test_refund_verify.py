"""REFUND_MODE=instore-managed: InStore wrote the return and the refunds itself; the refund service
verifies them against the webhook (pure functions of instore_refund.verify) — counting only what was
written since the return cart was created — writes nothing to Composable Commerce, announces
refunds.completed once per Order, waits (fake clock) for InStore's writes that come after the
webhook, and dead-letters a mismatch left at the end of that wait."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from faststream.kafka import TestKafkaBroker

from instore_devfakes.instore_samples import refund_webhook
from instore_refund.app import create_broker
from instore_refund.plan import ReturnLine, TenderRefund, return_item_key
from instore_refund.record import LineFields
from instore_refund.service import handle_refund_webhook
from instore_refund.settings import RefundSettings
from instore_refund.verify import MISMATCH, Mismatch, instant, verify, verify_refund
from instore_shared.announcements import Verdict
from instore_shared.commercetools.errors import TransientError
from instore_shared.contract import refunds_completed as contract
from instore_shared.kafka.consumer import Deadline, KeyedLocks
from instore_shared.kafka.topics import REFUNDS_COMPLETED, WEBHOOKS
from tests.fakes.clock import FakeClock
from tests.fakes.commerce import InMemoryCommerce
from tests.fakes.publisher import RecordingPublisher
from tests.unit.test_refund_service import CART_CREATED_AT, EUR, _collect, _order, _payment, _return_line, _world

MANAGED = RefundSettings(refund_mode="instore-managed", refund_retry_seconds=120)
SINCE = datetime(2026, 12, 4, 10, 0, 0, tzinfo=UTC)
"""The return cart's createdAt (CART_CREATED_AT of the unit-test world)."""
LATER = "2026-12-04T10:00:07.250Z"
"""When InStore wrote this return (after its return cart)."""
EARLIER = "2026-12-04T09:57:12.500Z"
"""When InStore wrote an earlier return of the same Order (minutes before this return cart)."""


def _refund_tx(
    tx_id: str,
    cents: int,
    currency: str = EUR,
    state: str = "Success",
    interaction: str | None = None,
    timestamp: str | None = LATER,
) -> dict[str, Any]:
    t: dict[str, Any] = {"id": tx_id, "type": "Refund", "state": state, "amount": {"currencyCode": currency, "centAmount": cents}}
    if interaction:
        t["interactionId"] = interaction
    if timestamp:
        t["timestamp"] = timestamp
    return t


def _return_item(line_item_id: str, qty: int, key: str | None = None, created_at: str | None = LATER) -> dict[str, Any]:
    item: dict[str, Any] = {
        "id": f"ri-{line_item_id}-{qty}",
        "lineItemId": line_item_id,
        "quantity": qty,
        "shipmentState": "Returned",
    }
    if key:
        item["key"] = key
    if created_at:
        item["createdAt"] = created_at
    return item


def _orders(items: list[dict[str, Any]], transactions: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Order-1 (2 × ol1, 1 × ol2) paid by p-card 5,000 EUR, with ``items`` as InStore's return items and
    ``transactions`` added to p-card (expanded, as read); Order-2 paid by p-cash."""
    card = _payment("p-card", 5000)
    card["transactions"] += transactions
    order = _order("order-1", "store-1-0001", [("ol1", 2), ("ol2", 1)], ["p-card"])
    order["paymentInfo"]["payments"][0]["obj"] = card
    if items:
        order["returnInfo"] = [{"items": items}]
    other = _order("order-2", "store-1-0002", [("ol9", 3)], ["p-cash"])
    other["paymentInfo"]["payments"][0]["obj"] = _payment("p-cash", 1500, "CASH")
    return {"order-1": order, "order-2": other}


LINE = ReturnLine("r1", "order-1", "ol1", 2)
TENDER = TenderRefund("rf-1", "p-card", 5000, EUR)


def test_what_instore_wrote_matches() -> None:
    orders = _orders([_return_item("ol1", 1), _return_item("ol1", 1, "instore-key")], [_refund_tx("t1", 5000)])
    found = verify([LINE], [TENDER], orders, SINCE)
    assert [(line.line_id, item["key"]) for line, item in found["order-1"].items] == [("r1", "instore-key")]
    assert [(tender.refund_id, pid, t["id"]) for tender, pid, t in found["order-1"].refunds] == [("rf-1", "p-card", "t1")]


def _mismatch(lines: list[ReturnLine], tenders: list[TenderRefund], orders: dict[str, dict[str, Any]]) -> str:
    with pytest.raises(Mismatch) as caught:
        verify(lines, tenders, orders, SINCE)
    assert caught.value.reason == MISMATCH == "instore-managed-mismatch"
    return str(caught.value)


def test_a_missing_return_item_is_a_mismatch_naming_order_line_and_quantities() -> None:
    message = _mismatch([LINE], [TENDER], _orders([_return_item("ol2", 2)], [_refund_tx("t1", 5000)]))
    assert "order-1" in message and "ol1" in message and "2 returned" in message and "for 0 found" in message


def test_too_small_a_returned_quantity_is_a_mismatch() -> None:
    message = _mismatch([LINE], [TENDER], _orders([_return_item("ol1", 1)], [_refund_tx("t1", 5000)]))
    assert "2 returned, return items for 1 found" in message


def test_two_lines_of_one_purchase_line_need_their_sum() -> None:
    lines = [ReturnLine("r1", "order-1", "ol1", 1), ReturnLine("r2", "order-1", "ol1", 1)]
    assert "2 returned" in _mismatch(lines, [TENDER], _orders([_return_item("ol1", 1)], [_refund_tx("t1", 5000)]))


def test_a_missing_refund_transaction_is_a_mismatch_naming_payment_refund_and_amount() -> None:
    message = _mismatch([LINE], [TENDER], _orders([_return_item("ol1", 2)], []))
    assert "payment p-card" in message and "refund rf-1" in message and "5000 EUR" in message


@pytest.mark.parametrize(
    "transaction",
    [
        _refund_tx("t1", 4999),  # wrong amount
        _refund_tx("t1", 5000, "USD"),  # wrong currency
        _refund_tx("t1", 5000, state="Failure"),
        _refund_tx("t1", 5000, state="Pending"),
        {**_refund_tx("t1", 5000), "type": "Charge"},
    ],
)
def test_a_refund_not_found_by_amount_is_a_mismatch(transaction: dict[str, Any]) -> None:
    assert "no Success Refund transaction of 5000 EUR found with interactionId rf-1 or a timestamp since" in _mismatch(
        [LINE], [TENDER], _orders([_return_item("ol1", 2)], [transaction])
    )


@pytest.mark.parametrize(
    ("transaction", "found"),
    [
        (_refund_tx("t1", 4999, interaction="rf-1"), "found Success 4999 EUR"),
        (_refund_tx("t1", 5000, "USD", interaction="rf-1"), "found Success 5000 USD"),
        (_refund_tx("t1", 5000, state="Failure", interaction="rf-1"), "found Failure 5000 EUR"),
    ],
)
def test_the_transaction_naming_the_refund_id_must_be_exactly_it(transaction: dict[str, Any], found: str) -> None:
    """Another Success Refund of the right amount does not stand in for the one that names the refund id."""
    orders = _orders([_return_item("ol1", 2)], [transaction, _refund_tx("t2", 5000)])
    message = _mismatch([LINE], [TENDER], orders)
    assert "expected a Success Refund of 5000 EUR" in message and found in message and "transaction t1" in message


def test_a_payment_not_of_the_returned_orders_is_a_mismatch() -> None:
    orders = _orders([_return_item("ol1", 2)], [_refund_tx("t1", 5000)])
    message = _mismatch([LINE], [TenderRefund("rf-1", "p-elsewhere", 5000, EUR)], orders)
    assert "payment p-elsewhere is not a payment of the returned orders" in message


def test_two_tenders_of_one_amount_on_one_payment_need_two_transactions() -> None:
    tenders = [TenderRefund("rf-a", "p-card", 1000, EUR), TenderRefund("rf-b", "p-card", 1000, EUR)]
    one = _orders([_return_item("ol1", 2)], [_refund_tx("t1", 1000)])
    assert "refund rf-b" in _mismatch([LINE], tenders, one)
    two = _orders([_return_item("ol1", 2)], [_refund_tx("t1", 1000), _refund_tx("t2", 1000)])
    found = verify([LINE], tenders, two, SINCE)["order-1"]
    assert [(tender.refund_id, t["id"]) for tender, _, t in found.refunds] == [("rf-a", "t1"), ("rf-b", "t2")]


def test_the_transaction_naming_a_refund_id_is_not_taken_by_amount_for_another_tender() -> None:
    """rf-b names t1 by interactionId; rf-a (listed first, no interactionId anywhere) gets t2, not t1."""
    tenders = [TenderRefund("rf-a", "p-card", 1000, EUR), TenderRefund("rf-b", "p-card", 1000, EUR)]
    orders = _orders([_return_item("ol1", 2)], [_refund_tx("t1", 1000, interaction="rf-b"), _refund_tx("t2", 1000)])
    found = verify([LINE], tenders, orders, SINCE)["order-1"]
    assert sorted((tender.refund_id, t["id"]) for tender, _, t in found.refunds) == [("rf-a", "t2"), ("rf-b", "t1")]


# --- only what was written since the return cart counts (an earlier return does not stand in) -----------


def test_return_items_created_before_the_return_cart_do_not_count() -> None:
    """An earlier return of the same line (its item created before this return cart) is not this return."""
    earlier = _return_item("ol1", 2, "earlier-return", created_at=EARLIER)
    message = _mismatch([LINE], [TENDER], _orders([earlier], [_refund_tx("t1", 5000)]))
    assert "2 returned, return items for 0 found created since the return cart (2026-12-04T10:00:00.000Z" in message
    assert "2 more in earlier return items, not counted" in message
    # one written at the cart's very createdAt counts; so does one without offset (read as UTC)
    at_once = _return_item("ol1", 2, "this-return", created_at="2026-12-04T10:00:00Z")
    found = verify([LINE], [TENDER], _orders([earlier, at_once], [_refund_tx("t1", 5000)]), SINCE)
    assert [item["key"] for _, item in found["order-1"].items] == ["this-return"]
    no_offset = _return_item("ol1", 2, "no-offset", created_at="2026-12-04T10:00:01")
    assert verify([LINE], [TENDER], _orders([no_offset], [_refund_tx("t1", 5000)]), SINCE)["order-1"].items


@pytest.mark.parametrize("created_at", [None, "yesterday", "2026-12-04T09:59:57.500Z", "2026-12-04T10:59:57+01:00"])
def test_a_return_item_without_a_createdat_since_the_cart_does_not_count(created_at: str | None) -> None:
    item = {**_return_item("ol1", 2), "createdAt": created_at}
    assert "return items for 0 found" in _mismatch([LINE], [TENDER], _orders([item], [_refund_tx("t1", 5000)]))


@pytest.mark.parametrize(
    "timestamp",
    [None, "2026-12-04T09:59:57.500Z", "not a time", "2026-12-04T10:30:00+01:00"],
    ids=["no-timestamp", "before-the-cart", "unreadable", "before-the-cart-in-another-offset"],
)
def test_a_refund_found_by_amount_needs_a_timestamp_since_the_return_cart(timestamp: str | None) -> None:
    transaction = _refund_tx("t-old", 5000, interaction="psp-earlier", timestamp=timestamp)
    message = _mismatch([LINE], [TENDER], _orders([_return_item("ol1", 2)], [transaction]))
    assert "no Success Refund transaction of 5000 EUR found with interactionId rf-1 or a timestamp since" in message


def test_the_transaction_naming_the_refund_id_counts_whatever_its_timestamp() -> None:
    """The first rule (interactionId = refund id) is exact: no timestamp needed, none too early."""
    for timestamp in (None, EARLIER):
        named = _refund_tx("t-named", 5000, interaction="rf-1", timestamp=timestamp)
        found = verify([LINE], [TENDER], _orders([_return_item("ol1", 2)], [named]), SINCE)
        assert [t["id"] for _, _, t in found["order-1"].refunds] == ["t-named"]


def test_a_second_return_instore_never_wrote_is_not_verified_by_the_first_ones_writes() -> None:
    """review16: the first return (1 of ol1, 25.00) was written before this second return cart; InStore's
    writes for the second failed. The first one's return item and Refund do not make the second one verified."""
    first_item = _return_item("ol1", 1, "first", created_at=EARLIER)
    first_refund = _refund_tx("t-first", 2500, interaction="instore-1", timestamp=EARLIER)
    second = ReturnLine("r2", "order-1", "ol1", 1)
    tender = TenderRefund("rf-2", "p-card", 2500, EUR)
    assert "1 returned, return items for 0 found" in _mismatch([second], [tender], _orders([first_item], [first_refund]))
    # its own return item alone is not enough either: the Refund must be its own too
    second_item = _return_item("ol1", 1, "second")
    message = _mismatch([second], [tender], _orders([first_item, second_item], [first_refund]))
    assert "payment p-card, refund rf-2: no Success Refund transaction of 2500 EUR" in message
    second_refund = _refund_tx("t-second", 2500, interaction="instore-2")
    found = verify([second], [tender], _orders([first_item, second_item], [first_refund, second_refund]), SINCE)
    assert [
        (item["key"], t["id"]) for (_, item), (_, _, t) in zip(found["order-1"].items, found["order-1"].refunds, strict=True)
    ] == [("second", "t-second")]


def test_instant_reads_composable_commerce_date_times_as_utc() -> None:
    assert instant(CART_CREATED_AT) == SINCE == instant("2026-12-04T11:00:00+01:00") == instant("2026-12-04T10:00:00")
    assert [instant(v) for v in (None, "", "soon", 1800000000)] == [None, None, None, None]


# --- the service function with its ports ------------------------------------------------------------------


def _instore_wrote(
    commerce: InMemoryCommerce, order_id: str, items: list[dict[str, Any]], payment_id: str, *txs: dict[str, Any]
) -> None:
    """Play InStore: its return items on the Order and its Refund transactions on the Payment, written directly."""
    order = commerce.order(order_id)
    order["returnInfo"] = [*(order.get("returnInfo") or []), {"items": items}]
    order["version"] += 1
    commerce.add_order(order)
    commerce.payments[payment_id]["transactions"] += list(txs)
    commerce.payments[payment_id]["version"] += 1


async def _handle(
    commerce: InMemoryCommerce,
    publisher: RecordingPublisher,
    body: bytes,
    ref: str = "t/0/0",
    clock: FakeClock | None = None,
    settings: RefundSettings = MANAGED,
) -> Any:
    return await handle_refund_webhook(
        body,
        {"webhook-id": json.loads(body)["id"]},
        commerce=commerce,
        publisher=publisher,
        order_locks=KeyedLocks(),
        recording_locks=KeyedLocks(),
        clock=clock or FakeClock(),
        settings=settings,
        message_ref=ref,
    )


def _writes(commerce: InMemoryCommerce) -> list[tuple[str, str]]:
    return [call for call in commerce.calls if call[0].startswith("update")]


async def test_instore_managed_writes_nothing_announces_once_and_a_replay_announces_nothing_new() -> None:
    commerce = _world(_return_line("r1", "order-1", "ol1", 2))
    _instore_wrote(
        commerce, "order-1", [_return_item("ol1", 2, "instore-ri-1")], "p-card", _refund_tx("tx-9", 4000, interaction="psp-77")
    )
    before = (commerce.order("order-1"), json.dumps(commerce.payments, sort_keys=True))
    publisher = RecordingPublisher()
    body = refund_webhook("ret-cart-1", [("rf-1", "p-card", 4000, EUR)], "evt-1")
    handled = await _handle(commerce, publisher, body)
    assert handled.recorded.outcome.value == "verified" and handled.announcements == {"order-1": Verdict.PUBLISHED}
    assert _writes(commerce) == [] and commerce.updates == []
    assert (commerce.order("order-1"), json.dumps(commerce.payments, sort_keys=True)) == before
    assert [state for _, _, value in commerce.custom_object_writes for state in [value["state"]]] == ["claimed", "published"]
    (message,) = publisher.events
    event = json.loads(message.body)
    assert (event["orderId"], event["orderNumber"], event["returnCartId"], event["sourceWebhookId"]) == (
        "order-1",
        "store-1-0001",
        "ret-cart-1",
        "evt-1",
    )
    assert event["items"] == [
        {
            "returnItemKey": "instore-ri-1",
            "returnLineItemId": "r1",
            "lineItemId": "ol1",
            "customLineItem": False,
            "quantity": 2,
            "comment": "r1 too small",
        }
    ]
    assert event["refunds"] == [
        {"refundId": "rf-1", "paymentId": "p-card", "transactionId": "tx-9", "amount": {"centAmount": 4000, "currencyCode": EUR}}
    ]
    assert event["totalRefunded"] == {"centAmount": 4000, "currencyCode": EUR}
    # the same id delegated mode gives the same refund: a mode switch between deliveries is no second event
    assert event["eventId"] == contract.event_id("order-1", "ret-cart-1", ["rf-1"], [return_item_key("r1")])

    again = await _handle(commerce, publisher, body, ref="t/3/9")
    assert again.announcements == {"order-1": Verdict.ALREADY_PUBLISHED}
    assert len(publisher.events) == 1 and _writes(commerce) == [] and len(commerce.custom_object_writes) == 2


async def test_instore_managed_over_two_orders_one_event_each() -> None:
    commerce = _world(_return_line("r1", "order-1", "ol1"), _return_line("r2", "store-1-0002", "ol9", 2))
    _instore_wrote(commerce, "order-1", [_return_item("ol1", 1)], "p-card", _refund_tx("c1", 1999))
    _instore_wrote(commerce, "order-2", [_return_item("ol9", 2)], "p-cash", _refund_tx("h1", 1000))
    publisher = RecordingPublisher()
    body = refund_webhook("ret-cart-1", [("rf-card", "p-card", 1999, EUR), ("rf-cash", "p-cash", 1000, EUR)], "evt-2")
    handled = await _handle(commerce, publisher, body)
    assert handled.announcements == {"order-1": Verdict.PUBLISHED, "order-2": Verdict.PUBLISHED} and _writes(commerce) == []
    by_order = {json.loads(e.body)["orderId"]: json.loads(e.body) for e in publisher.events}
    assert by_order["order-2"]["totalRefunded"] == {"centAmount": 1000, "currencyCode": EUR}
    assert [r["transactionId"] for r in by_order["order-1"]["refunds"]] == ["c1"]
    assert by_order["order-1"]["items"][0]["returnItemKey"] == "ri-ol1-1"  # InStore gave no key: the item's id


async def test_instore_managed_a_mismatch_is_dead_lettered_with_its_reason_nothing_written_nothing_announced() -> None:
    commerce = _world(_return_line("r1", "order-1", "ol1", 2))
    _instore_wrote(commerce, "order-1", [_return_item("ol1", 2)], "p-card", _refund_tx("tx-9", 3999))
    no_wait = RefundSettings(refund_mode="instore-managed", refund_instore_managed_wait_seconds=0)  # the real clock here
    broker = create_broker(no_wait, commerce)
    events, dead = _collect(broker, REFUNDS_COMPLETED.name), _collect(broker, "instore.webhooks.v1.dlq")
    async with TestKafkaBroker(broker) as br:
        body = refund_webhook("ret-cart-1", [("rf-1", "p-card", 4000, EUR)], "evt-3")
        await br.publish(body, WEBHOOKS.name, key=b"ret-cart-1", headers={"webhook-id": "evt-3"})
    (letter,) = dead
    assert letter.headers["dlq-error-reason"] == "instore-managed-mismatch"
    assert "payment p-card, refund rf-1: no Success Refund transaction of 4000 EUR" in letter.headers["dlq-error-detail"]
    assert letter.body == body and events == []
    assert _writes(commerce) == [] and commerce.custom_object_writes == []


async def test_delegated_mode_is_the_default_and_writes_as_before() -> None:
    assert RefundSettings().refund_mode == "delegated"
    commerce = _world(_return_line("r1", "order-1", "ol1", 2))
    publisher = RecordingPublisher()
    await handle_refund_webhook(
        refund_webhook("ret-cart-1", [("rf-1", "p-card", 4000, EUR)], "evt-4"),
        {},
        commerce=commerce,
        publisher=publisher,
        order_locks=KeyedLocks(),
        recording_locks=KeyedLocks(),
        clock=FakeClock(),
        settings=RefundSettings(),
        message_ref="t/0/0",
    )
    assert [r for r, _, _ in commerce.updates] == ["orders", "payments", "orders"] and len(publisher.events) == 1


# --- a webhook ahead of InStore's writes waits for them (fake clock: no real sleeping) ------------------


class _InStoreLate(FakeClock):
    """A fake clock on which ``at_sleep(n)`` runs right after the n-th sleep (1-based): InStore writing meanwhile."""

    def __init__(self, **at: Callable[[], None]) -> None:
        super().__init__()
        self.at = {int(n.removeprefix("n")): write for n, write in at.items()}

    async def sleep(self, seconds: float) -> None:
        await super().sleep(seconds)
        if write := self.at.get(len(self.slept)):
            write()


def _late_world() -> tuple[InMemoryCommerce, Callable[[], None]]:
    commerce = _world(_return_line("r1", "order-1", "ol1", 2))

    def write() -> None:
        _instore_wrote(commerce, "order-1", [_return_item("ol1", 2, "late")], "p-card", _refund_tx("tx-late", 4000))

    return commerce, write


BODY = refund_webhook("ret-cart-1", [("rf-1", "p-card", 4000, EUR)], "evt-late")


async def test_instores_writes_three_polls_after_the_webhook_are_verified_and_announced_once() -> None:
    commerce, write = _late_world()
    clock, publisher = _InStoreLate(n3=write), RecordingPublisher()
    handled = await _handle(commerce, publisher, BODY, clock=clock)
    assert handled.recorded.outcome.value == "verified" and handled.announcements == {"order-1": Verdict.PUBLISHED}
    assert clock.slept == [1.0, 1.0, 1.0]  # polled every second until the 3rd read found them
    assert [c for c in commerce.calls if c[0] == "find_order"] == [("find_order", "order-1")] * 4
    (event,) = [json.loads(e.body) for e in publisher.events]
    assert [(i["returnItemKey"], i["quantity"]) for i in event["items"]] == [("late", 2)]
    assert [r["transactionId"] for r in event["refunds"]] == ["tx-late"] and _writes(commerce) == []


async def test_writes_that_never_come_are_a_mismatch_after_the_bounded_wait() -> None:
    commerce, _ = _late_world()
    clock, publisher = _InStoreLate(), RecordingPublisher()
    with pytest.raises(Mismatch) as caught:
        await _handle(commerce, publisher, BODY, clock=clock)
    assert clock.monotonic() == 30.0 and clock.slept == [1.0] * 30  # REFUND_INSTORE_MANAGED_WAIT_SECONDS default
    detail = caught.value.detail
    assert detail.startswith("order order-1, line item ol1: 2 returned, return items for 0 found")
    assert "still after waiting 30.0 s for InStore's writes" in detail and "REFUND_INSTORE_MANAGED_WAIT_SECONDS=30" in detail
    assert publisher.events == [] and commerce.custom_object_writes == [] and _writes(commerce) == []


async def test_writes_after_the_wait_are_too_late() -> None:
    commerce, write = _late_world()
    short = RefundSettings(refund_mode="instore-managed", refund_retry_seconds=120, refund_instore_managed_wait_seconds=2.5)
    clock = _InStoreLate(n4=write)
    with pytest.raises(Mismatch, match=r"after waiting 2\.5 s"):
        await _handle(commerce, RecordingPublisher(), BODY, clock=clock, settings=short)
    assert clock.slept == [1.0, 1.0, 0.5]


async def test_the_wait_never_runs_past_the_webhooks_deadline() -> None:
    commerce, write = _late_world()
    clock = _InStoreLate(n9=write)
    fields = LineFields("purchaseOrderId", "purchaseLineItemId", "returnComment")
    with pytest.raises(Mismatch, match=r"after waiting 5\.0 s .*WAIT_SECONDS=30\)"):
        await verify_refund(BODY, commerce, fields, clock=clock, wait_seconds=30, deadline=Deadline(5, clock))
    assert clock.monotonic() == 5.0


async def test_an_outage_while_waiting_is_retried_and_draws_on_the_same_deadline() -> None:
    """Composable Commerce down from the 1st to the 2nd poll: retried with backoff; InStore's writes then count."""
    commerce, write = _late_world()

    def outage() -> None:
        commerce.fail_with, commerce.fail_times = TransientError(503, "ServiceUnavailable", "down"), 3

    clock = _InStoreLate(n1=outage, n2=write)
    handled = await _handle(commerce, RecordingPublisher(), BODY, clock=clock)
    assert handled.recorded.outcome.value == "verified" and len(clock.slept) >= 4  # 1 s poll, backoffs, found

    # an outage that outlasts the deadline: the last TransientError, not a mismatch (commerce-unavailable)
    commerce, _ = _late_world()
    clock = _InStoreLate(n2=lambda: setattr(commerce, "fail_with", TransientError(503, "ServiceUnavailable", "down")))
    tight = RefundSettings(refund_mode="instore-managed", refund_retry_seconds=10, refund_instore_managed_wait_seconds=10)
    with pytest.raises(TransientError):
        await _handle(commerce, RecordingPublisher(), BODY, clock=clock, settings=tight)
    assert clock.monotonic() <= 10.0 + 1e-9


async def test_a_return_cart_without_createdat_is_a_mismatch_at_once() -> None:
    commerce, _ = _late_world()
    cart = commerce.cart("ret-cart-1")
    del cart["createdAt"]
    commerce.add_cart(cart)
    clock = _InStoreLate()
    with pytest.raises(Mismatch, match="return cart ret-cart-1 has no createdAt"):
        await _handle(commerce, RecordingPublisher(), BODY, clock=clock)
    assert clock.slept == []


def test_the_wait_must_fit_in_the_webhooks_deadline_in_instore_managed_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(
        ValueError, match="REFUND_INSTORE_MANAGED_WAIT_SECONDS \\(30\\) must not exceed REFUND_RETRY_SECONDS \\(20\\)"
    ):
        RefundSettings(refund_mode="instore-managed", refund_retry_seconds=20)
    RefundSettings(refund_retry_seconds=0)  # delegated mode never waits: no constraint
    RefundSettings(refund_mode="instore-managed", refund_retry_seconds=20, refund_instore_managed_wait_seconds=20)
    for bad in (-1, 601):
        with pytest.raises(ValueError):
            RefundSettings(refund_instore_managed_wait_seconds=bad)
    monkeypatch.setenv("REFUND_MODE", "instore-managed")
    monkeypatch.setenv("REFUND_INSTORE_MANAGED_WAIT_SECONDS", "7.5")
    assert RefundSettings().refund_instore_managed_wait_seconds == 7.5


def test_a_refund_stamped_in_whole_seconds_within_the_clock_tolerance_counts() -> None:
    """A writer truncating to seconds, or a clock a little behind: 10:00:00Z for a cart created 10:00:00.400Z."""
    since = datetime(2026, 12, 4, 10, 0, 0, 400_000, tzinfo=UTC)
    truncated = _refund_tx("t1", 5000, interaction="psp-1", timestamp="2026-12-04T10:00:00Z")
    item = _return_item("ol1", 2, "this-return", created_at="2026-12-04T09:59:59Z")
    assert verify([LINE], [TENDER], _orders([item], [truncated]), since)["order-1"].items
