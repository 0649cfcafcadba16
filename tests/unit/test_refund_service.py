"""The refund service's subscriber with TestKafkaBroker and the in-memory Composable Commerce:
a finalized refund becomes return items and Refund transactions once, however often it comes,
and one commerce.refunds.completed.v1 event per original Order; what cannot be recorded is
dead-lettered with nothing written."""

from __future__ import annotations

import json
from typing import Any

import pytest
from faststream.kafka import KafkaMessage, TestKafkaBroker

from instore_devfakes.instore_samples import refund_webhook
from instore_refund.app import create_broker
from instore_refund.plan import Refused
from instore_refund.record import LineFields, record_refund
from instore_refund.settings import RefundSettings
from instore_shared.commercetools.errors import ConcurrentModification, InvalidInput
from instore_shared.kafka.consumer import the_message
from instore_shared.kafka.topics import REFUNDS_COMPLETED, WEBHOOKS
from tests.fakes.commerce import InMemoryCommerce

SETTINGS = RefundSettings()
FIELDS = LineFields("purchaseOrderId", "purchaseLineItemId", "returnComment")
EUR = "EUR"


def _payment(payment_id: str, captured: int, method: str = "CREDIT_CARD") -> dict[str, Any]:
    return {
        "id": payment_id,
        "version": 1,
        "amountPlanned": {"currencyCode": EUR, "centAmount": captured},
        "paymentMethodInfo": {"method": method},
        "transactions": [
            {
                "id": f"{payment_id}-charge",
                "type": "Charge",
                "state": "Success",
                "amount": {"currencyCode": EUR, "centAmount": captured},
            }
        ],
    }


def _order(order_id: str, number: str, lines: list[tuple[str, int]], payments: list[str]) -> dict[str, Any]:
    return {
        "id": order_id,
        "version": 4,
        "orderNumber": number,
        "orderState": "Confirmed",
        "totalPrice": {"currencyCode": EUR, "centAmount": 5000},
        "lineItems": [{"id": line_id, "quantity": qty} for line_id, qty in lines],
        "paymentInfo": {"payments": [{"typeId": "payment", "id": p} for p in payments]},
    }


def _return_line(line_id: str, order_ref: str, order_line: str, qty: int = 1, cents: int | None = None) -> dict[str, Any]:
    """A return cart line worth ``cents`` (default 2,500 per unit)."""
    total = {"currencyCode": EUR, "centAmount": 2500 * qty if cents is None else cents}
    return {
        "id": line_id,
        "quantity": qty,
        "totalPrice": total,
        "custom": {
            "fields": {"purchaseOrderId": order_ref, "purchaseLineItemId": order_line, "returnComment": f"{line_id} too small"}
        },
    }


CART_CREATED_AT = "2026-12-04T10:00:00.000Z"
"""The return cart's ``createdAt`` (Composable Commerce sets it; REFUND_MODE=instore-managed counts only later writes)."""


def _world(*return_lines: dict[str, Any], cart_id: str = "ret-cart-1") -> InMemoryCommerce:
    """Order-1 (2 × ol1, 1 × ol2; card p-card 5,000) and Order-2 (3 × ol9; cash p-cash 1,500), and a return cart."""
    commerce = InMemoryCommerce()
    commerce.add_payment(_payment("p-card", 5000))
    commerce.add_payment(_payment("p-cash", 1500, "CASH"))
    commerce.add_order(_order("order-1", "store-1-0001", [("ol1", 2), ("ol2", 1)], ["p-card"]))
    commerce.add_order(_order("order-2", "store-1-0002", [("ol9", 3)], ["p-cash"]))
    commerce.add_cart(
        {
            "id": cart_id,
            "key": f"key-{cart_id}",
            "version": 2,
            "createdAt": CART_CREATED_AT,
            "cartState": "Active",
            "totalPrice": {"currencyCode": EUR, "centAmount": 0},
            "custom": {"fields": {"locationId": "store-1", "workstationId": "pos-3", "userId": "colleague-42"}},
            "lineItems": list(return_lines) or [_return_line("r1", "order-1", "ol1")],
        }
    )
    return commerce


def _collect(broker, topic: str) -> list[KafkaMessage]:  # type: ignore[no-untyped-def]
    seen: list[KafkaMessage] = []

    @broker.subscriber(topic, decoder=the_message)
    async def collect(message: KafkaMessage) -> None:
        seen.append(message)

    return seen


