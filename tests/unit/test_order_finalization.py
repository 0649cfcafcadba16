"""order-finalization's decision core with the rule-enforcing in-memory Composable Commerce.

Exactly one Order per cart however often the webhook comes; a split tender waits for its
last charge; permanent problems are named for the dead-letter topic.
"""

from __future__ import annotations

import asyncio
import copy
import json
from typing import Any

import pytest

from instore_devfakes.instore_samples import payment_webhook
from instore_order_finalization.finalize import Outcome, PermanentFailure, await_instore_order, finalize
from instore_order_finalization.model import cart_decoder
from instore_order_finalization.rules import order_number
from instore_shared.commercetools.errors import ConcurrentModification
from instore_shared.kafka.consumer import Deadline
from tests.conftest import load_example
from tests.fakes.clock import FakeClock
from tests.fakes.commerce import InMemoryCommerce

FIELD = "orderNumber"


def _payment(
    pid: str, cents: int, state: str = "Success", kind: str = "Charge", method: str = "CREDIT_CARD", currency: str = "EUR"
) -> dict[str, Any]:
    payment = copy.deepcopy(load_example("payment.example.json"))
    payment.update(id=pid, key=f"key-{pid}")
    payment["amountPlanned"].update(currencyCode=currency, centAmount=cents)
    payment["paymentMethodInfo"]["method"] = method
    payment["transactions"] = [
        {
            "id": f"t-{pid}",
            "type": kind,
            "state": state,
            "timestamp": "2026-11-30T00:00:00Z",
            "amount": {"type": "centPrecision", "fractionDigits": 2, "currencyCode": currency, "centAmount": cents},
        }
    ]
    return payment


def _world(total: int = 3499, payments: list[dict[str, Any]] | None = None, custom_number: str | None = None) -> InMemoryCommerce:
    commerce = InMemoryCommerce()
    cart = copy.deepcopy(load_example("cart.example.json"))
    cart.update(key="sale-1", lineItems=[{"id": "l1", "quantity": 1}])
    cart["totalPrice"].update(currencyCode="EUR", centAmount=total)
    for p in payments or []:
        commerce.add_payment(p)
    cart["paymentInfo"] = {"payments": [{"typeId": "payment", "id": p["id"]} for p in payments or []]}
    if custom_number:
        cart["custom"] = {"type": {"typeId": "type", "id": "t"}, "fields": {FIELD: custom_number}}
    commerce.add_cart(cart)
    return commerce


def _webhook(cart_ref: str = "sale-1", kind: str = "payment.completed") -> bytes:
    return payment_webhook(cart_ref, "evt-1", type=kind)


async def test_a_paid_cart_becomes_one_order_with_a_derived_number() -> None:
    commerce = _world(payments=[_payment("p1", 3499)])
    result = await finalize(_webhook(), commerce, FIELD, "EUR")
    assert result.outcome is Outcome.ORDER_CREATED
    cart_id = result.cart.id  # type: ignore[union-attr]
    assert result.order.orderNumber == f"instore-{cart_id}"  # type: ignore[union-attr]
    assert commerce.cart(cart_id)["cartState"] == "Ordered"


async def test_the_order_number_instore_set_is_used() -> None:
    commerce = _world(payments=[_payment("p1", 3499)], custom_number="store-berlin-01-000042")
    result = await finalize(_webhook(), commerce, FIELD, "EUR")
    assert result.order.orderNumber == "store-berlin-01-000042"  # type: ignore[union-attr]


async def test_the_same_webhook_ten_times_makes_one_order() -> None:
    commerce = _world(payments=[_payment("p1", 3499)])
    outcomes = [(await finalize(_webhook(), commerce, FIELD, "EUR")).outcome for _ in range(10)]
    assert outcomes == [Outcome.ORDER_CREATED] + [Outcome.ALREADY_ORDERED] * 9
    assert commerce.orders_created == 1


