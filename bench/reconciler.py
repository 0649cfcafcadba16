"""Benchmark: one reconciliation run over many carts and Orders (the reconciler's queries and decisions).

Starts the seeded commercetools mock (no Kafka: the run is a ``--dry-run``, so nothing is handed)
and prepares, not timed, N InStore sales in the window — a third paid and unordered, a third
unpaid, a third ordered (each Order without its announcement marker) — plus the seed's. Then it runs
:func:`instore_order_finalization.reconciler.run.reconcile` against the mock through the real
Composable Commerce client, once per page size, and prints per run: seconds, records scanned,
calls made (queries and per-finding lookups), records/s, findings by kind, and the process's peak RSS.

What it measures is the reconciler's side (paging, decoding, coverage, the marker query per page)
plus the mock's query cost, which grows with the project (the mock filters in memory): a real
project answers the indexed predicates in roughly constant time per page.

Exits non-zero when a run does not find exactly the prepared paid carts and ordered sales.

Usage: ``make bench-reconciler`` or ``uv run python -m bench.reconciler [--sales N] [--page-sizes 100,500]``.
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid
from typing import Any

import psutil

from bench.webhook_to_order import _commerce
from instore_order_finalization.reconciler.run import reconcile
from instore_order_finalization.reconciler.settings import ReconcilerSettings
from instore_shared.clock import SystemClock
from instore_shared.commercetools import CommercetoolsClient
from instore_shared.commercetools.client import ApiResponse
from instore_shared.logging import configure_logging
from instore_shared.settings import CommercetoolsSettings
from tests.support.processes import CtMock, start_ct_mock

INSTORE_FIELDS = {"locationId": "store-bench-01", "workstationId": "pos-1", "userId": "colleague-1"}


async def _prepare(mock: CtMock, n: int, concurrency: int = 16) -> dict[str, set[str]]:
    """``n`` sales: paid-unordered, unpaid, ordered in turn; returns the cart ids of each kind."""
    gate = asyncio.Semaphore(concurrency)
    kinds: dict[str, set[str]] = {"paid": set(), "unpaid": set(), "ordered": set()}
    async with _commerce(mock) as c:

        async def one(i: int) -> None:
            kind = ("paid", "unpaid", "ordered")[i % 3]
            async with gate:
                cart = (
                    await c.request(
                        "POST",
                        "/carts",
                        json={
                            "currency": "EUR",
                            "country": "DE",
                            "key": f"bench-rec-{uuid.uuid4().hex[:12]}",
                            "lineItems": [{"sku": "SKU-MUG", "quantity": 2}],
                            "custom": {"type": {"typeId": "type", "key": "instore-order"}, "fields": INSTORE_FIELDS},
                        },
                    )
                ).json()
                money = {"currencyCode": "EUR", "centAmount": cart["totalPrice"]["centAmount"]}
                state = "Pending" if kind == "unpaid" else "Success"
                payment = (
                    await c.request(
                        "POST",
                        "/payments",
                        json={
                            "amountPlanned": money,
                            "paymentMethodInfo": {"method": "CREDIT_CARD"},
                            "transactions": [{"type": "Charge", "state": state, "amount": money}],
                        },
                    )
                ).json()
                action = {"action": "addPayment", "payment": {"typeId": "payment", "id": payment["id"]}}
                cart = (
                    await c.request("POST", f"/carts/{cart['id']}", json={"version": cart["version"], "actions": [action]})
                ).json()
                if kind == "ordered":
                    await c.create_order_from_cart(cart["id"], cart["version"], f"bench-{cart['id']}", "Paid")
                kinds[kind].add(cart["id"])

        await asyncio.gather(*(one(i) for i in range(n)))
    return kinds


class _Counting:
    """The real client, counting queries."""

    def __init__(self, client: CommercetoolsClient) -> None:
        self.client, self.queries = client, 0

    async def query(self, path: str, where: Any = (), **kwargs: Any) -> list[dict[str, Any]]:
        self.queries += 1
        return await self.client.query(path, where, **kwargs)

    async def get_cart(self, cart_id: str, expand: tuple[str, ...] = ()) -> ApiResponse:
        self.queries += 1
        return await self.client.get_cart(cart_id, expand)

    async def get_order_by_order_number(self, order_number: str, expand: tuple[str, ...] = ()) -> ApiResponse:
        self.queries += 1
        return await self.client.get_order_by_order_number(order_number, expand)


class _NoTrigger:
    async def hand(self, cart_id: str, reason: str) -> None:
        raise AssertionError("a dry run hands nothing")


async def _run(mock: CtMock, page_size: int, kinds: dict[str, set[str]]) -> dict[str, Any]:
    settings = ReconcilerSettings(reconciler_grace_seconds=0, reconciler_page_size=page_size)
    env = mock.settings_env()
    commerce_settings = CommercetoolsSettings(**{k.removeprefix("CTP_").lower(): v for k, v in env.items()})
    async with CommercetoolsClient(commerce_settings) as client:
        counting = _Counting(client)
        started = time.perf_counter()
        report = await reconcile(counting, _NoTrigger(), settings=settings, clock=SystemClock(), dry_run=True)
        seconds = time.perf_counter() - started
    unordered = {f.cart_id for f in report.findings if f.kind == "unordered-cart"}
    unannounced = {f.cart_id for f in report.findings if f.kind == "unannounced-order"}
    if not kinds["paid"] <= unordered or unordered & (kinds["unpaid"] | kinds["ordered"]):
        raise SystemExit(f"page size {page_size}: unordered carts found are not the paid ones")
    if not kinds["ordered"] <= unannounced:
        raise SystemExit(f"page size {page_size}: not every unannounced Order was found")
    scanned = report.scanned["carts"] + report.scanned["orders"]
    return {
        "page_size": page_size,
        "seconds": seconds,
        "scanned": scanned,
        "queries": counting.queries,
        "per_s": scanned / seconds if seconds else float("inf"),
        "unordered": len(unordered),
        "unannounced": len(unannounced),
    }


def main(argv: list[str] | None = None) -> None:
    """Prepare the sales, run once per page size, print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sales", type=int, default=1500, help="sales to prepare (a third each: paid, unpaid, ordered)")
    parser.add_argument("--page-sizes", default="100,500", help="comma-separated RECONCILER_PAGE_SIZE values to run with")
    args = parser.parse_args(argv)
    if args.sales < 3:
        parser.error("--sales must be at least 3")
    sizes = [int(v) for v in args.page_sizes.split(",") if v.strip()]
    if not sizes or any(not 1 <= s <= 500 for s in sizes):
        parser.error("--page-sizes: values between 1 and 500")
    configure_logging("bench-reconciler", "ERROR", json=False)  # each finding is a warning line
    mock = start_ct_mock()
    try:
        started = time.perf_counter()
        kinds = asyncio.run(_prepare(mock, args.sales))
        print(f"prepared {args.sales} sales in {time.perf_counter() - started:.1f} s (not timed)")
        rss = psutil.Process()
        for size in sizes:
            r = asyncio.run(_run(mock, size, kinds))
            print(
                f"page size {r['page_size']:>3}: {r['seconds']:.2f} s, {r['scanned']} carts+Orders scanned in {r['queries']} "
                f"calls ({r['per_s']:.0f}/s), found {r['unordered']} unordered carts and {r['unannounced']} unannounced "
                f"Orders; peak RSS {rss.memory_info().rss / 2**20:.0f} MiB"
            )
    finally:
        mock.process.stop()


if __name__ == "__main__":
    main()