async def _deliver(commerce: InMemoryCommerce, *bodies: bytes) -> tuple[list[KafkaMessage], list[KafkaMessage]]:
    """Each body through the subscriber; returns (events, dead letters)."""
    broker = create_broker(SETTINGS, commerce)
    events = _collect(broker, REFUNDS_COMPLETED.name)
    dead = _collect(broker, "instore.webhooks.v1.dlq")
    async with TestKafkaBroker(broker) as br:
        for body in bodies:
            await br.publish(body, WEBHOOKS.name, key=b"ret-cart-1", headers={"webhook-id": json.loads(body)["id"]})
    return events, dead


def _items(commerce: InMemoryCommerce, order_id: str) -> list[dict[str, Any]]:
    return [item for info in commerce.order(order_id).get("returnInfo") or [] for item in info["items"]]


def _refunds(commerce: InMemoryCommerce, payment_id: str) -> list[dict[str, Any]]:
    return [t for t in commerce.payments[payment_id]["transactions"] if t["type"] == "Refund"]


async def test_a_full_return_is_recorded_refunded_and_announced_once() -> None:
    commerce = _world(_return_line("r1", "order-1", "ol1", 2), _return_line("r2", "order-1", "ol2"))
    events, dead = await _deliver(commerce, refund_webhook("ret-cart-1", [("rf-1", "p-card", 5000, EUR)], "evt-1"))
    assert dead == []
    items = _items(commerce, "order-1")
    assert [(i["key"], i["lineItemId"], i["quantity"], i["shipmentState"], i["paymentState"], i["comment"]) for i in items] == [
        ("ret-r1", "ol1", 2, "Returned", "Refunded", "r1 too small"),
        ("ret-r2", "ol2", 1, "Returned", "Refunded", "r2 too small"),
    ]
    (refund,) = _refunds(commerce, "p-card")
    assert (refund["interactionId"], refund["state"], refund["amount"]) == (
        "rf-1",
        "Success",
        {"currencyCode": EUR, "centAmount": 5000},
    )
    (message,) = events
    event = json.loads(message.body)
    assert message.raw_message.key == b"order-1" and message.headers["event-id"] == event["eventId"]
    assert (event["type"], event["orderId"], event["orderNumber"], event["returnCartId"], event["sourceWebhookId"]) == (
        "refunds-completed",
        "order-1",
        "store-1-0001",
        "ret-cart-1",
        "evt-1",
    )
    assert [(i["returnItemKey"], i["lineItemId"], i["quantity"]) for i in event["items"]] == [
        ("ret-r1", "ol1", 2),
        ("ret-r2", "ol2", 1),
    ]
    assert [(r["refundId"], r["paymentId"], r["amount"]["centAmount"]) for r in event["refunds"]] == [("rf-1", "p-card", 5000)]
    assert event["totalRefunded"] == {"centAmount": 5000, "currencyCode": EUR}
    assert (event["locationId"], event["workstationId"], event["colleagueId"]) == ("store-1", "pos-3", "colleague-42")


async def test_the_same_refund_five_times_changes_nothing_after_the_first() -> None:
    commerce = _world()
    body = refund_webhook("ret-cart-1", [("rf-1", "p-card", 1999, EUR)], "evt-1")
    events, dead = await _deliver(commerce, *[body] * 5)
    assert dead == [] and len(events) == 1
    assert len(_items(commerce, "order-1")) == 1 and len(_refunds(commerce, "p-card")) == 1
    assert [r for r, _, _ in commerce.updates] == ["orders", "payments", "orders"]  # return, refund, Refunded


