"""Counting what a scenario left behind: Orders per cart, events per Order, return items per
returned line, Refund transactions per tender, dead letters by reason.

Everything is read from the source of truth — the mock's Orders and Payments, the topics from
the beginning — never from the services' logs.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from bench.refund_flow import MUG, _prepare_returns
from bench.webhook_to_order import _commerce, _prepare_sales
from faults.stack import DLQ, PAYMENTS, REFUNDS, WEBHOOKS, Stack, all_orders, header, read_topic
from instore_devfakes.instore_samples import payment_webhook, refund_webhook
from tests.support.processes import CtMock

RETURN_KEY_PREFIX = "ret-"  # instore_refund.plan.return_item_key: "ret-<return cart line id>"


@dataclass
class Return:
    """One prepared return: a return cart for one mug of an Order's line, refunded to its card."""

    cart_id: str
    order_id: str
    purchase_line_id: str
    return_line_id: str
    payment_id: str
    refund_id: str = field(default_factory=lambda: f"rf-{uuid.uuid4().hex[:12]}")
    webhook_id: str = field(default_factory=lambda: f"evt-{uuid.uuid4().hex}")

    def body(self) -> bytes:
        return refund_webhook(self.cart_id, [(self.refund_id, self.payment_id, MUG, "EUR")], self.webhook_id)


@dataclass
class Sale:
    """One prepared paid sale and the webhook that completes it."""

    cart_id: str
    webhook_id: str = field(default_factory=lambda: f"evt-{uuid.uuid4().hex}")

    def body(self, ref: str | None = None, webhook_id: str | None = None) -> bytes:
        return payment_webhook(ref or self.cart_id, webhook_id or self.webhook_id)


async def prepare_sales(mock: CtMock, n: int) -> list[Sale]:
    """``n`` paid sales (``bench.webhook_to_order``: 2 × SKU-MUG, a card Payment charged for the total)."""
    return [Sale(cid) for cid in await _prepare_sales(mock, n)] if n else []


async def prepare_returns(mock: CtMock, n: int) -> list[Return]:
    """``n`` Orders and a return cart of one mug each (``bench.refund_flow``)."""
    if not n:
        return []
    prepared = await _prepare_returns(mock, n)
    async with _commerce(mock) as c:
        carts = await asyncio.gather(*(c.get_cart(cid) for cid in prepared))
    out = []
    for cart in (r.json() for r in carts):
        line = cart["lineItems"][0]
        fields = line["custom"]["fields"]
        out.append(Return(cart["id"], fields["purchaseOrderId"], fields["purchaseLineItemId"], line["id"], prepared[cart["id"]]))
    return out


@dataclass
class Tally:
    """What is there now for a set of sales and returns."""

    orders_per_cart: dict[str, int] = field(default_factory=dict)
    events_per_order: dict[str, int] = field(default_factory=dict)
    items_per_line: dict[str, int] = field(default_factory=dict)
    refunds_per_tender: dict[str, int] = field(default_factory=dict)
    refund_events: dict[str, int] = field(default_factory=dict)
    dead_letters: Counter[str] = field(default_factory=Counter)
    webhooks_in_kafka: Counter[str] = field(default_factory=Counter)
    records_read: Counter[str] = field(default_factory=Counter)
    """Records read per topic (all of them, not only this scenario's)."""
    event_ids: dict[str, set[str]] = field(default_factory=dict)
    """Distinct ``eventId`` s per Order (payments) and per return/Order (refunds): a repeat with
    the same id can be deduplicated downstream."""
    unfinished: set[str] = field(default_factory=set)
    """Webhook ids of the sales and returns not complete yet."""
    dead_lettered: set[str] = field(default_factory=set)
    """Webhook ids found on the dead-letter topic."""

    def settled(self) -> bool:
        """Every sale and return is complete, or its webhook was dead-lettered (nothing more will happen)."""
        return self.unfinished <= self.dead_lettered

    def complete(self) -> bool:
        """Every sale has an Order with an event, every return its item, refund and event."""
        return all(
            v >= 1
            for d in (
                self.orders_per_cart,
                self.events_per_order,
                self.items_per_line,
                self.refunds_per_tender,
                self.refund_events,
            )
            for v in d.values()
        )

    def lost(self) -> int:
        """Sales without an Order, Orders without their event, returns without item, refund or event."""
        return sum(
            1
            for d in (
                self.orders_per_cart,
                self.events_per_order,
                self.items_per_line,
                self.refunds_per_tender,
                self.refund_events,
            )
            for v in d.values()
            if v == 0
        )

    def duplicated(self) -> int:
        """Copies beyond the one each count must be."""
        return sum(
            max(0, v - 1)
            for d in (
                self.orders_per_cart,
                self.events_per_order,
                self.items_per_line,
                self.refunds_per_tender,
                self.refund_events,
            )
            for v in d.values()
        )


