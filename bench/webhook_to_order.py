"""Benchmark: a sale's signed payment webhook → Order in Composable Commerce → ``commerce.payments.completed.v1``.

Starts Apache Kafka, the seeded commercetools mock, one gateway and one order-finalization
process (its own consumer group), like ``make run``. Beforehand, not timed, it prepares N
paid sales in the mock through the API (a Cart of 2 × SKU-MUG with the ``instore-order``
custom type, a Payment whose successful Charge covers the total, ``addPayment``). A reader
of ``commerce.payments.completed.v1`` is positioned at the end of every partition before
the first webhook; then one signed ``payment.completed`` webhook per sale is sent (C at a
time) and it measures:

- webhook-to-event latency p50/p99/max per sale: from sending the webhook to the gateway
  until its cart's event arrives (gateway → Kafka → order-finalization → Order created →
  event published; the announcement marker, a Custom Object, is set published after that);
- sales/s through the pipeline (first send to last event);
- events seen vs. sales sent: exactly one event per sale (a short settle after the last
  catches duplicates);
- CPU ms per sale by process (gateway, order-finalization, mock, Kafka, load generator).

- afterwards (untimed): every sale's Order is still as created (``Open``, never changed as a
  marker) and its marker ``payments-completed.<order id>`` is ``published``.

Exits non-zero when a webhook is not answered 202, the events are not exactly one per sale,
or an Order was changed or left without a published marker.

Usage: ``make bench-orders`` or ``uv run python -m bench.webhook_to_order [--sales N] [--concurrency C]``.
Honours ``KAFKA_BOOTSTRAP_SERVERS`` (else starts a local broker).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import hmac
import json
import time
import uuid
from dataclasses import dataclass, field

import aiohttp
import psutil
from aiokafka import AIOKafkaConsumer, TopicPartition

from bench.cart_callback import RssSampler, _cpu_seconds, _pct
from instore_shared import announcements
from instore_shared.commercetools import CommercetoolsClient
from instore_shared.logging import configure_logging
from instore_shared.settings import CommercetoolsSettings
from tests.support.processes import (
    CtMock,
    Service,
    free_port,
    start_ct_mock,
    start_kafka,
    start_service,
)

SECRET = "bench-orders-secret-" + uuid.uuid4().hex
API_KEY = "bench-orders-key-" + uuid.uuid4().hex
GROUP = f"bench-orders-{uuid.uuid4().hex[:8]}"
WEBHOOKS = "instore.webhooks.v1"
EVENTS = "commerce.payments.completed.v1"


def _commerce(mock: CtMock) -> CommercetoolsClient:
    return CommercetoolsClient(
        CommercetoolsSettings(**{k.removeprefix("CTP_").lower(): v for k, v in mock.settings_env().items()})
    )


async def _prepare_sales(mock: CtMock, n: int, concurrency: int = 16) -> list[str]:
    """``n`` paid sales in the mock, like InStore leaves them; returns their cart ids."""
    gate = asyncio.Semaphore(concurrency)
    async with _commerce(mock) as c:

        async def one() -> str:
            async with gate:
                cart = (
                    await c.request(
                        "POST",
                        "/carts",
                        json={
                            "currency": "EUR",
                            "country": "DE",
                            "key": f"bench-sale-{uuid.uuid4().hex[:12]}",
                            "lineItems": [{"sku": "SKU-MUG", "quantity": 2}],
                            "custom": {
                                "type": {"typeId": "type", "key": "instore-order"},
                                "fields": {"locationId": "store-berlin-01", "workstationId": "pos-3", "userId": "colleague-42"},
                            },
                        },
                    )
                ).json()
                total = cart["totalPrice"]["centAmount"]
                payment = (
                    await c.request(
                        "POST",
                        "/payments",
                        json={
                            "key": f"bench-pay-{uuid.uuid4().hex[:12]}",
                            "amountPlanned": {"currencyCode": "EUR", "centAmount": total},
                            "paymentMethodInfo": {"method": "CREDIT_CARD", "paymentInterface": "instore"},
                            "interfaceId": f"psp-{uuid.uuid4().hex[:8]}",
                            "transactions": [
                                {"type": "Charge", "state": "Success", "amount": {"currencyCode": "EUR", "centAmount": total}}
                            ],
                        },
                    )
                ).json()
                await c.request(
                    "POST",
                    f"/carts/{cart['id']}",
                    json={
                        "version": cart["version"],
                        "actions": [{"action": "addPayment", "payment": {"typeId": "payment", "id": payment["id"]}}],
                    },
                )
                return str(cart["id"])

        return list(await asyncio.gather(*(one() for _ in range(n))))


async def _skip_old_webhooks(bootstrap: str, group: str = GROUP) -> int:
    """Commit the end of ``instore.webhooks.v1`` for our fresh group, so a shared broker's old
    webhooks are not replayed into this run (the service reads ``earliest``). Returns how many were skipped."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        await consumer._client.force_metadata_update()
        tps = [TopicPartition(WEBHOOKS, p) for p in consumer.partitions_for_topic(WEBHOOKS) or set()]
        if not tps:
            return 0
        ends = await consumer.end_offsets(tps)
        starts = await consumer.beginning_offsets(tps)
        waiting = sum(ends[tp] - starts[tp] for tp in tps)
        if waiting:
            consumer.assign(tps)
            await consumer.commit({tp: ends[tp] for tp in tps})
        return waiting
    finally:
        await consumer.stop()