async def test_a_return_over_two_orders_with_a_split_tender_refund() -> None:
    commerce = _world(_return_line("r1", "order-1", "ol1"), _return_line("r2", "store-1-0002", "ol9", 2))
    events, dead = await _deliver(
        commerce, refund_webhook("key-ret-cart-1", [("rf-card", "p-card", 1999, EUR), ("rf-cash", "p-cash", 1000, EUR)], "evt-2")
    )
    assert dead == []
    assert [(i["key"], i["quantity"], i["paymentState"]) for i in _items(commerce, "order-1")] == [("ret-r1", 1, "Refunded")]
    assert [(i["key"], i["quantity"], i["paymentState"]) for i in _items(commerce, "order-2")] == [("ret-r2", 2, "Refunded")]
    assert [t["interactionId"] for t in _refunds(commerce, "p-card")] == ["rf-card"]
    assert [t["interactionId"] for t in _refunds(commerce, "p-cash")] == ["rf-cash"]
    by_order = {json.loads(m.body)["orderId"]: json.loads(m.body) for m in events}
    assert sorted(by_order) == ["order-1", "order-2"] and len(events) == 2
    assert [r["refundId"] for r in by_order["order-2"]["refunds"]] == ["rf-cash"]
    assert by_order["order-1"]["totalRefunded"]["centAmount"] == 1999
    assert by_order["order-1"]["eventId"] != by_order["order-2"]["eventId"]


async def test_a_partial_refund_records_only_the_lines_and_tenders_it_names() -> None:
    commerce = _world(_return_line("r1", "order-1", "ol1"), _return_line("r2", "order-1", "ol2"))
    events, dead = await _deliver(
        commerce, refund_webhook("ret-cart-1", [("rf-1", "p-card", 1250, EUR)], "evt-3", line_item_ids=["r2"])
    )
    assert dead == [] and len(events) == 1
    assert [i["key"] for i in _items(commerce, "order-1")] == ["ret-r2"]
    assert [t["amount"]["centAmount"] for t in _refunds(commerce, "p-card")] == [1250]


@pytest.mark.parametrize(
    ("lines", "refunds", "reason"),
    [
        ([_return_line("r1", "order-1", "ol1", 3)], [("rf", "p-card", 100, EUR)], "return-quantity-exceeded"),
        ([_return_line("r1", "order-1", "nope")], [("rf", "p-card", 100, EUR)], "purchase-line-not-found"),
        ([_return_line("r1", "no-such-order", "ol1")], [("rf", "p-card", 100, EUR)], "purchase-order-not-found"),
        ([{"id": "r1", "quantity": 1}], [("rf", "p-card", 100, EUR)], "return-line-without-purchase"),
        # the return items would be fine: the refund over the capture stops them too
        ([_return_line("r1", "order-1", "ol1", cents=9000)], [("rf", "p-card", 5001, EUR)], "refund-exceeds-capture"),
        ([_return_line("r1", "order-1", "ol1")], [("rf", "p-card", 2501, EUR)], "refund-exceeds-return"),
        ([_return_line("r1", "order-1", "ol1")], [("rf", "p-cash", 100, EUR)], "payment-not-of-purchase"),
        ([_return_line("r1", "order-1", "ol1")], [("rf", "p-card", 100, "USD")], "refund-currency-mismatch"),
        ([_return_line("r1", "order-1", "ol1")], [], "no-refunds"),
        ([_return_line("r1", "order-1", "ol1")], [("rf", "p-card", 100, EUR), ("rf", "p-card", 100, EUR)], "bad-refund"),
    ],
)
async def test_an_impossible_refund_is_dead_lettered_and_writes_nothing(
    lines: list[dict[str, Any]], refunds: list[tuple[str, str, int, str]], reason: str
) -> None:
    commerce = _world(*lines)
    body = refund_webhook("ret-cart-1", refunds, "evt-bad")
    events, dead = await _deliver(commerce, body)
    assert events == [] and commerce.updates == []
    (letter,) = dead
    assert letter.body == body and letter.headers["dlq-error-reason"] == reason
    assert letter.headers["dlq-consumer-group"] == SETTINGS.refund_consumer_group


async def test_malformed_and_unknown_refund_webhooks_are_dead_lettered_other_webhooks_skipped() -> None:
    commerce = _world()
    payment = json.dumps({"id": "evt-p", "type": "payment.completed", "cartId": "sale-1"}).encode()
    unknown_cart = refund_webhook("no-such-cart", [("rf", "p-card", 1, EUR)], "evt-u")
    wrong_types = json.dumps(
        {
            "id": "evt-w",
            "type": "refund.completed",
            "returnCartId": "ret-cart-1",
            "data": {"refunds": [{"refundId": "rf", "paymentId": "p-card", "amount": {"centAmount": "12", "currencyCode": EUR}}]},
        }
    ).encode()
    unknown_line = refund_webhook("ret-cart-1", [("rf", "p-card", 1, EUR)], "evt-l", line_item_ids=["zz"])
    events, dead = await _deliver(commerce, payment, unknown_cart, wrong_types, unknown_line)
    assert events == [] and commerce.updates == []
    assert [m.headers["dlq-error-reason"] for m in dead] == ["return-cart-not-found", "bad-body", "return-line-not-found"]


