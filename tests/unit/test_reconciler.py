"""The reconciler's run (instore_order_finalization.reconciler.run) against a scripted query port.

What the predicates select is Composable Commerce's job (tests/integration/test_reconciler_queries.py runs
them against the mock); here: the window and the predicates asked for, id-ordered paging, which cart or
Order becomes which finding, what is handed and what only reported, and that a dry run hands nothing.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Sequence
from typing import Any

import msgspec
import pytest

from instore_order_finalization.reconciler.run import Finding, pages, reconcile
from instore_order_finalization.reconciler.settings import ReconcilerSettings
from instore_order_finalization.reconciler.trigger import trigger_body
from instore_shared.announcements import CONTAINER
from instore_shared.commercetools.client import ApiResponse
from instore_shared.commercetools.errors import NotFound
from tests.fakes.clock import FakeClock

_SERIAL = itertools.count()
NOW = 1_800_000_000.0  # 2027-01-15T08:00:00Z


def _payment(cents: int, kind: str = "Charge", state: str = "Success", currency: str = "EUR") -> dict[str, Any]:
    return {
        "id": f"pay-{kind}-{cents}-{state}-{currency}-{next(_SERIAL)}",
        "amountPlanned": {"currencyCode": currency, "centAmount": cents},
        "transactions": [{"id": "t1", "type": kind, "state": state, "amount": {"currencyCode": currency, "centAmount": cents}}],
    }


def _cart(cart_id: str, total: int, *payments: dict[str, Any], lines: int = 1) -> dict[str, Any]:
    return {
        "id": cart_id,
        "version": 3,
        "cartState": "Active",
        "lastModifiedAt": "2027-01-15T07:00:00.000Z",
        "totalPrice": {"currencyCode": "EUR", "centAmount": total},
        "lineItems": [{"id": f"li-{i}"} for i in range(lines)],
        "paymentInfo": {"payments": [{"typeId": "payment", "id": p["id"], "obj": p} for p in payments]},
        "custom": {"fields": {"locationId": "store-1"}},
    }


def _order(order_id: str, cart_id: str | None, *payments: dict[str, Any], returns: int = 0) -> dict[str, Any]:
    order: dict[str, Any] = {
        "id": order_id,
        "version": 1,
        "orderNumber": f"no-{order_id}",
        "totalPrice": {"currencyCode": "EUR", "centAmount": 2500},
        "paymentInfo": {"payments": [{"typeId": "payment", "id": p["id"], "obj": p} for p in payments]},
        "returnInfo": [{"items": [{"id": f"ri-{i}", "lineItemId": "li-0", "quantity": 1} for i in range(returns)]}]
        if returns
        else [],
    }
    if cart_id is not None:
        order["cart"] = {"typeId": "cart", "id": cart_id}
    return order


class ScriptedCommerce:
    """Answers queries from in-memory lists, paging by the ``id > "…"`` predicate the way the API does, and
    ``id in (…)`` / ``key in (…)`` lookups; records every call. Carts and Orders are answered without their
    Payments' ``obj`` (as the API does without ``expand``): the Payments are answered by the payments query.
    Only the paging and ``in`` predicates are evaluated: the others are recorded, not applied."""

    def __init__(
        self,
        carts: list[dict[str, Any]],
        orders: list[dict[str, Any]],
        markers: dict[str, str],
        *,
        deleted_payments: frozenset[str] = frozenset(),
        deleted_carts: frozenset[str] = frozenset(),
        orders_by_number: dict[str, dict[str, Any]] | None = None,
    ) -> None:
        self.payments: dict[str, dict[str, Any]] = {}
        for row in [*carts, *orders]:
            for ref in (row.get("paymentInfo") or {}).get("payments") or []:
                obj = ref.pop("obj", None)
                if obj is not None and ref["id"] not in deleted_payments:
                    self.payments[ref["id"]] = obj
        self.data = {"carts": sorted(carts, key=lambda r: r["id"]), "orders": sorted(orders, key=lambda r: r["id"])}
        self.markers = markers  # order id -> marker state
        self.deleted_carts = deleted_carts
        self.orders_by_number = orders_by_number or {}
        self.calls: list[tuple[str, list[str], str, int, tuple[str, ...]]] = []

    async def query(
        self, path: str, where: Sequence[str] = (), *, sort: str = "id asc", limit: int = 100, expand: tuple[str, ...] = ()
    ) -> list[dict[str, Any]]:
        self.calls.append((path, list(where), sort, limit, expand))
        if path == f"custom-objects/{CONTAINER}":
            keys = re.findall(r'"([^"]+)"', where[0])
            return [
                {"key": k, "value": {"state": state}}
                for k in keys
                for oid, state in self.markers.items()
                if k == f"payments-completed.{oid}"
            ]
        if path == "payments":
            ids = re.findall(r'"([^"]+)"', where[0])
            return [self.payments[i] for i in ids if i in self.payments][:limit]
        cursor = [m.group(1) for m in (re.fullmatch(r'id > "(.+)"', w) for w in where) if m]
        after = cursor[0] if cursor else None
        rows = [r for r in self.data[path] if after is None or r["id"] > after]
        return msgspec.json.decode(msgspec.json.encode(rows[:limit]))

    async def get_cart(self, cart_id: str, expand: tuple[str, ...] = ()) -> ApiResponse:
        self.calls.append(("get_cart", [cart_id], "", 0, ()))
        if cart_id in self.deleted_carts:
            raise NotFound(404, "ResourceNotFound", cart_id)
        return ApiResponse(200, msgspec.json.encode({"id": cart_id, "version": 1}))

    async def get_order_by_order_number(self, order_number: str, expand: tuple[str, ...] = ()) -> ApiResponse:
        self.calls.append(("get_order_by_order_number", [order_number], "", 0, ()))
        if order_number not in self.orders_by_number:
            raise NotFound(404, "ResourceNotFound", order_number)
        return ApiResponse(200, msgspec.json.encode(self.orders_by_number[order_number]))


class RecordingTrigger:
    def __init__(self) -> None:
        self.handed: list[tuple[str, str]] = []

    async def hand(self, cart_id: str, reason: str) -> None:
        self.handed.append((cart_id, reason))


def _settings(**overrides: Any) -> ReconcilerSettings:
    return ReconcilerSettings(**{"reconciler_grace_seconds": 600, "reconciler_lookback_hours": 24, **overrides})


async def _run(commerce: ScriptedCommerce, dry_run: bool = False, **overrides: Any) -> tuple[Any, RecordingTrigger]:
    trigger = RecordingTrigger()
    report = await reconcile(commerce, trigger, settings=_settings(**overrides), clock=FakeClock(NOW), dry_run=dry_run)
    return report, trigger


async def test_a_paid_cart_is_handed_an_unpaid_or_empty_or_partly_paid_one_is_not() -> None:
    carts = [
        _cart("c-paid", 2500, _payment(2500)),
        _cart("c-split", 2500, _payment(1000), _payment(1500)),
        _cart("c-short", 2500, _payment(2499)),
        _cart("c-failed", 2500, _payment(2500, state="Failure")),
        _cart("c-pending", 2500, _payment(2500, state="Pending")),
        _cart("c-other-currency", 2500, _payment(2500, currency="USD")),
        _cart("c-auth-only", 2500, _payment(2500, kind="Authorization")),
        _cart("c-empty", 0, lines=0),
    ]
    report, trigger = await _run(ScriptedCommerce(carts, [], {}))
    assert trigger.handed == [("c-paid", "unordered-cart"), ("c-split", "unordered-cart")]
    assert [(f.cart_id, f.action, f.total, f.paid) for f in report.findings] == [
        ("c-paid", "handed", 2500, 2500),
        ("c-split", "handed", 2500, 2500),
    ]
    assert report.scanned == {"carts": 8, "orders": 0}


async def test_the_predicates_name_the_window_the_environment_and_never_offsets() -> None:
    commerce = ScriptedCommerce([], [], {})
    report, _ = await _run(commerce, instore_currency="CHF", instore_field_location_id="storeLocation")
    carts_call, orders_call = (next(c for c in commerce.calls if c[0] == name) for name in ("carts", "orders"))
    # now 08:00Z, grace 600 s, lookback 24 h
    assert set(carts_call[1]) == {
        'cartState="Active"',
        "paymentInfo is defined",
        'lastModifiedAt >= "2027-01-14T08:00:00.000Z"',
        'lastModifiedAt <= "2027-01-15T07:50:00.000Z"',
        'totalPrice(currencyCode="CHF")',
        "custom(fields(storeLocation is defined))",
    }
    assert set(orders_call[1]) == {
        'createdAt >= "2027-01-14T08:00:00.000Z"',
        'createdAt <= "2027-01-15T07:50:00.000Z"',
        'totalPrice(currencyCode="CHF")',
        "custom(fields(storeLocation is defined))",
    }
    for call in (carts_call, orders_call):
        assert call[2] == "id asc" and call[4] == ()  # no expand: Payments are read by id
    assert (report.window_from, report.window_to) == ("2027-01-14T08:00:00.000Z", "2027-01-15T07:50:00.000Z")


async def test_paging_follows_the_last_id_until_a_short_page() -> None:
    carts = [_cart(f"c-{i:03d}", 100, _payment(100)) for i in range(7)]
    commerce = ScriptedCommerce(carts, [], {})
    report, trigger = await _run(commerce, reconciler_page_size=3)
    cart_calls = [c for c in commerce.calls if c[0] == "carts"]
    assert [next((w for w in c[1] if w.startswith("id >")), None) for c in cart_calls] == [
        None,
        'id > "c-002"',
        'id > "c-005"',
    ]
    assert all(c[3] == 3 for c in cart_calls)
    assert [cart for cart, _ in trigger.handed] == [f"c-{i:03d}" for i in range(7)]
    assert report.pages["carts"] == 3


async def test_a_full_last_page_costs_one_empty_query_and_nothing_more() -> None:
    commerce = ScriptedCommerce([_cart(f"c-{i}", 100, _payment(100)) for i in range(4)], [], {})
    report, _ = await _run(commerce, reconciler_page_size=2)
    assert len([c for c in commerce.calls if c[0] == "carts"]) == 3
    assert report.pages["carts"] == 2


async def test_orders_whose_marker_is_not_published_are_handed_by_their_cart() -> None:
    orders = [
        _order("o-published", "c-1", _payment(2500)),
        _order("o-claimed", "c-2", _payment(2500)),
        _order("o-missing", "c-3", _payment(2500)),
        _order("o-cartless", None, _payment(2500)),
    ]
    commerce = ScriptedCommerce([], orders, {"o-published": "published", "o-claimed": "claimed"})
    report, trigger = await _run(commerce)
    assert sorted(trigger.handed) == [("c-2", "unannounced-order"), ("c-3", "unannounced-order")]
    assert {(f.order_id, f.action) for f in report.findings} == {
        ("o-claimed", "handed"),
        ("o-missing", "handed"),
        ("o-cartless", "reported"),
    }
    # one marker query for the page, naming each Order's marker key
    marker_calls = [c for c in commerce.calls if c[0].startswith("custom-objects/")]
    assert len(marker_calls) == 1 and "payments-completed.o-missing" in marker_calls[0][1][0]


async def test_a_refund_without_a_return_is_reported_never_handed() -> None:
    refunded = {
        "id": "pay-r",
        "amountPlanned": {"currencyCode": "EUR", "centAmount": 2500},
        "transactions": [
            {"id": "t1", "type": "Charge", "state": "Success", "amount": {"currencyCode": "EUR", "centAmount": 2500}},
            {"id": "t2", "type": "Refund", "state": "Success", "amount": {"currencyCode": "EUR", "centAmount": 700}},
            {"id": "t3", "type": "Refund", "state": "Failure", "amount": {"currencyCode": "EUR", "centAmount": 900}},
        ],
    }
    orders = [_order("o-no-return", "c-1", refunded), _order("o-returned", "c-2", refunded, returns=1)]
    commerce = ScriptedCommerce([], orders, {"o-no-return": "published", "o-returned": "published"})
    report, trigger = await _run(commerce)
    assert trigger.handed == []
    assert [(f.kind, f.action, f.order_id, f.refunded) for f in report.findings] == [
        ("refund-without-return", "reported", "o-no-return", 700)
    ]


async def test_a_dry_run_hands_nothing_and_lists_what_it_would() -> None:
    commerce = ScriptedCommerce([_cart("c-paid", 2500, _payment(2500))], [_order("o-1", "c-9", _payment(2500))], {})
    seen: list[Finding] = []
    trigger = RecordingTrigger()
    report = await reconcile(commerce, trigger, settings=_settings(), clock=FakeClock(NOW), dry_run=True, on_finding=seen.append)
    assert trigger.handed == []
    assert [(f.kind, f.action) for f in seen] == [("unordered-cart", "would-hand"), ("unannounced-order", "would-hand")]
    assert report.findings == seen
    assert seen[0].line().startswith("would-hand unordered-cart") and "cart=c-paid" in seen[0].line()


async def test_with_instore_order_creation_an_unordered_paid_cart_is_reported_not_handed() -> None:
    commerce = ScriptedCommerce([_cart("c-paid", 2500, _payment(2500))], [_order("o-1", "c-9", _payment(2500))], {})
    report, trigger = await _run(commerce, order_creation="instore")
    assert trigger.handed == [("c-9", "unannounced-order")]
    assert [(f.kind, f.action) for f in report.findings] == [("unordered-cart", "reported"), ("unannounced-order", "handed")]


async def test_a_trigger_failure_stops_the_run() -> None:
    class Failing(RecordingTrigger):
        async def hand(self, cart_id: str, reason: str) -> None:
            raise ConnectionError("kafka down")

    commerce = ScriptedCommerce([_cart("c-1", 100, _payment(100)), _cart("c-2", 100, _payment(100))], [], {})
    with pytest.raises(ConnectionError):
        await reconcile(commerce, Failing(), settings=_settings(), clock=FakeClock(NOW))


async def test_a_cart_whose_payments_are_not_expanded_is_skipped_not_fatal() -> None:
    unexpanded = _cart("c-1", 100)
    unexpanded["paymentInfo"] = {"payments": [{"typeId": "payment", "id": "p-gone"}]}
    report, trigger = await _run(ScriptedCommerce([unexpanded, _cart("c-2", 100, _payment(100))], [], {}))
    assert trigger.handed == [("c-2", "unordered-cart")]
    assert report.scanned["carts"] == 2


async def test_an_id_that_cannot_be_paged_after_is_refused() -> None:
    commerce = ScriptedCommerce([_cart('c"1', 100, _payment(100)), _cart("c-2", 100, _payment(100))], [], {})
    with pytest.raises(ValueError, match="cannot be paged"):
        async for _ in pages(commerce, "carts", [], 1):
            pass


async def test_a_sale_charged_then_refunded_in_full_is_not_handed() -> None:
    voided = _payment(2500)
    voided["transactions"].append({**voided["transactions"][0], "id": "t-r", "type": "Refund"})
    report, trigger = await _run(ScriptedCommerce([_cart("c-voided", 2500, voided)], [], {}))
    assert trigger.handed == [] and report.findings == []


async def test_a_dangling_payment_costs_its_cart_only() -> None:
    gone = _payment(2500)
    commerce = ScriptedCommerce(
        [_cart("c-dangling", 2500, gone), _cart("c-fine", 2500, _payment(2500))], [], {}, deleted_payments=frozenset({gone["id"]})
    )
    report, trigger = await _run(commerce)
    assert trigger.handed == [("c-fine", "unordered-cart")]
    assert report.scanned["carts"] == 2


async def test_a_paid_cart_whose_order_number_another_carts_order_holds_is_reported_not_handed() -> None:
    cart = _cart("c-1", 2500, _payment(2500))
    cart["custom"]["fields"]["orderNumber"] = "store-1-000042"
    own = _cart("c-2", 2500, _payment(2500))
    own["custom"]["fields"]["orderNumber"] = "store-1-000043"
    taken = {"id": "o-9", "version": 1, "orderNumber": "store-1-000042", "cart": {"typeId": "cart", "id": "c-9"}}
    mine = {"id": "o-2", "version": 1, "orderNumber": "store-1-000043", "cart": {"typeId": "cart", "id": "c-2"}}
    commerce = ScriptedCommerce([cart, own], [], {}, orders_by_number={"store-1-000042": taken, "store-1-000043": mine})
    report, trigger = await _run(commerce)
    assert trigger.handed == [("c-2", "unordered-cart")]  # its own Order: order-finalization announces it
    (reported,) = [f for f in report.findings if f.action == "reported"]
    assert reported.cart_id == "c-1" and "o-9" in reported.detail and "c-9" in reported.detail


async def test_an_unannounced_order_whose_cart_was_deleted_is_reported_not_handed() -> None:
    commerce = ScriptedCommerce(
        [],
        [_order("o-1", "c-gone", _payment(2500)), _order("o-2", "c-here", _payment(2500))],
        {},
        deleted_carts=frozenset({"c-gone"}),
    )
    report, trigger = await _run(commerce)
    assert trigger.handed == [("c-here", "unannounced-order")]
    assert [(f.order_id, f.action) for f in report.findings] == [("o-1", "reported"), ("o-2", "handed")]
    assert "deleted" in report.findings[0].detail


async def test_lookups_by_id_and_key_are_batched_at_the_maximum_page_size() -> None:
    orders = [_order(f"o-{i:03d}", f"c-{i:03d}", _payment(2500)) for i in range(120)]
    commerce = ScriptedCommerce([], orders, {f"o-{i:03d}": "published" for i in range(120)})
    report, trigger = await _run(commerce, reconciler_page_size=500)
    marker_calls = [c for c in commerce.calls if c[0].startswith("custom-objects/")]
    payment_calls = [c for c in commerce.calls if c[0] == "payments"]
    assert [c[3] for c in marker_calls] == [50, 50, 20] and [c[3] for c in payment_calls] == [50, 50, 20]
    assert all(len(c[1][0]) < 4000 for c in marker_calls + payment_calls)
    assert trigger.handed == [] and report.pages["markers"] == 3


def test_the_trigger_is_a_payment_webhook_order_finalization_reads() -> None:
    from instore_order_finalization.finalize import parse_webhook

    webhook_id, body = trigger_body("cart-1", "unordered-cart")
    parsed = parse_webhook(body)
    assert parsed is not None and parsed.cart_ref() == "cart-1" and parsed.id == webhook_id
    assert webhook_id == "reconciliation:unordered-cart:cart-1"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("reconciler_page_size", 501),
        ("reconciler_page_size", 0),
        ("instore_field_location_id", "a) or (b"),
        ("instore_currency", 'EU"R'),
        ("reconciler_grace_seconds", -1),
        ("reconciler_lookback_hours", 0.1),  # 360 s, not beyond the default grace of 600 s: an empty window
    ],
)
def test_settings_that_would_break_a_predicate_or_the_api_are_refused(name: str, value: Any) -> None:
    with pytest.raises(ValueError):
        ReconcilerSettings(**{name: value})