async def tally(stack: Stack, sales: list[Sale], returns: list[Return], webhook_ids: set[str] | None = None) -> Tally:
    """Count, for ``sales`` and ``returns``, what the mock and the topics hold now.

    ``webhook_ids``: the webhooks to look for on ``instore.webhooks.v1`` and its dead-letter topic
    (default: the sales' and returns' own).
    """
    t = Tally()
    bootstrap = stack.kafka.bootstrap_servers
    ids = webhook_ids if webhook_ids is not None else {s.webhook_id for s in sales} | {r.webhook_id for r in returns}
    orders = await all_orders(stack.mock)
    if sales:
        carts = {s.cart_id for s in sales}
        t.orders_per_cart = {cid: 0 for cid in carts}
        mine: set[str] = set()
        for order in orders:
            cid = (order.get("cart") or {}).get("id")
            if cid in carts:
                t.orders_per_cart[cid] += 1
                mine.add(order["id"])
        t.events_per_order = {oid: 0 for oid in mine}
        for record in await _read(t, bootstrap, PAYMENTS):
            event = json.loads(record.value)
            oid = event.get("orderId")
            if oid in mine:
                t.events_per_order[oid] += 1
                t.event_ids.setdefault(oid, set()).add(str(event.get("eventId")))
        announced = {o["cart"]["id"] for o in orders if o["id"] in mine and t.events_per_order[o["id"]]}
        t.unfinished |= {s.webhook_id for s in sales if s.cart_id not in announced}
    if returns:
        by_id = {o["id"]: o for o in orders}
        for r in returns:
            order = by_id.get(r.order_id, {})
            items = [i for info in order.get("returnInfo") or [] for i in info.get("items", [])]
            t.items_per_line[r.return_line_id] = sum(1 for i in items if i.get("key") == RETURN_KEY_PREFIX + r.return_line_id)
            payment: dict[str, Any] = next(
                (
                    p["obj"]
                    for p in (order.get("paymentInfo") or {}).get("payments", [])
                    if p["id"] == r.payment_id and "obj" in p
                ),
                {},
            )
            t.refunds_per_tender[r.refund_id] = sum(
                1 for tr in payment.get("transactions", []) if tr["type"] == "Refund" and tr.get("interactionId") == r.refund_id
            )
        wanted = {(r.cart_id, r.order_id) for r in returns}
        t.refund_events = {f"{c}/{o}": 0 for c, o in wanted}
        for record in await _read(t, bootstrap, REFUNDS):
            event = json.loads(record.value)
            key = (event.get("returnCartId"), event.get("orderId"))
            if key in wanted:
                t.refund_events[f"{key[0]}/{key[1]}"] += 1
                t.event_ids.setdefault(f"{key[0]}/{key[1]}", set()).add(str(event.get("eventId")))
        t.unfinished |= {
            r.webhook_id
            for r in returns
            if not (
                t.items_per_line[r.return_line_id]
                and t.refunds_per_tender[r.refund_id]
                and t.refund_events[f"{r.cart_id}/{r.order_id}"]
            )
        }
    for record in await _read(t, bootstrap, DLQ):
        wid = header(record, "webhook-id")
        if wid in ids:
            t.dead_letters[header(record, "dlq-error-reason") or "?"] += 1
            t.dead_lettered.add(wid)
    for record in await _read(t, bootstrap, WEBHOOKS):
        wid = header(record, "webhook-id")
        if wid in ids:
            t.webhooks_in_kafka[wid] += 1
    return t


async def _read(t: Tally, bootstrap: str, topic: str) -> list[Any]:
    records = await read_topic(bootstrap, topic)
    t.records_read[topic] += len(records)
    return records


async def converge(
    stack: Stack,
    sales: list[Sale],
    returns: list[Return],
    within: float,
    settle: float = 3.0,
    webhook_ids: set[str] | None = None,
    done: Callable[[Tally], bool] | None = None,
) -> tuple[Tally, bool]:
    """Poll :func:`tally` until everything is settled (complete or dead-lettered; or ``done(tally)``) or ``within`` s pass;
    then wait ``settle`` s more (a late duplicate would show then) and count again.
    Returns the final tally and whether it converged in time."""
    deadline = time.monotonic() + within
    finished = done or Tally.settled
    converged = False
    while time.monotonic() < deadline:
        try:
            if finished(await tally(stack, sales, returns, webhook_ids)):
                converged = True
                break
        except Exception:
            pass
        await asyncio.sleep(1.0)
    await asyncio.sleep(settle)
    return await tally(stack, sales, returns, webhook_ids), converged


async def wait_for(condition: Callable[[], Awaitable[bool]], within: float, interval: float = 0.5) -> bool:
    """Poll an async condition until true or ``within`` s; True when it became true."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            if await condition():
                return True
        except Exception:
            pass
        await asyncio.sleep(interval)
    return False