async def test_a_crash_between_the_writes_is_completed_on_redelivery_not_repeated() -> None:
    commerce = _world(_return_line("r1", "order-1", "ol1"), _return_line("r2", "store-1-0002", "ol9"))
    body = refund_webhook("ret-cart-1", [("rf-card", "p-card", 1999, EUR), ("rf-cash", "p-cash", 500, EUR)], "evt-c")

    def crash() -> None:
        raise SystemExit("killed")  # as the process dying: return items written, refunds not

    with pytest.raises(SystemExit):
        await record_refund(body, commerce, FIELDS, after_returns=crash)
    assert len(_items(commerce, "order-1")) == 1 and _refunds(commerce, "p-card") == []
    events, dead = await _deliver(commerce, body, body)
    assert dead == [] and len(events) == 2
    assert len(_items(commerce, "order-1")) == 1 and len(_items(commerce, "order-2")) == 1
    assert len(_refunds(commerce, "p-card")) == 1 and len(_refunds(commerce, "p-cash")) == 1
    assert all(i["paymentState"] == "Refunded" for o in ("order-1", "order-2") for i in _items(commerce, o))


async def test_recorded_but_not_announced_is_announced_on_redelivery_with_the_same_event_id() -> None:
    commerce = _world()
    body = refund_webhook("ret-cart-1", [("rf-1", "p-card", 1999, EUR)], "evt-1")
    first, _ = await _deliver(commerce, body)
    # as if the process died after the writes but before announcing: no marker
    assert [v["value"]["state"] for v in commerce.custom_objects.values()] == ["published"]
    commerce.custom_objects.clear()
    again, _ = await _deliver(commerce, body)
    assert len(again) == 1 and json.loads(again[0].body)["eventId"] == json.loads(first[0].body)["eventId"]
    assert len(_refunds(commerce, "p-card")) == 1


async def test_a_concurrent_change_of_the_order_is_re_read_not_lost() -> None:
    commerce = _world()
    bumped: list[str] = []

    def other_writer(resource: str, resource_id: str) -> None:
        if resource == "orders" and not bumped:  # someone else updated the Order just before us
            bumped.append(resource_id)
            order = commerce.order(resource_id)
            order["version"] += 1
            commerce.add_order(order)

    commerce.before_update = other_writer
    events, dead = await _deliver(commerce, refund_webhook("ret-cart-1", [("rf-1", "p-card", 1999, EUR)], "evt-1"))
    assert bumped == ["order-1"] and dead == [] and len(events) == 1
    assert len(_items(commerce, "order-1")) == 1 and len(_refunds(commerce, "p-card")) == 1


async def test_two_returns_racing_for_the_last_unit_one_wins_the_other_writes_nothing() -> None:
    commerce = _world(_return_line("r1", "order-1", "ol2"))  # ol2 was bought once
    raced: list[bool] = []

    def other_return_first(resource: str, resource_id: str) -> None:
        if resource == "orders" and not raced:  # another return cart takes the last ol2 meanwhile
            raced.append(True)
            order = commerce.order(resource_id)
            order["version"] += 1
            order["returnInfo"] = [
                {
                    "items": [
                        {
                            "id": "x",
                            "key": "ret-other",
                            "lineItemId": "ol2",
                            "quantity": 1,
                            "shipmentState": "Returned",
                            "paymentState": "Refunded",
                        }
                    ]
                }
            ]
            commerce.add_order(order)
            raise ConcurrentModification(409, "ConcurrentModification", "version mismatch", current_version=5)

    commerce.before_update = other_return_first
    with pytest.raises(Refused) as info:
        await record_refund(refund_webhook("ret-cart-1", [("rf-1", "p-card", 1250, EUR)]), commerce, FIELDS)
    assert info.value.reason == "return-quantity-exceeded"
    assert _refunds(commerce, "p-card") == [] and commerce.updates == []


