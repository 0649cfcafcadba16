"""Browser: the reference host page (dev fakes, ``/host``) in Debian's chromium driven by playwright-core
(tools/browser/host-page.mjs) against real processes — dev fakes, gateway, order-finalization, Kafka, the
commercetools mock. A colleague signs in, pays a cart and sees its Order number; a cancelled sale and a declined card;
InStore's window events arrive in ``instore.host-events.v1``; no secret reaches the browser. Screenshots go to
``.local/screenshots`` (CI keeps them)."""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer

from tests.support.processes import REPO_ROOT, CtMock, Kafka, Service, free_port, start_service

pytestmark = pytest.mark.e2e

SECRET = "e2e-host-webhook-secret-" + uuid.uuid4().hex
API_KEY = "e2e-host-callback-key-" + uuid.uuid4().hex
CONNECTION_KEY = "e2e-host-connection-" + uuid.uuid4().hex
SHOTS = Path(REPO_ROOT) / ".local" / "screenshots"


@dataclass
class Stack:
    fakes: Service
    gateway: Service


@pytest.fixture(scope="module")
def stack(kafka: Kafka, ct_mock: CtMock) -> Iterator[Stack]:
    fakes_port, gateway_port, finalizer_port = free_port(), free_port(), free_port()
    fakes_url, gateway_url = f"http://127.0.0.1:{fakes_port}", f"http://127.0.0.1:{gateway_port}"
    issuer = f"{fakes_url}/ims"
    services: list[Service] = []
    try:
        services.append(
            start_service(
                "host-dev-fakes",
                "instore_devfakes",
                {
                    **ct_mock.settings_env(),
                    "DEVFAKES_HTTP_PORT": str(fakes_port),
                    "DEVFAKES_ISSUER": issuer,
                    "DEVFAKES_CONNECTION_KEY": CONNECTION_KEY,
                    "DEVFAKES_GATEWAY_URL": gateway_url,
                    "INSTORE_WEBHOOK_SECRET": SECRET,
                },
                fakes_port,
                ready_path="/healthz",
            )
        )
        services.append(
            start_service(
                "host-order-finalization",
                "instore_order_finalization",
                {
                    "KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
                    **ct_mock.settings_env(),
                    "ORDER_FINALIZATION_HTTP_PORT": str(finalizer_port),
                    "ORDER_FINALIZATION_CONSUMER_GROUP": f"host-of-{uuid.uuid4().hex[:6]}",
                },
                finalizer_port,
            )
        )
        services.append(
            start_service(
                "host-gateway",
                "instore_gateway",
                {
                    "KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
                    "GATEWAY_HTTP_PORT": str(gateway_port),
                    "INSTORE_CALLBACK_API_KEY": API_KEY,
                    "INSTORE_WEBHOOK_SECRET": SECRET,
                    "IMS_JWKS_URL": f"{issuer}/.well-known/jwks.json",
                    "IMS_ISSUER": issuer,
                    "INSTORE_AUTH_BASE_URL": f"{fakes_url}/instore-auth",
                    "INSTORE_TENANT_ID": "local-tenant",
                    "INSTORE_CONNECTION_KEY": CONNECTION_KEY,
                    "GATEWAY_CORS_ALLOW_ORIGINS": fakes_url,
                },
                gateway_port,
            )
        )
        yield Stack(services[0], services[2])
    finally:
        for service in services:
            service.stop()


@pytest.fixture(scope="module")
def browser_run(stack: Stack) -> dict[str, Any]:
    script = Path(REPO_ROOT) / "tools" / "browser" / "host-page.mjs"
    proc = subprocess.run(
        ["node", str(script), f"{stack.fakes.url}/host", str(SHOTS)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert proc.stdout, proc.stderr[-3000:]
    result: dict[str, Any] = json.loads(proc.stdout)
    assert proc.returncode == 0 and not result["errors"], (
        result["errors"],
        stack.gateway.process.describe(),
        stack.fakes.process.describe(),
    )
    return result


def test_a_colleague_signs_in_pays_and_sees_the_order_number(browser_run: dict[str, Any]) -> None:
    paid = browser_run["paid"]
    assert paid["orderNumber"].startswith("store-berlin-01-"), paid
    assert paid["status"] == "checkout: success"
    assert browser_run["cancelled"]["status"] == "checkout: cancelled"
    assert browser_run["declined"]["status"].startswith("checkout: error — Card declined")
    assert all(Path(shot).is_file() for shot in browser_run["screenshots"])


def test_no_secret_reaches_the_browser(browser_run: dict[str, Any]) -> None:
    bodies = "\n".join(r["body"] for r in browser_run["responses"])
    assert browser_run["responses"], "the page received nothing?"
    for secret in (SECRET, API_KEY, CONNECTION_KEY, "test-secret"):  # test-secret: the mock's client secret
        assert secret not in bodies


async def test_the_window_events_are_in_kafka(browser_run: dict[str, Any], kafka: Kafka) -> None:
    carts = {browser_run[k]["cartId"] for k in ("paid", "cancelled", "declined")}
    consumer = AIOKafkaConsumer(
        "instore.host-events.v1", bootstrap_servers=kafka.bootstrap_servers, auto_offset_reset="earliest", group_id=None
    )
    await consumer.start()
    found: list[dict[str, Any]] = []
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                found += [e for e in (json.loads(r.value) for r in records) if e["cartId"] in carts]
            statuses = {(e["cartId"], e["detail"].get("status")) for e in found if e["type"] == "mistStatus"}
            if len(statuses) >= 3:
                break
    finally:
        await consumer.stop()
    statuses = {(e["cartId"], e["detail"].get("status")) for e in found if e["type"] == "mistStatus"}
    assert statuses == {
        (browser_run["paid"]["cartId"], "success"),
        (browser_run["cancelled"]["cartId"], "cancelled"),
        (browser_run["declined"]["cartId"], "error"),
    }
    alerts = [e for e in found if e["type"] == "inStoreCore-Alert"]
    assert {"Payment successful", "Insert or tap the card"} <= {a["detail"]["message"] for a in alerts}
    assert any(e["type"] == "inStoreCore-receiptChoice" and e["detail"] == "email" for e in found)
    assert {(e["colleagueId"], e["workstationId"]) for e in found} == {("colleague-42", "pos-3")}