async def test_concurrent_deliveries_make_one_order() -> None:
    commerce = _world(payments=[_payment("p1", 3499)])
    results = await asyncio.gather(*(finalize(_webhook(), commerce, FIELD, "EUR") for _ in range(5)))
    assert commerce.orders_created == 1
    assert len({r.order.id for r in results}) == 1  # type: ignore[union-attr]


async def test_split_tender_waits_for_the_last_charge() -> None:
    commerce = _world(payments=[_payment("card", 2000), _payment("cash", 1499, state="Pending", method="CASH")])
    assert (await finalize(_webhook(), commerce, FIELD, "EUR")).outcome is Outcome.AWAITING_PAYMENT
    assert commerce.orders_created == 0
    commerce.add_payment(_payment("cash", 1499, method="CASH"))  # the cash charge succeeded
    assert (await finalize(_webhook(), commerce, FIELD, "EUR")).outcome is Outcome.ORDER_CREATED


@pytest.mark.parametrize(
    "payment",
    [
        _payment("p1", 3499, kind="Authorization"),
        _payment("p1", 3499, state="Failure"),
        _payment("p1", 3499, currency="USD"),
        _payment("p1", 3498),
    ],
)
async def test_what_does_not_cover_the_total_is_left_waiting(payment: dict[str, Any]) -> None:
    commerce = _world(payments=[payment])
    assert (await finalize(_webhook(), commerce, FIELD, "EUR")).outcome is Outcome.AWAITING_PAYMENT


@pytest.mark.parametrize("given_back", ["Refund", "Chargeback"])
async def test_a_sale_charged_then_given_back_is_not_paid(given_back: str) -> None:
    voided = _payment("p1", 3499)
    voided["transactions"].append({**voided["transactions"][0], "id": "t-back", "type": given_back})
    commerce = _world(payments=[voided])
    assert (await finalize(_webhook(), commerce, FIELD, "EUR")).outcome is Outcome.AWAITING_PAYMENT
    assert commerce.orders_created == 0


async def test_a_partly_refunded_charge_counts_what_it_kept() -> None:
    partly = _payment("p1", 3499)
    partly["transactions"].append(
        {
            **partly["transactions"][0],
            "id": "t-r",
            "type": "Refund",
            "amount": {**partly["transactions"][0]["amount"], "centAmount": 500},
        }
    )
    top_up = _payment("p2", 500, method="CASH")
    assert (await finalize(_webhook(), _world(payments=[partly]), FIELD, "EUR")).outcome is Outcome.AWAITING_PAYMENT
    assert (await finalize(_webhook(), _world(payments=[partly, top_up]), FIELD, "EUR")).outcome is Outcome.ORDER_CREATED


@pytest.mark.parametrize("other_cart", [{"typeId": "cart", "id": "another-cart"}, None])
async def test_an_order_number_taken_by_another_carts_order_is_a_dead_letter_not_this_sales_order(
    other_cart: dict[str, str] | None,
) -> None:
    commerce = _world(payments=[_payment("p1", 3499)], custom_number="store-1-000042")
    order = {"id": "o-other", "version": 1, "orderNumber": "store-1-000042", "orderState": "Open"}
    if other_cart is not None:
        order["cart"] = other_cart
    commerce.add_order(order)
    with pytest.raises(PermanentFailure) as refused:
        await finalize(_webhook(), commerce, FIELD, "EUR")
    assert refused.value.reason == "order-number-taken" and "o-other" in str(refused.value)
    assert commerce.orders_created == 0


def _taken_number_world() -> tuple[InMemoryCommerce, dict[str, Any]]:
    """Cart sale-1 carries order-number field N-1, which Order o-a of ANOTHER cart holds; sale-1 itself was
    ordered (by InStore, or by hand) under its own number M-7."""
    commerce = _world(payments=[_payment("p1", 3499)], custom_number="N-1")
    commerce.add_order({"id": "o-a", "version": 1, "orderNumber": "N-1", "cart": {"typeId": "cart", "id": "cart-a"}})
    cart = commerce.cart("sale-1")
    own = {"id": "o-b", "version": 1, "orderNumber": "M-7", "cart": {"typeId": "cart", "id": cart["id"]}}
    commerce.add_order(own)
    cart["cartState"] = "Ordered"
    commerce.add_cart(cart)
    return commerce, own