async def test_a_refusal_of_the_refunded_marks_is_dead_lettered_not_retried_forever() -> None:
    commerce = _world()

    def refuse_marks(resource: str, resource_id: str) -> None:
        if resource == "orders" and commerce.updates and commerce.updates[-1][0] == "payments":
            raise InvalidInput(400, "InvalidOperation", "refused")  # e.g. a project rule on return items

    commerce.before_update = refuse_marks
    events, dead = await _deliver(commerce, refund_webhook("ret-cart-1", [("rf-1", "p-card", 1999, EUR)], "evt-1"))
    assert events == [] and [m.headers["dlq-error-reason"] for m in dead] == ["commerce-refused"]
    assert len(_refunds(commerce, "p-card")) == 1 and commerce.custom_objects == {}


async def test_a_refusal_of_the_announcement_marker_is_dead_lettered_and_publishes_nothing() -> None:
    commerce = _world()

    def refuse(container: str, key: str, value: Any, version: int | None) -> None:
        raise InvalidInput(403, "insufficient_scope", "manage_key_value_documents missing")

    commerce.before_custom_object_write = refuse
    events, dead = await _deliver(commerce, refund_webhook("ret-cart-1", [("rf-1", "p-card", 1999, EUR)], "evt-1"))
    assert events == [] and [m.headers["dlq-error-reason"] for m in dead] == ["marker-refused"]
    assert [i["paymentState"] for i in _items(commerce, "order-1")] == ["Refunded"]  # recorded all the same


async def test_a_refund_id_already_recorded_elsewhere_is_a_conflict_not_a_replay() -> None:
    # the same refund id on another payment, or on the same payment for another amount, or for another return
    commerce = _world(_return_line("r1", "order-1", "ol1"))
    await _deliver(commerce, refund_webhook("ret-cart-1", [("rf-1", "p-card", 1999, EUR)], "evt-1"))
    before = list(commerce.updates)
    other_cart = _world(_return_line("r9", "order-1", "ol1"), cart_id="ret-cart-2")
    commerce.add_cart(other_cart.cart("ret-cart-2"))
    _, dead = await _deliver(
        commerce,
        refund_webhook("ret-cart-1", [("rf-1", "p-card", 999, EUR)], "evt-2"),
        refund_webhook("ret-cart-2", [("rf-1", "p-card", 1999, EUR)], "evt-3"),
    )
    assert [m.headers["dlq-error-reason"] for m in dead] == ["refund-id-conflict", "refund-id-conflict"]
    assert commerce.updates == before and len(_refunds(commerce, "p-card")) == 1


async def test_a_second_refund_of_lines_already_refunded_is_refused() -> None:
    commerce = _world(_return_line("r1", "order-1", "ol1"))
    first, _ = await _deliver(commerce, refund_webhook("ret-cart-1", [("rf-1", "p-card", 1999, EUR)], "evt-1"))
    before = list(commerce.updates)
    events, dead = await _deliver(commerce, refund_webhook("ret-cart-1", [("rf-2", "p-card", 500, EUR)], "evt-2"))
    assert events == [] and [m.headers["dlq-error-reason"] for m in dead] == ["return-already-refunded"]
    assert commerce.updates == before and len(first) == 1


async def test_an_event_kafka_can_never_take_is_dead_lettered_not_retried_forever() -> None:
    from aiokafka.errors import MessageSizeTooLargeError

    commerce = _world()
    broker = create_broker(SETTINGS, commerce)
    dead = _collect(broker, "instore.webhooks.v1.dlq")
    async with TestKafkaBroker(broker) as br:
        publish = broker.publish

        async def refusing(body: Any, topic: str = "", **kwargs: Any) -> Any:
            if topic == REFUNDS_COMPLETED.name:
                raise MessageSizeTooLargeError("The message is 1101094 bytes")
            return await publish(body, topic, **kwargs)

        broker.publish = refusing  # type: ignore[method-assign]
        await br.publish(
            refund_webhook("ret-cart-1", [("rf-1", "p-card", 1999, EUR)], "evt-1"), WEBHOOKS.name, headers={"webhook-id": "evt-1"}
        )
    assert [m.headers["dlq-error-reason"] for m in dead] == ["event-too-large"]
    assert [i["paymentState"] for i in _items(commerce, "order-1")] == ["Refunded"]  # recorded, not announced
    assert [v["value"]["state"] for v in commerce.custom_objects.values()] == ["claimed"]


