"""End to end: the reconciler (``python -m instore_order_finalization.reconciler``) against real processes.

A sale paid in Composable Commerce whose webhook never came becomes one Order and one
``commerce.payments.completed.v1`` event; a run racing the late webhook still gives one of each;
paging over several pages with the mock's real predicates; ``--dry-run`` changes nothing anywhere.

Own commercetools mock and own topic prefix: a run looks at the whole project and hands to the
prefixed webhook topic, so nothing of the other tests is touched (and nothing of theirs is seen).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from instore_devfakes.instore_samples import payment_webhook
from instore_shared.commercetools import CommercetoolsClient
from instore_shared.settings import CommercetoolsSettings
from tests.support.processes import CtMock, Kafka, Service, free_port, service_env, start_ct_mock, start_service, wait_until

pytestmark = pytest.mark.e2e

SECRET = "e2e-reconciler-secret-" + uuid.uuid4().hex
PREFIX = f"rec{uuid.uuid4().hex[:6]}."


@dataclass
class Stack:
    gateway: Service
    finalizer: Service
    mock: CtMock
    kafka: Kafka


@pytest.fixture(scope="module")
def stack(kafka: Kafka) -> Iterator[Stack]:
    mock = start_ct_mock()
    common = {"KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers, "KAFKA_TOPIC_PREFIX": PREFIX, **mock.settings_env()}
    services: list[Service] = []
    try:
        port = free_port()
        services.append(
            start_service(
                "gateway-reconciler",
                "instore_gateway",
                {
                    **common,
                    "GATEWAY_HTTP_PORT": str(port),
                    "INSTORE_CALLBACK_API_KEY": "e2e-rec-" + uuid.uuid4().hex,
                    "INSTORE_WEBHOOK_SECRET": SECRET,
                },
                port,
            )
        )
        port = free_port()
        services.append(
            start_service(
                "order-finalization-reconciler",
                "instore_order_finalization",
                {**common, "ORDER_FINALIZATION_HTTP_PORT": str(port)},
                port,
            )
        )
        yield Stack(services[0], services[1], mock, kafka)
    finally:
        for service in services:
            service.stop()
        mock.process.stop()


def _commerce(mock: CtMock) -> CommercetoolsClient:
    return CommercetoolsClient(
        CommercetoolsSettings(**{k.removeprefix("CTP_").lower(): v for k, v in mock.settings_env().items()})
    )


async def _paid_sale(mock: CtMock) -> dict[str, Any]:
    """An InStore cart of 2 × SKU-MUG (2,500 cents), charged by card in full: what a lost webhook leaves."""
    async with _commerce(mock) as c:
        cart = (
            await c.request(
                "POST",
                "/carts",
                json={
                    "currency": "EUR",
                    "country": "DE",
                    "key": f"rec-{uuid.uuid4().hex[:10]}",
                    "lineItems": [{"sku": "SKU-MUG", "quantity": 2}],
                    "custom": {
                        "type": {"typeId": "type", "key": "instore-order"},
                        "fields": {"locationId": "store-berlin-01", "workstationId": "pos-3", "userId": "colleague-42"},
                    },
                },
            )
        ).json()
        payment = (
            await c.request(
                "POST",
                "/payments",
                json={
                    "amountPlanned": {"currencyCode": "EUR", "centAmount": cart["totalPrice"]["centAmount"]},
                    "paymentMethodInfo": {"method": "CREDIT_CARD", "paymentInterface": "instore"},
                    "transactions": [
                        {"type": "Charge", "state": "Success", "amount": {"currencyCode": "EUR", "centAmount": 2500}}
                    ],
                },
            )
        ).json()
        return (
            await c.request(
                "POST",
                f"/carts/{cart['id']}",
                json={
                    "version": cart["version"],
                    "actions": [{"action": "addPayment", "payment": {"typeId": "payment", "id": payment["id"]}}],
                },
            )
        ).json()


def _reconcile(stack: Stack, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """One run of the reconciler as a process (grace 0: everything in the window counts)."""
    return subprocess.run(
        [sys.executable, "-m", "instore_order_finalization.reconciler", "--once", *args],
        env=service_env(
            {
                "KAFKA_BOOTSTRAP_SERVERS": stack.kafka.bootstrap_servers,
                "KAFKA_TOPIC_PREFIX": PREFIX,
                **stack.mock.settings_env(),
                "RECONCILER_GRACE_SECONDS": "0",
                **env,
            }
        ),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


async def _orders_of(mock: CtMock, cart_id: str) -> list[dict[str, Any]]:
    async with _commerce(mock) as c:
        return (await c.request("GET", "/orders", params={"where": f'cart(id="{cart_id}")'})).json()["results"]


async def _events_for(kafka: Kafka, cart_id: str, settle: float = 3.0, timeout_s: float = 30) -> list[dict[str, Any]]:
    """Every payments-completed event of ``cart_id`` under the prefix: read until one is there, then ``settle`` s more."""
    consumer = AIOKafkaConsumer(
        PREFIX + "commerce.payments.completed.v1",
        bootstrap_servers=kafka.bootstrap_servers,
        group_id=None,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    found: list[dict[str, Any]] = []
    try:
        deadline, settled = time.monotonic() + timeout_s, None
        while time.monotonic() < (settled or deadline):
            for records in (await consumer.getmany(timeout_ms=300)).values():
                found += [e for e in (json.loads(r.value) for r in records) if e["cartId"] == cart_id]
            if found and settled is None:
                settled = time.monotonic() + settle
    finally:
        await consumer.stop()
    return found


async def _webhook_offsets(kafka: Kafka) -> dict[int, int]:
    consumer = AIOKafkaConsumer(bootstrap_servers=kafka.bootstrap_servers, group_id=None)
    await consumer.start()
    try:
        topic = PREFIX + "instore.webhooks.v1"
        partitions = consumer.partitions_for_topic(topic) or set()
        if not partitions:
            await consumer.topics()
            partitions = consumer.partitions_for_topic(topic) or set()
        ends = await consumer.end_offsets([TopicPartition(topic, p) for p in partitions])
        return {tp.partition: offset for tp, offset in ends.items()}
    finally:
        await consumer.stop()


async def _snapshot(mock: CtMock) -> dict[str, dict[str, int]]:
    """Every cart, Order, Payment and Custom Object of the project: id → version."""
    out: dict[str, dict[str, int]] = {}
    async with _commerce(mock) as c:
        for resource in ("carts", "orders", "payments", "custom-objects"):
            rows = (await c.request("GET", f"/{resource}", params={"limit": "500"})).json()["results"]
            out[resource] = {r["id"]: r["version"] for r in rows}
    return out


async def test_a_paid_cart_whose_webhook_never_came_becomes_one_order_and_one_event(stack: Stack) -> None:
    cart = await _paid_sale(stack.mock)
    run = _reconcile(stack)
    assert run.returncode == 0, run.stderr
    assert f"handed     unordered-cart        cart={cart['id']} total=2500 EUR paid=2500 EUR" in run.stdout
    assert '"reconcile.run_finished"' in run.stderr
    events = await _events_for(stack.kafka, cart["id"])
    orders = await _orders_of(stack.mock, cart["id"])
    assert len(orders) == 1 and orders[0]["orderNumber"] == f"instore-{cart['id']}"
    assert len(events) == 1 and events[0]["orderId"] == orders[0]["id"]
    assert events[0]["sourceWebhookId"] == f"reconciliation:unordered-cart:{cart['id']}"
    processed = [
        json.loads(line)
        for line in stack.finalizer.process.output().splitlines()
        if '"webhook.processed"' in line and cart["id"] in line
    ]
    assert [(p["origin"], p["outcome"]) for p in processed] == [("reconciliation", "order-created")]
    # The next run finds nothing more to do for this sale: the cart is Ordered, the event announced.
    again = _reconcile(stack)
    assert again.returncode == 0, again.stderr
    assert cart["id"] not in again.stdout
    assert len(await _orders_of(stack.mock, cart["id"])) == 1


async def test_a_run_racing_the_late_webhook_still_gives_one_order_and_one_event(stack: Stack) -> None:
    cart = await _paid_sale(stack.mock)
    # The webhook names the cart by key (another partition than the trigger's, keyed by id): a true race.
    body = payment_webhook(cart["key"], f"late-{uuid.uuid4().hex[:8]}")
    signature = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()

    async def late_webhook() -> int:
        async with httpx.AsyncClient() as client:
            response = await client.post(
                f"{stack.gateway.url}/instore/webhooks", content=body, headers={"X-Signature": signature}
            )
            return response.status_code

    run, status = await asyncio.gather(asyncio.to_thread(_reconcile, stack), late_webhook())
    assert status == 202 and run.returncode == 0, run.stderr
    events = await _events_for(stack.kafka, cart["id"])
    orders = await _orders_of(stack.mock, cart["id"])
    assert len(orders) == 1
    assert len(events) == 1 and events[0]["orderId"] == orders[0]["id"]


async def test_paging_over_several_pages_and_a_dry_run_changes_nothing(stack: Stack) -> None:
    carts = [await _paid_sale(stack.mock) for _ in range(5)]
    before, offsets = await _snapshot(stack.mock), await _webhook_offsets(stack.kafka)
    run = _reconcile(stack, "--dry-run", RECONCILER_PAGE_SIZE="2", LOG_LEVEL="DEBUG")
    assert run.returncode == 0, run.stderr
    for cart in carts:
        assert f"would-hand unordered-cart        cart={cart['id']}" in run.stdout
    assert "handed " not in run.stdout
    progress = [json.loads(line) for line in run.stderr.splitlines() if '"reconcile.progress"' in line]
    assert max(p["pages"] for p in progress if p["resource"] == "carts") >= 3
    assert await _snapshot(stack.mock) == before
    assert await _webhook_offsets(stack.kafka) == offsets
    for cart in carts:
        assert await _orders_of(stack.mock, cart["id"]) == []


async def test_a_sale_within_the_grace_period_is_left_alone(stack: Stack) -> None:
    cart = await _paid_sale(stack.mock)
    run = _reconcile(stack, "--dry-run", RECONCILER_GRACE_SECONDS="600")
    assert run.returncode == 0, run.stderr
    assert cart["id"] not in run.stdout


def test_an_unreachable_commerce_api_is_exit_1_with_the_reason(stack: Stack) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    run = _reconcile(stack, CTP_API_URL=url, CTP_AUTH_URL=url, CTP_MAX_ATTEMPTS="1")
    assert run.returncode == 1
    assert '"reconcile.run_failed"' in run.stderr and "Traceback" not in run.stderr


def test_bad_settings_are_exit_2_naming_the_variable(stack: Stack) -> None:
    run = _reconcile(stack, RECONCILER_PAGE_SIZE="1000")
    assert run.returncode == 2 and "RECONCILER_PAGE_SIZE" in run.stderr


def test_a_run_with_nothing_to_hand_needs_no_kafka(stack: Stack) -> None:
    run = _reconcile(stack, KAFKA_BOOTSTRAP_SERVERS=f"127.0.0.1:{free_port()}", RECONCILER_GRACE_SECONDS="3600")
    assert run.returncode == 0, run.stderr
    assert "handed" not in run.stdout


def test_a_run_with_work_and_kafka_down_is_exit_1_and_hands_it_next_time(stack: Stack) -> None:
    async def paid() -> dict[str, Any]:
        return await _paid_sale(stack.mock)

    cart = asyncio.run(paid())
    down = _reconcile(stack, KAFKA_BOOTSTRAP_SERVERS=f"127.0.0.1:{free_port()}")
    assert down.returncode == 1 and '"reconcile.run_failed"' in down.stderr, down.stderr
    assert "Traceback" not in down.stderr
    assert asyncio.run(_orders_of(stack.mock, cart["id"])) == []
    again = _reconcile(stack)
    assert again.returncode == 0 and f"cart={cart['id']}" in again.stdout


def test_the_loop_runs_every_interval_pushes_its_metrics_and_stops_on_sigterm(stack: Stack) -> None:
    pushes: list[tuple[str, str]] = []

    class Pushgateway(BaseHTTPRequestHandler):
        def do_PUT(self) -> None:  # the push API: PUT /metrics/job/<job> with the text exposition
            pushes.append((self.path, self.rfile.read(int(self.headers["Content-Length"])).decode()))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Pushgateway)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    env = service_env(
        {
            "KAFKA_BOOTSTRAP_SERVERS": stack.kafka.bootstrap_servers,
            "KAFKA_TOPIC_PREFIX": PREFIX,
            **stack.mock.settings_env(),
            "RECONCILER_INTERVAL_SECONDS": "0.5",
            "RECONCILER_GRACE_SECONDS": "3600",
            "RECONCILER_PUSHGATEWAY_URL": f"http://127.0.0.1:{server.server_port}",
        }
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "instore_order_finalization.reconciler"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        wait_until(lambda: len(pushes) >= 2, 60, "two runs pushed")
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=15) == 0
    finally:
        if process.poll() is None:
            process.kill()
        server.shutdown()
    path, body = pushes[0]
    assert path == "/metrics/job/instore-reconciler"
    assert 'instore_reconciler_runs_total{result="ok"} 1.0' in body
    assert 'instore_reconciler_last_run_findings{action="handed",kind="unordered-cart"} 0.0' in body
    assert "instore_reconciler_last_success_timestamp_seconds" in body
    assert 'instore_reconciler_runs_total{result="ok"} 2.0' in pushes[1][1]


def test_a_dry_run_pushes_nothing_to_the_pushgateway(stack: Stack) -> None:
    pushes: list[str] = []

    class Pushgateway(BaseHTTPRequestHandler):
        def do_PUT(self) -> None:
            pushes.append(self.path)
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Pushgateway)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        run = _reconcile(stack, "--dry-run", RECONCILER_PUSHGATEWAY_URL=f"http://127.0.0.1:{server.server_port}")
        real = _reconcile(
            stack, RECONCILER_PUSHGATEWAY_URL=f"http://127.0.0.1:{server.server_port}", RECONCILER_GRACE_SECONDS="3600"
        )
    finally:
        server.shutdown()
    assert run.returncode == 0 and real.returncode == 0, run.stderr + real.stderr
    assert pushes == ["/metrics/job/instore-reconciler"]  # the real run's only


def test_a_metrics_port_in_use_is_exit_2_naming_the_variable(stack: Stack) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        run = subprocess.run(
            [sys.executable, "-m", "instore_order_finalization.reconciler"],
            env=service_env(
                {
                    **stack.mock.settings_env(),
                    "RECONCILER_INTERVAL_SECONDS": "1",
                    "RECONCILER_METRICS_PORT": str(taken.getsockname()[1]),
                }
            ),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert run.returncode == 2 and "RECONCILER_METRICS_PORT" in run.stderr and "Traceback" not in run.stderr


async def test_a_cart_whose_payment_was_deleted_is_skipped_and_the_run_goes_on(stack: Stack) -> None:
    dangling, fine = await _paid_sale(stack.mock), await _paid_sale(stack.mock)
    async with _commerce(stack.mock) as c:
        ref = dangling["paymentInfo"]["payments"][0]["id"]
        payment = (await c.request("GET", f"/payments/{ref}")).json()
        await c.request("DELETE", f"/payments/{ref}?version={payment['version']}")
    run = _reconcile(stack, "--dry-run")
    assert run.returncode == 0, run.stderr
    assert f"cart={fine['id']}" in run.stdout and f"cart={dangling['id']}" not in run.stdout
    assert '"reconcile.cart_unreadable"' in run.stderr


async def test_a_paid_cart_whose_order_number_another_carts_order_holds_is_reported_and_nothing_is_announced(
    stack: Stack,
) -> None:
    number = f"store-e2e-{uuid.uuid4().hex[:8]}"
    first, second = await _paid_sale(stack.mock), await _paid_sale(stack.mock)
    async with _commerce(stack.mock) as c:
        for cart in (first, second):
            current = (await c.get_cart(cart["id"])).json()
            action = {"action": "setCustomField", "name": "orderNumber", "value": number}
            await c.request("POST", f"/carts/{cart['id']}", json={"version": current["version"], "actions": [action]})
        current = (await c.get_cart(first["id"])).json()
        await c.create_order_from_cart(first["id"], current["version"], number, "Paid")  # InStore-style, no event
    run = _reconcile(stack)
    assert run.returncode == 0, run.stderr
    line = next(line for line in run.stdout.splitlines() if f"cart={second['id']}" in line)
    assert line.split()[1] == "reported" and "is taken by Order" in line
    assert await _orders_of(stack.mock, second["id"]) == []
    # the first cart's Order is announced (handed by its own cart), never under the second cart's id
    events = await _events_for(stack.kafka, first["id"])
    assert len(events) == 1 and await _events_for(stack.kafka, second["id"], timeout_s=3) == []