async def test_an_ordered_cart_whose_number_field_another_order_holds_finds_its_own_order() -> None:
    commerce, own = _taken_number_world()
    result = await finalize(_webhook(), commerce, FIELD, "EUR")
    assert result.outcome is Outcome.ALREADY_ORDERED and result.order is not None and result.order.id == own["id"]


async def test_instore_mode_a_cart_with_its_own_order_is_not_dead_lettered_for_a_taken_number() -> None:
    commerce, own = _taken_number_world()
    clock = FakeClock()
    seen = await await_instore_order(
        _webhook(), commerce, FIELD, "EUR", clock=clock, wait_seconds=5, deadline=Deadline(60, clock)
    )
    assert seen.outcome is Outcome.ALREADY_ORDERED and seen.order is not None and seen.order.id == own["id"]


async def test_a_conflict_rereads_the_cart_and_tries_again() -> None:
    commerce = _world(payments=[_payment("p1", 3499)])
    real = commerce.create_order_from_cart
    calls = 0

    async def once_conflicting(*args: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ConcurrentModification(409, "ConcurrentModification", "changed", current_version=2)
        return await real(*args)

    commerce.create_order_from_cart = once_conflicting  # type: ignore[method-assign]
    assert (await finalize(_webhook(), commerce, FIELD, "EUR")).outcome is Outcome.ORDER_CREATED
    assert calls == 2


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"not json", "bad-body"),
        (json.dumps({"id": "e", "type": "payment.completed"}).encode(), "no-cart-id"),
        (_webhook("no-such-cart"), "cart-not-found"),
    ],
)
async def test_permanent_failures_are_named(body: bytes, reason: str) -> None:
    with pytest.raises(PermanentFailure) as info:
        await finalize(body, _world(payments=[_payment("p1", 3499)]), FIELD, "EUR")
    assert info.value.reason == reason


async def test_other_webhook_types_change_nothing() -> None:
    commerce = _world(payments=[_payment("p1", 3499)])
    assert (await finalize(_webhook(kind="refund.completed"), commerce, FIELD, "EUR")).outcome is Outcome.NOT_A_PAYMENT
    assert commerce.calls == []


def test_order_number_rule_on_the_official_example_cart() -> None:
    cart = cart_decoder.decode(json.dumps(load_example("cart.example.json")).encode())
    assert order_number(cart, FIELD) == "instore-27b39077-aa57-48a5-b504-914f68fa44dc"


def test_a_webhook_whose_type_is_not_a_string_is_not_a_payment() -> None:
    from instore_order_finalization.finalize import parse_webhook

    assert parse_webhook(b'{"type": ["payment.completed"], "cartId": "c1"}') is None
    assert parse_webhook(b'{"type": {"a": 1}}') is None


@pytest.mark.parametrize(
    "extra",
    [{"id": 12345}, {"id": {"n": 1}}, {"id": ["e"]}, {"data": []}, {"data": "x"}],
    ids=["id-int", "id-object", "id-list", "data-list", "data-string"],
)
async def test_a_paid_sale_is_ordered_whatever_the_type_of_fields_it_does_not_need(extra: dict[str, Any]) -> None:
    # The gateway acknowledges such a webhook (keyed by the body's hash when the id is unusable):
    # dead-lettering it would leave a paid cart without an Order, and a replay sends the same bytes.
    commerce = _world(payments=[_payment("p1", 3499)])
    result = await finalize(payment_webhook("sale-1", "evt-1", **extra), commerce, FIELD, "EUR")
    assert result.outcome is Outcome.ORDER_CREATED
