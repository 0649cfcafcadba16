"""The refund planning core: what a finalized refund writes, validated before anything is written,
and nothing written twice. Update bodies are checked against the official OpenAPI."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from instore_refund.plan import (
    Refused,
    ReturnLine,
    TenderRefund,
    plan_refunded_marks,
    plan_refunds,
    plan_returns,
    return_item_key,
)
from tests.conftest import load_example
from tests.contract.openapi_contract import validate_request


def _order(
    order_id: str = "o1",
    lines: tuple[tuple[str, int], ...] = (("ol1", 2), ("ol2", 1)),
    returned: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    order = copy.deepcopy(load_example("order.example.json"))
    order.update(
        id=order_id,
        version=3,
        lineItems=[{"id": i, "quantity": q} for i, q in lines],
        returnInfo=[{"items": returned}] if returned else [],
    )
    return order


def _payment(payment_id: str = "p1", captured: int = 5000, refunds: list[tuple[str, int]] = ()) -> dict[str, Any]:
    payment = copy.deepcopy(load_example("payment.example.json"))
    payment.update(id=payment_id, version=2)
    payment["amountPlanned"]["currencyCode"] = "EUR"
    payment["transactions"] = [
        {"id": "t0", "type": "Charge", "state": "Success", "amount": {"currencyCode": "EUR", "centAmount": captured}}
    ]
    payment["transactions"] += [
        {
            "id": f"t-{rid}",
            "type": "Refund",
            "state": "Success",
            "interactionId": rid,
            "amount": {"currencyCode": "EUR", "centAmount": cents},
        }
        for rid, cents in refunds
    ]
    return payment


def _line(line_id: str, order_line: str = "ol1", qty: int = 1, order_ref: str = "o1") -> ReturnLine:
    return ReturnLine(line_id=line_id, order_ref=order_ref, order_line_id=order_line, quantity=qty, comment="too small")


def test_a_full_return_and_its_refund() -> None:
    (order_update,) = plan_returns([_line("r1", "ol1", 2), _line("r2", "ol2", 1)], {"o1": _order()})
    assert order_update.resource_id == "o1" and order_update.version == 3
    (add,) = order_update.actions
    assert add == {
        "action": "addReturnInfo",
        "items": [
            {"quantity": 2, "shipmentState": "Returned", "key": "ret-r1", "lineItemId": "ol1", "comment": "too small"},
            {"quantity": 1, "shipmentState": "Returned", "key": "ret-r2", "lineItemId": "ol2", "comment": "too small"},
        ],
    }
    recorded = _order(returned=[{**item, "paymentState": "Initial"} for item in add["items"]])
    marks = plan_refunded_marks([_line("r1", "ol1", 2), _line("r2", "ol2", 1)], recorded)
    assert marks is not None and marks.actions == [
        {"action": "setReturnPaymentState", "returnItemKey": k, "paymentState": "Refunded"} for k in ("ret-r1", "ret-r2")
    ]
    (payment_update,) = plan_refunds([TenderRefund("refund-1", "p1", 5000, "EUR")], {"p1": _payment()})
    assert payment_update.actions == [
        {
            "action": "addTransaction",
            "transaction": {
                "type": "Refund",
                "state": "Success",
                "interactionId": "refund-1",
                "amount": {"currencyCode": "EUR", "centAmount": 5000},
            },
        }
    ]
    validate_request("POST", "http://x/instore-demo/orders/o1", order_update.body())
    validate_request("POST", "http://x/instore-demo/orders/o1", marks.body())
    validate_request("POST", "http://x/instore-demo/payments/p1", payment_update.body())


def test_a_replayed_refund_writes_nothing() -> None:
    order = _order(
        returned=[{"key": "ret-r1", "lineItemId": "ol1", "quantity": 2, "shipmentState": "Returned", "paymentState": "Refunded"}]
    )
    assert plan_returns([_line("r1", "ol1", 2)], {"o1": order}) == []
    assert plan_refunded_marks([_line("r1", "ol1", 2)], order) is None
    assert plan_refunds([TenderRefund("refund-1", "p1", 5000, "EUR")], {"p1": _payment(refunds=[("refund-1", 5000)])}) == []


def test_half_written_before_a_crash_is_completed_not_repeated() -> None:
    order = _order(
        returned=[{"key": "ret-r1", "lineItemId": "ol1", "quantity": 1, "shipmentState": "Returned", "paymentState": "Initial"}]
    )
    (update,) = plan_returns([_line("r1", "ol1", 1), _line("r2", "ol2", 1)], {"o1": order})
    assert update.actions == [
        {
            "action": "addReturnInfo",
            "items": [{"quantity": 1, "shipmentState": "Returned", "key": "ret-r2", "lineItemId": "ol2", "comment": "too small"}],
        }
    ]
    marks = plan_refunded_marks([_line("r1", "ol1", 1), _line("r2", "ol2", 1)], order)
    assert marks is not None and [a["returnItemKey"] for a in marks.actions] == ["ret-r1"]  # ret-r2 not there yet


def test_a_partial_return_over_two_orders_and_a_split_tender() -> None:
    updates = plan_returns(
        [_line("r1", "ol1", 1, "o1"), _line("r2", "ol9", 1, "o2")], {"o1": _order(), "o2": _order("o2", (("ol9", 3),))}
    )
    assert [u.resource_id for u in updates] == ["o1", "o2"]
    refunds = plan_refunds(
        [TenderRefund("rf-card", "card", 1500, "EUR"), TenderRefund("rf-cash", "cash", 500, "EUR")],
        {"card": _payment("card", 2000), "cash": _payment("cash", 500)},
    )
    assert [(u.resource_id, u.actions[0]["transaction"]["interactionId"]) for u in refunds] == [
        ("card", "rf-card"),
        ("cash", "rf-cash"),
    ]


@pytest.mark.parametrize(
    ("lines", "reason"),
    [
        ([_line("r1", "ol1", 3)], "return-quantity-exceeded"),
        ([_line("r1", "ol1", 1), _line("r2", "ol1", 2)], "return-quantity-exceeded"),
        ([_line("r1", "nope", 1)], "purchase-line-not-found"),
        ([_line("r1", "ol1", 0)], "bad-quantity"),
    ],
)
def test_impossible_returns_are_refused_before_anything_is_written(lines: list[ReturnLine], reason: str) -> None:
    with pytest.raises(Refused) as info:
        plan_returns(lines, {"o1": _order()})
    assert info.value.reason == reason


def test_earlier_returns_count_against_what_is_left() -> None:
    order = _order(returned=[{"key": "ret-old", "lineItemId": "ol1", "quantity": 2, "shipmentState": "Returned"}])
    with pytest.raises(Refused):
        plan_returns([_line("r1", "ol1", 1)], {"o1": order})


@pytest.mark.parametrize(
    ("refunds", "reason"),
    [
        ([TenderRefund("rf", "p1", 5001, "EUR")], "refund-exceeds-capture"),
        ([TenderRefund("rf1", "p1", 3000, "EUR"), TenderRefund("rf2", "p1", 2001, "EUR")], "refund-exceeds-capture"),
        ([TenderRefund("rf", "p1", 100, "USD")], "refund-currency-mismatch"),
        ([TenderRefund("rf", "p1", 0, "EUR")], "bad-amount"),
        ([TenderRefund("rf", "p9", 100, "EUR")], "payment-not-found"),
    ],
)
def test_impossible_refunds_are_refused(refunds: list[TenderRefund], reason: str) -> None:
    with pytest.raises(Refused) as info:
        plan_refunds(refunds, {"p1": _payment()})
    assert info.value.reason == reason


def test_earlier_refunds_count_against_the_capture() -> None:
    with pytest.raises(Refused):
        plan_refunds([TenderRefund("rf2", "p1", 1, "EUR")], {"p1": _payment(refunds=[("rf1", 5000)])})


def test_return_item_keys_are_valid_commercetools_keys() -> None:
    import re

    assert re.fullmatch(r"[A-Za-z0-9_-]{2,256}", return_item_key("1c2b3a4d-0000-4000-8000-000000000000"))
