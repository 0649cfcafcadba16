"""One reconciliation run: find what a lost webhook left undone, hand it to order-finalization, report the rest.

Webhooks can be lost before they reach us (InStore gave up, a wrong URL, a secret rotated on one
side). A run looks, within a window (``RECONCILER_LOOKBACK_HOURS`` back, up to
``RECONCILER_GRACE_SECONDS`` ago), through this InStore environment's carts and Orders — those
in ``INSTORE_CURRENCY`` that carry the InStore location Custom Field — with query predicates and
id-ordered paging (https://docs.commercetools.com/api/general-concepts#paging: ``sort=id asc``,
``where id > <last id>``, ``withTotal=false``; never offsets, never the whole project):

- **unordered-cart**: an ``Active`` cart with line items whose successful Charges cover its total
  (:func:`instore_order_finalization.rules.coverage`, the rule order-finalization applies) — paid,
  but its payment webhook never made an Order;
- **unannounced-order**: an Order whose ``commerce.payments.completed.v1`` marker
  (:mod:`instore_shared.announcements`) is missing or not ``published``;
- **refund-without-return** (reported only, never acted on): an Order whose Payments carry
  successful ``Refund`` transactions while the Order has no return item.

The first two are *handed* to order-finalization: a synthetic payment webhook for the cart on
``instore.webhooks.v1`` (:class:`Trigger`; header ``origin: reconciliation``). The reconciler
itself writes nothing to Composable Commerce: the exactly-once rules (one Order per cart, one
event per Order) stay in order-finalization, so a trigger racing a late real webhook, or a second
run, changes nothing twice. With ``ORDER_CREATION=instore`` an unordered paid cart is InStore's to
order: it is reported, not handed. ``dry_run`` hands nothing and lists what it would do.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import msgspec

from instore_order_finalization import rules
from instore_order_finalization.model import Cart, order_decoder
from instore_order_finalization.reconciler.settings import ReconcilerSettings
from instore_order_finalization.service import marker_key
from instore_shared.announcements import CONTAINER
from instore_shared.clock import Clock
from instore_shared.commercetools.client import ApiResponse
from instore_shared.commercetools.errors import NotFound
from instore_shared.logging import get_logger

log = get_logger(__name__)

PROGRESS_EVERY_PAGES = 10
"""A progress line every this many pages of one query (a first page is always logged at debug)."""

_ID = re.compile(r"[A-Za-z0-9_-]{1,256}")
IN_BATCH = 50
"""Ids (or marker keys) per ``in (…)`` predicate: ~3 KB of URL, well inside what HTTP servers take (a page of
500 in one predicate is ~30 KB: refused with 431 by common servers)."""


class QueryCommerce(Protocol):
    """The read-only Composable Commerce port (``CommercetoolsClient`` implements it)."""

    async def query(
        self, path: str, where: Sequence[str] = (), *, sort: str = "id asc", limit: int = 100, expand: tuple[str, ...] = ()
    ) -> list[dict[str, Any]]: ...

    async def get_cart(self, cart_id: str, expand: tuple[str, ...] = ()) -> ApiResponse:
        """Raises ``NotFound``."""
        ...

    async def get_order_by_order_number(self, order_number: str, expand: tuple[str, ...] = ()) -> ApiResponse:
        """Raises ``NotFound``."""
        ...


class Trigger(Protocol):
    """Hands a cart to order-finalization (:class:`~instore_order_finalization.reconciler.trigger.KafkaTrigger`)."""

    async def hand(self, cart_id: str, reason: str) -> None:
        """Put a synthetic payment webhook for ``cart_id`` on the webhook topic; returns once Kafka acknowledged it.
        Raises on failure (the run stops: what was not handed is found again by the next run)."""
        ...


@dataclass(frozen=True, slots=True)
class Finding:
    """One thing a run found. ``kind``: unordered-cart | unannounced-order | refund-without-return;
    ``action``: handed | would-hand | reported; money in minor units of ``currency`` (ISO 4217)."""

    kind: str
    action: str
    cart_id: str | None
    order_id: str | None = None
    order_number: str | None = None
    currency: str = ""
    total: int | None = None
    paid: int | None = None
    refunded: int | None = None
    detail: str = ""

    def line(self) -> str:
        """One line for a terminal: ``<action> <kind> cart=… order=… …``."""
        parts = [f"{self.action:<10}", f"{self.kind:<21}"]
        for name, value in (("cart", self.cart_id), ("order", self.order_id), ("orderNumber", self.order_number)):
            if value:
                parts.append(f"{name}={value}")
        for name, cents in (("total", self.total), ("paid", self.paid), ("refunded", self.refunded)):
            if cents is not None:
                parts.append(f"{name}={cents} {self.currency}")
        if self.detail:
            parts.append(self.detail)
        return " ".join(parts)


@dataclass(slots=True)
class RunReport:
    """What one run did: pages read and records scanned per query, the findings, how long it took (seconds)."""

    dry_run: bool
    window_from: str
    window_to: str
    pages: dict[str, int] = field(default_factory=lambda: {"carts": 0, "orders": 0, "payments": 0, "markers": 0})
    scanned: dict[str, int] = field(default_factory=lambda: {"carts": 0, "orders": 0})
    findings: list[Finding] = field(default_factory=list)
    seconds: float = 0.0

    def count(self, kind: str, action: str | None = None) -> int:
        """How many findings of ``kind`` (and ``action``) the run made."""
        return sum(1 for f in self.findings if f.kind == kind and (action is None or f.action == action))


def _ts(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


async def pages(
    commerce: QueryCommerce, path: str, where: Sequence[str], page_size: int, expand: tuple[str, ...] = ()
) -> AsyncIterator[list[dict[str, Any]]]:
    """Every result of a query, a page at a time, in id order: each next page is ``id > "<last id of this one>"``.

    Ends after a page shorter than ``page_size``. Raises ``ValueError`` for a result id that could not be
    put in a predicate (Composable Commerce ids never have such characters).
    """
    last: str | None = None
    while True:
        predicates = [*where, f'id > "{last}"'] if last is not None else list(where)
        page = await commerce.query(path, predicates, sort="id asc", limit=page_size, expand=expand)
        if page:
            yield page
        if len(page) < page_size:
            return
        last = str(page[-1].get("id", ""))
        if not _ID.fullmatch(last):
            raise ValueError(f"{path}: a result id {last!r} cannot be paged after")


def _window(settings: ReconcilerSettings, now: datetime) -> tuple[str, str]:
    until = now - timedelta(seconds=settings.reconciler_grace_seconds)
    since = now - timedelta(hours=settings.reconciler_lookback_hours)
    return _ts(since), _ts(until)


def _instore(settings: ReconcilerSettings) -> list[str]:
    return [
        f'totalPrice(currencyCode="{settings.instore_currency}")',
        f"custom(fields({settings.instore_field_location_id} is defined))",
    ]


async def reconcile(
    commerce: QueryCommerce,
    trigger: Trigger,
    *,
    settings: ReconcilerSettings,
    clock: Clock,
    dry_run: bool = False,
    on_finding: Callable[[Finding], None] | None = None,
) -> RunReport:
    """One run at ``clock.now()``. Returns the :class:`RunReport`.

    ``on_finding`` is called for each finding as it is made (after its hand-off). Raises what the
    ports raise — ``TransientError`` / ``CommercetoolsError`` from Composable Commerce, the trigger's
    Kafka error — and stops there: every finding is found again by the next run, and handing one
    twice is harmless (order-finalization's rules).
    """
    started = clock.monotonic()
    since, until = _window(settings, datetime.fromtimestamp(clock.now(), UTC))
    report = RunReport(dry_run=dry_run, window_from=since, window_to=until)
    log.info("reconcile.run_started", dry_run=dry_run, since=since, until=until, order_creation=settings.order_creation)

    async def found(finding: Finding) -> None:
        if finding.action == "handed":
            assert finding.cart_id is not None
            await trigger.hand(finding.cart_id, finding.kind)
        report.findings.append(finding)
        log.warning("reconcile.found", **{k: v for k, v in _fields(finding).items() if v not in (None, "")})
        if on_finding is not None:
            on_finding(finding)

    hand = "would-hand" if dry_run else "handed"
    cart_where = [
        'cartState="Active"',
        "paymentInfo is defined",
        f'lastModifiedAt >= "{since}"',
        f'lastModifiedAt <= "{until}"',
        *_instore(settings),
    ]
    async for page in pages(commerce, "carts", cart_where, settings.reconciler_page_size):
        _progress(report, "carts", len(page))
        await _attach_payments(commerce, page, report)
        for raw in page:
            finding = _unordered(raw, settings, hand)
            if finding is not None and finding.action == hand:
                finding = await _check_order_number(commerce, raw, finding, settings)
            if finding is not None:
                await found(finding)

    order_where = [f'createdAt >= "{since}"', f'createdAt <= "{until}"', *_instore(settings)]
    async for page in pages(commerce, "orders", order_where, settings.reconciler_page_size):
        _progress(report, "orders", len(page))
        await _attach_payments(commerce, page, report)
        published = await _published_markers(commerce, [str(o["id"]) for o in page], report)
        for order in page:
            for finding in _order_findings(order, published, settings.instore_currency, hand):
                if finding.kind == "unannounced-order" and finding.action == hand:
                    finding = await _check_cart_exists(commerce, finding)
                await found(finding)

    report.seconds = clock.monotonic() - started
    log.info(
        "reconcile.run_finished",
        dry_run=dry_run,
        seconds=round(report.seconds, 3),
        carts_scanned=report.scanned["carts"],
        orders_scanned=report.scanned["orders"],
        unordered_carts=report.count("unordered-cart"),
        unannounced_orders=report.count("unannounced-order"),
        refunds_without_return=report.count("refund-without-return"),
        handed=sum(1 for f in report.findings if f.action == "handed"),
    )
    return report


def _fields(finding: Finding) -> dict[str, Any]:
    return {
        "kind": finding.kind,
        "action": finding.action,
        "cart_id": finding.cart_id,
        "order_id": finding.order_id,
        "order_number": finding.order_number,
        "currency": finding.currency,
        "total": finding.total,
        "paid": finding.paid,
        "refunded": finding.refunded,
        "detail": finding.detail,
    }


def _progress(report: RunReport, resource: str, n: int) -> None:
    report.pages[resource] += 1
    report.scanned[resource] += n
    page = report.pages[resource]
    (log.info if page % PROGRESS_EVERY_PAGES == 0 else log.debug)(
        "reconcile.progress", resource=resource, pages=page, scanned=report.scanned[resource]
    )


def _unordered(raw: dict[str, Any], settings: ReconcilerSettings, hand: str) -> Finding | None:
    """A finding for a paid, unordered cart; None for a cart that is not (yet) paid, or that cannot be judged."""
    try:
        cart = msgspec.convert(raw, Cart)
        cover = rules.coverage(cart)
    except (msgspec.ValidationError, rules.MissingPayments) as exc:
        log.warning("reconcile.cart_unreadable", cart_id=raw.get("id"), error=str(exc))
        return None
    if not (cart.lineItems or cart.customLineItems) or not cover.covered:
        return None
    action = "reported" if settings.order_creation == "instore" else hand
    detail = "ORDER_CREATION=instore: InStore creates the Order" if action == "reported" else ""
    return Finding(
        "unordered-cart",
        action,
        cart.id,
        currency=cover.currency,
        total=cover.total,
        paid=cover.charged,
        detail=f"lastModifiedAt={raw.get('lastModifiedAt')}" + (f" ({detail})" if detail else ""),
    )


def _batches(values: list[str]) -> list[list[str]]:
    return [values[i : i + IN_BATCH] for i in range(0, len(values), IN_BATCH)]


async def _published_markers(commerce: QueryCommerce, order_ids: list[str], report: RunReport) -> set[str]:
    """The ids among ``order_ids`` whose payments-completed marker is ``published`` (a query per :data:`IN_BATCH`)."""
    keys = {marker_key(order_id): order_id for order_id in order_ids if _ID.fullmatch(order_id)}
    published: set[str] = set()
    for batch in _batches(list(keys)):
        quoted = ", ".join(f'"{key}"' for key in batch)
        markers = await commerce.query(f"custom-objects/{CONTAINER}", [f"key in ({quoted})"], sort="key asc", limit=len(batch))
        report.pages["markers"] += 1
        published |= {
            keys[str(m.get("key"))]
            for m in markers
            if str(m.get("key")) in keys and isinstance(m.get("value"), dict) and m["value"].get("state") == "published"
        }
    return published


async def _attach_payments(commerce: QueryCommerce, rows: list[dict[str, Any]], report: RunReport) -> None:
    """Put each row's Payments into its ``paymentInfo.payments[*].obj``, read by id (a query per :data:`IN_BATCH`).

    Not ``expand`` on the carts/Orders query: one dangling Payment reference must cost that cart its
    judgement (no ``obj``: skipped, :func:`_unordered`), never the whole page.
    """
    refs = [ref for row in rows for ref in (row.get("paymentInfo") or {}).get("payments") or [] if isinstance(ref, dict)]
    ids = sorted({str(ref.get("id")) for ref in refs if _ID.fullmatch(str(ref.get("id")))})
    found: dict[str, dict[str, Any]] = {}
    for batch in _batches(ids):
        quoted = ", ".join(f'"{payment_id}"' for payment_id in batch)
        for payment in await commerce.query("payments", [f"id in ({quoted})"], limit=len(batch)):
            found[str(payment.get("id"))] = payment
        report.pages["payments"] += 1
    for ref in refs:
        read = found.get(str(ref.get("id")))
        if read is not None:
            ref["obj"] = read


async def _check_order_number(
    commerce: QueryCommerce, raw: dict[str, Any], finding: Finding, settings: ReconcilerSettings
) -> Finding:
    """Hand an unordered paid cart only when its order number is free (or already its own Order's): a number
    another cart's Order holds would be dead-lettered (``order-number-taken``) on every run — reported instead."""
    cart = msgspec.convert(raw, Cart)
    number = rules.order_number(cart, settings.instore_field_order_number)
    try:
        order = order_decoder.decode((await commerce.get_order_by_order_number(number)).content)
    except NotFound:
        return finding
    if order.cart is not None and order.cart.id == cart.id:
        return finding
    other = order.cart.id if order.cart else "none (imported)"
    detail = f"order number {number} is taken by Order {order.id} of cart {other}"
    return replace(finding, action="reported", order_number=number, detail=detail)


async def _check_cart_exists(commerce: QueryCommerce, finding: Finding) -> Finding:
    """Hand an unannounced Order only when its cart still exists: order-finalization reads the cart first, and a
    deleted one would be dead-lettered (``cart-not-found``) on every run — reported instead."""
    assert finding.cart_id is not None
    try:
        await commerce.get_cart(finding.cart_id)
    except NotFound:
        return replace(finding, action="reported", detail="its cart was deleted: announce it by hand if it must be")
    return finding


def _money_of(payments: list[dict[str, Any]], kind: str, currency: str) -> int:
    return sum(
        int(t.get("amount", {}).get("centAmount", 0))
        for p in payments
        for t in p.get("transactions") or []
        if t.get("type") == kind and t.get("state") == "Success" and t.get("amount", {}).get("currencyCode") == currency
    )


def _order_findings(order: dict[str, Any], published: set[str], currency: str, hand: str) -> list[Finding]:
    order_id = str(order.get("id"))
    cart_id = (order.get("cart") or {}).get("id")
    number = order.get("orderNumber")
    total = int((order.get("totalPrice") or {}).get("centAmount", 0))
    payments = [ref["obj"] for ref in (order.get("paymentInfo") or {}).get("payments") or [] if isinstance(ref.get("obj"), dict)]
    out: list[Finding] = []
    if order_id not in published:
        if isinstance(cart_id, str) and _ID.fullmatch(cart_id):
            out.append(
                Finding("unannounced-order", hand, cart_id, order_id, number, currency, total, detail="marker not published")
            )
        else:
            out.append(Finding("unannounced-order", "reported", None, order_id, number, currency, total, detail="no cart"))
    refunded = _money_of(payments, "Refund", currency)
    items = [item for info in order.get("returnInfo") or [] for item in info.get("items") or []]
    if refunded > 0 and not items:
        ids = ",".join(str(p.get("id")) for p in payments)
        out.append(
            Finding(
                "refund-without-return",
                "reported",
                cart_id if isinstance(cart_id, str) else None,
                order_id,
                number,
                currency,
                total,
                refunded=refunded,
                detail=f"payments={ids}",
            )
        )
    return out