@dataclass
class Run:
    """Send times and event arrival times (perf_counter s) by cart id, and what went wrong."""

    sent: dict[str, float] = field(default_factory=dict)
    arrived: dict[str, list[float]] = field(default_factory=dict)
    foreign_events: int = 0
    statuses: dict[str, int] = field(default_factory=dict)
    started: float = 0.0
    last_sent: float = 0.0
    cpu_ms: dict[str, float] = field(default_factory=dict)


def signed(body: dict[str, object]) -> tuple[bytes, dict[str, str]]:
    """The webhook's bytes and headers (signature), built before the clock starts."""
    raw = json.dumps(body, separators=(",", ":")).encode()
    return raw, {"X-Signature": hmac.new(SECRET.encode(), raw, hashlib.sha256).hexdigest(), "Content-Type": "application/json"}


async def _run(
    bootstrap: str,
    url: str,
    bodies: dict[str, tuple[bytes, dict[str, str]]],
    concurrency: int,
    timeout_s: float,
    settle: float,
    procs: dict[str, psutil.Process],
    events_topic: str = EVENTS,
    id_field: str = "cartId",
) -> Run:
    """Send each of ``bodies`` (by the id its event names in ``id_field``), C at a time, and time its event."""
    run = Run()
    cart_ids = list(bodies)
    wanted = set(cart_ids)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
    await consumer.start()
    try:
        await consumer._client.force_metadata_update()
        tps = [TopicPartition(events_topic, p) for p in consumer.partitions_for_topic(events_topic) or set()]
        if not tps:
            raise SystemExit(f"bench: topic {events_topic} does not exist after the services started")
        consumer.assign(tps)
        await consumer.seek_to_end(*tps)
        for tp in tps:  # resolve the positions now, before anything is sent
            await consumer.position(tp)

        all_seen = asyncio.Event()

        async def read() -> None:
            while True:
                batches = await consumer.getmany(timeout_ms=100)
                now = time.perf_counter()
                for records in batches.values():
                    for record in records:
                        cart_id = json.loads(record.value).get(id_field)
                        if cart_id in wanted:
                            run.arrived.setdefault(cart_id, []).append(now)
                        else:
                            run.foreign_events += 1
                if len(run.arrived) == len(wanted):
                    all_seen.set()

        reader = asyncio.create_task(read())
        connector = aiohttp.TCPConnector(limit=concurrency + 4)
        queue: asyncio.Queue[str] = asyncio.Queue()
        for cart_id in cart_ids:
            queue.put_nowait(cart_id)
        try:
            async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=30)) as session:

                async def sender() -> None:
                    while not queue.empty():
                        cart_id = queue.get_nowait()
                        body, headers = bodies[cart_id]
                        run.sent[cart_id] = time.perf_counter()
                        try:
                            async with session.post(url, data=body, headers=headers) as response:
                                await response.read()
                                status = str(response.status)
                        except (TimeoutError, aiohttp.ClientError) as exc:
                            status = type(exc).__name__
                        run.statuses[status] = run.statuses.get(status, 0) + 1

                cpu_before = _cpu_seconds(procs)
                run.started = time.perf_counter()
                await asyncio.gather(*(sender() for _ in range(concurrency)))
                run.last_sent = time.perf_counter()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(all_seen.wait(), timeout_s)
            cpu_after = _cpu_seconds(procs)
            await asyncio.sleep(settle)  # any duplicate event would arrive now
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
    finally:
        await consumer.stop()
    run.cpu_ms = {k: (cpu_after[k] - cpu_before[k]) * 1000 / max(1, len(cart_ids)) for k in procs}
    return run


