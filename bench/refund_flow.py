"""Benchmark: a signed refund webhook → return items and Refund transactions → ``commerce.refunds.completed.v1``.

Starts Apache Kafka, the seeded commercetools mock, one gateway and one refund process (its
own consumer group). Beforehand, not timed, it prepares N returns in the mock through the
API: a sale (2 × SKU-MUG, a card Payment charged for the total) ordered with
``POST /orders``, and a return cart whose line points at the Order's line (the purchase
Custom Fields). A reader of ``commerce.refunds.completed.v1`` is positioned at the end of
every partition before the first webhook; then one signed ``refund.completed`` webhook per
return (refunding one mug to the card) is sent, C at a time, and it measures:

- webhook-to-event latency p50/p99/max per return (gateway → Kafka → refund: read the
  return cart and the Order with its Payments, write the return item, write the Refund,
  set ``Refunded``, claim the announcement marker, publish, mark it published);
- returns/s through the pipeline, exactly one event per return, CPU ms per return by process.

Exits non-zero when a webhook is not answered 202, or the events are not exactly one per return.

Usage: ``make bench-refunds`` or ``uv run python -m bench.refund_flow [--returns N] [--concurrency C]``.
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid

import psutil

from bench.cart_callback import RssSampler
from bench.webhook_to_order import (
    API_KEY,
    SECRET,
    _commerce,
    _run,
    _skip_old_webhooks,
    report,
    signed,
)
from instore_shared.logging import configure_logging
from tests.support.processes import (
    CtMock,
    Service,
    free_port,
    start_ct_mock,
    start_kafka,
    start_service,
)

GROUP = f"bench-refunds-{uuid.uuid4().hex[:8]}"
EVENTS = "commerce.refunds.completed.v1"
MUG = 1250


async def _prepare_returns(mock: CtMock, n: int, concurrency: int = 16) -> dict[str, str]:
    """``n`` ordered sales and a return cart for one mug of each; returns {return cart id: card payment id}."""
    gate = asyncio.Semaphore(concurrency)
    async with _commerce(mock) as c:

        async def one() -> tuple[str, str]:
            async with gate:
                cart = (
                    await c.request(
                        "POST",
                        "/carts",
                        json={"currency": "EUR", "country": "DE", "lineItems": [{"sku": "SKU-MUG", "quantity": 2}]},
                    )
                ).json()
                money = {"currencyCode": "EUR", "centAmount": cart["totalPrice"]["centAmount"]}
                payment = (
                    await c.request(
                        "POST",
                        "/payments",
                        json={
                            "amountPlanned": money,
                            "paymentMethodInfo": {"method": "CREDIT_CARD"},
                            "transactions": [{"type": "Charge", "state": "Success", "amount": money}],
                        },
                    )
                ).json()
                cart = (
                    await c.update(
                        "carts",
                        cart["id"],
                        cart["version"],
                        [{"action": "addPayment", "payment": {"typeId": "payment", "id": payment["id"]}}],
                    )
                ).json()
                order = (await c.create_order_from_cart(cart["id"], cart["version"], f"bench-{cart['id']}", "Paid")).json()
                ret = (
                    await c.request(
                        "POST",
                        "/carts",
                        json={
                            "currency": "EUR",
                            "country": "DE",
                            "lineItems": [
                                {
                                    "sku": "SKU-MUG",
                                    "quantity": 1,
                                    "custom": {
                                        "type": {"typeId": "type", "key": "instore-line-item"},
                                        "fields": {
                                            "purchaseOrderId": order["id"],
                                            "purchaseLineItemId": order["lineItems"][0]["id"],
                                            "returnComment": "bench",
                                        },
                                    },
                                }
                            ],
                        },
                    )
                ).json()
                return str(ret["id"]), str(payment["id"])

        return dict(await asyncio.gather(*(one() for _ in range(n))))


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark and print its figures."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--returns", type=int, default=200, help="returns, one refund webhook each")
    parser.add_argument("--concurrency", type=int, default=8, help="webhooks in flight at once")
    parser.add_argument("--timeout", type=float, default=120, help="seconds to wait for all events after the last send")
    parser.add_argument("--settle", type=float, default=3, help="seconds to keep reading for duplicates")
    args = parser.parse_args(argv)

    configure_logging("bench", level="WARNING", json=False)

    def step(s: str) -> None:
        print(f"bench: {s}", flush=True)

    step("starting Kafka, the commercetools mock, the gateway and refund …")
    kafka = start_kafka()
    mock = start_ct_mock()
    services: dict[str, Service] = {}
    try:
        common = {"KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers, "LOG_LEVEL": "INFO"}
        gw_port, rf_port = free_port(), free_port()
        services["gateway"] = start_service(
            "gateway",
            "instore_gateway",
            {
                **common,
                "GATEWAY_HTTP_PORT": str(gw_port),
                "INSTORE_CALLBACK_API_KEY": API_KEY,
                "INSTORE_WEBHOOK_SECRET": SECRET,
            },
            gw_port,
        )
        asyncio.run(_skip_old_webhooks(kafka.bootstrap_servers, GROUP))
        services["refund"] = start_service(
            "refund",
            "instore_refund",
            {
                **common,
                **mock.settings_env(),
                "REFUND_HTTP_PORT": str(rf_port),
                "REFUND_CONSUMER_GROUP": GROUP,
            },
            rf_port,
        )
        step(f"preparing {args.returns} ordered sales and return carts in the mock (not timed) …")
        started = time.perf_counter()
        returns = asyncio.run(_prepare_returns(mock, args.returns))
        step(f"prepared in {time.perf_counter() - started:.1f} s")
        pids = {name: s.process.proc.pid for name, s in services.items()}
        procs = {name: psutil.Process(pid) for name, pid in pids.items()}
        procs["mock"] = psutil.Process(mock.process.proc.pid)
        if kafka.home is not None:
            procs["kafka"] = psutil.Process(int((kafka.home / "kafka.pid").read_text()))
        procs["load generator"] = psutil.Process()
        bodies = {
            cart_id: signed(
                {
                    "id": f"evt-{uuid.uuid4().hex}",
                    "type": "refund.completed",
                    "returnCartId": cart_id,
                    "data": {
                        "refunds": [
                            {
                                "refundId": f"rf-{uuid.uuid4().hex[:12]}",
                                "paymentId": payment_id,
                                "amount": {"centAmount": MUG, "currencyCode": "EUR"},
                            }
                        ]
                    },
                }
            )
            for cart_id, payment_id in returns.items()
        }
        with RssSampler(pids) as rss:
            step(f"sending {args.returns} signed refund webhooks, {args.concurrency} at a time, reading {EVENTS} …")
            run = asyncio.run(
                _run(
                    kafka.bootstrap_servers,
                    f"{services['gateway'].url}/instore/webhooks",
                    bodies,
                    args.concurrency,
                    args.timeout,
                    args.settle,
                    procs,
                    EVENTS,
                    "returnCartId",
                )
            )
    finally:
        for service in services.values():
            service.stop()
        mock.process.stop()
        kafka.stop()

    report(run, args.returns, args.concurrency, "return", rss.peak)


if __name__ == "__main__":
    main()