async def test_odd_and_oversized_refund_webhooks() -> None:
    commerce = _world()
    listed_type = json.dumps({"id": "evt-t", "type": ["refund.completed"], "returnCartId": "ret-cart-1"}).encode()
    many = refund_webhook("ret-cart-1", [(f"rf-{i}", "p-card", 1, EUR) for i in range(101)], "evt-m")
    events, dead = await _deliver(commerce, listed_type, many)
    assert events == [] and commerce.updates == []
    assert [m.headers["dlq-error-reason"] for m in dead] == ["too-large"]  # a list as type: not a refund, skipped


def test_event_ids_tell_apart_what_was_recorded() -> None:
    from instore_shared.contract.refunds_completed import event_id

    assert event_id("o", "c", [], ["ret-a"]) != event_id("o", "c", [], ["ret-b"])
    assert event_id("o", "c", ["rf-2", "rf-1"], ["ret-b", "ret-a"]) == event_id("o", "c", ["rf-1", "rf-2"], ["ret-a", "ret-b"])


async def test_two_returns_overdrawing_one_payment_at_once_one_wins_the_other_writes_nothing() -> None:
    import asyncio

    from instore_shared.kafka.consumer import KeyedLocks

    # Order-2 was paid 1,500 in cash; two return carts each refund 1,000 of it at the same moment.
    commerce = _world(_return_line("a1", "order-2", "ol9"), cart_id="ret-a")
    commerce.add_cart({**_world(_return_line("b1", "order-2", "ol9"), cart_id="ret-b").cart("ret-b")})
    locks = KeyedLocks()
    results = await asyncio.gather(
        record_refund(refund_webhook("ret-a", [("rf-a", "p-cash", 1000, EUR)]), commerce, FIELDS, locks=locks),
        record_refund(refund_webhook("ret-b", [("rf-b", "p-cash", 1000, EUR)]), commerce, FIELDS, locks=locks),
        return_exceptions=True,
    )
    refused = [r for r in results if isinstance(r, Refused)]
    assert len(refused) == 1 and refused[0].reason == "refund-exceeds-capture"
    assert len(_items(commerce, "order-2")) == 1 and len(_refunds(commerce, "p-cash")) == 1  # the loser wrote nothing


async def test_an_outage_that_ends_delays_the_refund_one_that_lasts_dead_letters_it() -> None:
    from instore_shared.commercetools.errors import TransientError

    body = refund_webhook("ret-cart-1", [("rf-1", "p-card", 1999, EUR)], "evt-1")
    commerce = _world()
    commerce.fail_with, commerce.fail_times = TransientError(503, "ServiceUnavailable", "down"), 2
    broker = create_broker(RefundSettings(refund_retry_seconds=30), commerce)
    events, dead = _collect(broker, REFUNDS_COMPLETED.name), _collect(broker, "instore.webhooks.v1.dlq")
    async with TestKafkaBroker(broker) as br:
        await br.publish(body, WEBHOOKS.name, headers={"webhook-id": "evt-1"})
    assert len(events) == 1 and dead == [] and len(_refunds(commerce, "p-card")) == 1

    commerce = _world()
    commerce.fail_with = TransientError(503, "ServiceUnavailable", "down")  # for good
    broker = create_broker(RefundSettings(refund_retry_seconds=0.2), commerce)
    events, dead = _collect(broker, REFUNDS_COMPLETED.name), _collect(broker, "instore.webhooks.v1.dlq")
    async with TestKafkaBroker(broker) as br:
        await br.publish(body, WEBHOOKS.name, headers={"webhook-id": "evt-1"})
    assert events == [] and [m.headers["dlq-error-reason"] for m in dead] == ["commerce-unavailable"]


def test_a_refund_webhook_with_an_unusable_id_is_still_read() -> None:
    from instore_refund.record import parse_webhook

    body = refund_webhook("ret-cart-1", [("rf", "p-card", 1, EUR)], "evt-x")
    payload = json.loads(body)
    payload["id"] = 987  # the gateway keyed it by the body's hash; the refund itself is intact
    webhook = parse_webhook(json.dumps(payload).encode())
    assert webhook is not None and webhook.return_cart_ref() == "ret-cart-1" and webhook.id is None