async def _check_orders(mock: CtMock, cart_ids: list[str]) -> tuple[int, int]:
    """(Orders still ``Open`` at version 1, announcement markers ``published``) over ``cart_ids``' Orders."""
    untouched = published = 0
    async with _commerce(mock) as c:
        for cart_id in cart_ids:
            found = await c.find_order_by_cart(cart_id)
            if found is None:
                continue
            order = found.json()
            untouched += order["orderState"] == "Open" and order["version"] == 1
            claim = await announcements.read_claim(c, announcements.marker_key("payments-completed", order["id"]))
            published += claim is not None and claim.state == "published"
    return untouched, published


def report(run: Run, count: int, concurrency: int, noun: str, peak_rss: dict[str, float]) -> None:
    """Print the figures of ``run`` (``count`` webhooks, one event each expected); exit non-zero when a
    webhook was not answered 202 or the events are not exactly one per ``noun``."""
    latencies = [(times[0] - run.sent[c]) * 1000 for c, times in run.arrived.items() if c in run.sent]
    lat = latencies or [0.0]
    events = sum(len(times) for times in run.arrived.values())
    duplicated = sum(1 for times in run.arrived.values() if len(times) > 1)
    missing = count - len(run.arrived)
    last_event = max((times[0] for times in run.arrived.values()), default=run.last_sent)
    elapsed = last_event - run.started
    non_202 = sum(v for k, v in run.statuses.items() if k != "202")
    nouns = f"{noun}s"

    print()
    print(f"{nouns + ' sent:':<37}{count:7d}   ({concurrency} webhooks in flight)")
    print(f"webhook-to-event latency p50:        {_pct(lat, 0.5):7.1f} ms")
    print(f"webhook-to-event latency p99:        {_pct(lat, 0.99):7.1f} ms")
    print(f"webhook-to-event latency max:        {max(lat):7.1f} ms")
    print(
        f"{nouns + '/s through the pipeline:':<37}{len(run.arrived) / elapsed if elapsed > 0 else 0:7.1f}   "
        f"(first send to last event, {elapsed:.2f} s; sending took {run.last_sent - run.started:.2f} s)"
    )
    print(f"webhook answers:                     {', '.join(f'{k}: {v}' for k, v in sorted(run.statuses.items()))}")
    for name, peak in peak_rss.items():
        print(f"peak RSS {name:<19}         {peak:7.0f} MB")
    parts = ", ".join(f"{name} {ms:.2f}" for name, ms in run.cpu_ms.items() if ms > 0.005)
    print(f"CPU ms per {noun} (2 cores = 2,000 ms/s shared by all): {sum(run.cpu_ms.values()):.2f}  ({parts})")
    print()
    exact = events == count and not missing and not duplicated
    print(
        f"events seen vs {nouns} sent: {events} / {count}  ({missing} {nouns} without an event, "
        f"{duplicated} with more than one; {run.foreign_events} other events ignored)  "
        f"{'ok' if exact else 'NOT EXACTLY ONE PER ' + noun.upper()}"
    )
    if non_202 or not exact:
        raise SystemExit(
            f"bench: {non_202} webhooks not answered 202, {missing} {nouns} without an event, {duplicated} with duplicate events"
        )


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark and print its figures."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sales", type=int, default=200, help="paid sales, one webhook each")
    parser.add_argument("--concurrency", type=int, default=8, help="webhooks in flight at once")
    parser.add_argument("--timeout", type=float, default=120, help="seconds to wait for all events after the last send")
    parser.add_argument("--settle", type=float, default=3, help="seconds to keep reading for duplicates")
    args = parser.parse_args(argv)

    configure_logging("bench", level="WARNING", json=False)  # not a debug line per API call while preparing

    def step(s: str) -> None:
        print(f"bench: {s}", flush=True)

    step("starting Kafka, the commercetools mock, the gateway and order-finalization …")
    kafka = start_kafka()
    mock = start_ct_mock()
    services: dict[str, Service] = {}
    try:
        common = {"KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers, "LOG_LEVEL": "INFO"}
        gw_port, of_port = free_port(), free_port()
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
        skipped = asyncio.run(_skip_old_webhooks(kafka.bootstrap_servers))
        if skipped:
            step(f"{skipped} webhooks already on {WEBHOOKS}: group {GROUP} starts after them")
        services["order-finalization"] = start_service(
            "order-finalization",
            "instore_order_finalization",
            {
                **common,
                **mock.settings_env(),
                "ORDER_FINALIZATION_HTTP_PORT": str(of_port),
                "ORDER_FINALIZATION_CONSUMER_GROUP": GROUP,
            },
            of_port,
        )
        step(f"preparing {args.sales} paid sales in the mock (not timed) …")
        started = time.perf_counter()
        cart_ids = asyncio.run(_prepare_sales(mock, args.sales))
        step(f"prepared in {time.perf_counter() - started:.1f} s")
        pids = {name: s.process.proc.pid for name, s in services.items()}
        procs = {name: psutil.Process(pid) for name, pid in pids.items()}
        procs["mock"] = psutil.Process(mock.process.proc.pid)
        if kafka.home is not None:
            procs["kafka"] = psutil.Process(int((kafka.home / "kafka.pid").read_text()))
        procs["load generator"] = psutil.Process()
        with RssSampler(pids) as rss:
            step(f"sending {args.sales} signed webhooks, {args.concurrency} at a time, reading {EVENTS} …")
            # Bodies and signatures are built before the clock starts: signing is not measured.
            bodies = {
                cart_id: signed(
                    {
                        "id": f"evt-{uuid.uuid4().hex}",
                        "type": "payment.completed",
                        "cartId": cart_id,
                        "locationId": "store-berlin-01",
                    }
                )
                for cart_id in cart_ids
            }
            run = asyncio.run(
                _run(
                    kafka.bootstrap_servers,
                    f"{services['gateway'].url}/instore/webhooks",
                    bodies,
                    args.concurrency,
                    args.timeout,
                    args.settle,
                    procs,
                )
            )
        untouched, published = asyncio.run(_check_orders(mock, cart_ids))
    finally:
        for service in services.values():
            service.stop()
        mock.process.stop()
        kafka.stop()

    report(run, args.sales, args.concurrency, "sale", rss.peak)
    print(
        f"Orders left as created (Open, version 1): {untouched} / {args.sales}; "
        f"announcement markers published: {published} / {args.sales}"
    )
    if untouched != args.sales or published != args.sales:
        raise SystemExit("bench: an Order was changed, or its announcement was not marked published")


if __name__ == "__main__":
    main()
