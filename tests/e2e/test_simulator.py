"""End to end: the InStore simulator (``instore-integration simulate`` / ``python -m instore_devfakes simulate``,
what ``make simulate`` and ``make demo`` run) drives the whole stack as processes — dev fakes, gateway, cart-mapping,
order-finalization, refund, payment-extension, real Kafka, the commercetools mock — and reports each step; a
broken stack makes it exit non-zero naming the step. Everything runs under a KAFKA_TOPIC_PREFIX of its own."""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.processes import (
    REPO_ROOT,
    CtMock,
    Kafka,
    Service,
    free_port,
    service_env,
    start_service,
)

pytestmark = pytest.mark.e2e

API_KEY = "e2e-sim-key-" + uuid.uuid4().hex
SECRET = "e2e-sim-secret-" + uuid.uuid4().hex
CONNECTION_KEY = "e2e-sim-connection-" + uuid.uuid4().hex
PREFIX = f"sim-{uuid.uuid4().hex[:6]}."
STEPS = [
    "listen",
    "ims-token",
    "session",
    "token-callback",
    "sale-cart",
    "card-extension",
    "card-prompt",
    "card-result",
    "pay-credit_card",
    "pay-cash",
    "order",
    "return-cart",
    "refund",
    "refunded",
]


INTEGRATION_CLI = (str(Path(sys.executable).parent / "instore-integration"), "simulate")
"""The operator command (``make simulate``)."""
DEVFAKES_MODULE = (sys.executable, "-m", "instore_devfakes", "simulate")
"""The dev-fakes' own command (``make demo``): the same code."""


@dataclass
class Stack:
    gateway: Service
    fakes: Service
    kafka: Kafka
    mock: CtMock


@pytest.fixture(scope="module")
def stack(kafka: Kafka, ct_mock: CtMock) -> Iterator[Stack]:
    tag = uuid.uuid4().hex[:6]
    fakes_port = free_port()
    issuer = f"http://127.0.0.1:{fakes_port}/ims"
    fakes_url = f"http://127.0.0.1:{fakes_port}"
    common = {
        "KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
        "KAFKA_TOPIC_PREFIX": PREFIX,  # the whole stack and the simulator in their own environment on the shared broker
        "PAYMENT_EXTENSION_ALLOWED_URLS": fakes_url,
    }
    services: list[Service] = []
    try:
        services.append(
            start_service(
                "sim-dev-fakes",
                "instore_devfakes",
                {
                    "DEVFAKES_HTTP_PORT": str(fakes_port),
                    "DEVFAKES_ISSUER": issuer,
                    "DEVFAKES_CONNECTION_KEY": CONNECTION_KEY,
                    "DEVFAKES_TENANT_ID": "sim-tenant",
                },
                fakes_port,
                ready_path="/healthz",
            )
        )
        for name, module, port_var, group_var in (
            ("sim-cart-mapping", "instore_cart_mapping", "CART_MAPPING_HTTP_PORT", "CART_MAPPING_CONSUMER_GROUP"),
            (
                "sim-order-finalization",
                "instore_order_finalization",
                "ORDER_FINALIZATION_HTTP_PORT",
                "ORDER_FINALIZATION_CONSUMER_GROUP",
            ),
            ("sim-refund", "instore_refund", "REFUND_HTTP_PORT", "REFUND_CONSUMER_GROUP"),
            (
                "sim-payment-extension",
                "instore_payment_extension",
                "PAYMENT_EXTENSION_HTTP_PORT",
                "PAYMENT_EXTENSION_CONSUMER_GROUP",
            ),
        ):
            port = free_port()
            extra = (
                {"PAYMENT_EXTENSION_SIMULATOR_URL": f"{fakes_url}/provider", "INSTORE_WEBHOOK_SECRET": SECRET}
                if module == "instore_payment_extension"
                else {}
            )
            services.append(
                start_service(
                    name,
                    module,
                    {**common, **ct_mock.settings_env(), port_var: str(port), group_var: f"{name}-{tag}", **extra},
                    port,
                )
            )
        port = free_port()
        gateway = start_service(
            "sim-gateway",
            "instore_gateway",
            {
                **common,
                "GATEWAY_HTTP_PORT": str(port),
                "INSTORE_CALLBACK_API_KEY": API_KEY,
                "INSTORE_WEBHOOK_SECRET": SECRET,
                "IMS_JWKS_URL": f"{issuer}/.well-known/jwks.json",
                "IMS_ISSUER": issuer,
                "INSTORE_AUTH_BASE_URL": f"http://127.0.0.1:{fakes_port}/instore-auth",
                "INSTORE_TENANT_ID": "sim-tenant",
                "INSTORE_CONNECTION_KEY": CONNECTION_KEY,
            },
            port,
        )
        services.append(gateway)
        yield Stack(gateway, services[0], kafka, ct_mock)
    finally:
        for service in services:
            service.stop()


def _simulate(stack: Stack, command: tuple[str, ...], **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            *command,
            "--gateway",
            stack.gateway.url,
            "--ims",
            stack.fakes.url,
            "--kafka",
            stack.kafka.bootstrap_servers,
            "--timeout",
            "30",
        ],
        env=service_env(
            {
                **stack.mock.settings_env(),
                "INSTORE_CALLBACK_API_KEY": API_KEY,
                "INSTORE_WEBHOOK_SECRET": SECRET,
                "LOG_LEVEL": "WARNING",
                "KAFKA_TOPIC_PREFIX": PREFIX,
                **env,
            }
        ),
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_the_simulator_sells_pays_returns_and_refunds(stack: Stack) -> None:
    result = _simulate(stack, INTEGRATION_CLI)
    assert result.returncode == 0, result.stdout + result.stderr
    numbered = [line.split()[1] for line in result.stdout.splitlines() if line[:3].strip().rstrip(".").isdigit()]
    assert numbered == STEPS
    summary = result.stdout.split("simulate: OK", 1)[1]
    assert "Order       store-berlin-01-" in summary and "CREDIT_CARD" in summary and "CASH" in summary
    assert "1 × SKU-TSHIRT-M (Refunded)" in summary
    assert (
        f"{PREFIX}commerce.payments.completed.v1: 1, {PREFIX}commerce.refunds.completed.v1: 1, "
        f"{PREFIX}commerce.payment-extension-results.v1: 1"
    ) in summary
    assert "result succeeded once at callbackUrl" in result.stdout


def test_the_simulator_names_the_step_that_failed(stack: Stack) -> None:
    result = _simulate(stack, DEVFAKES_MODULE, INSTORE_CALLBACK_API_KEY="not-the-key")
    assert result.returncode == 1
    assert "FAILED at step 'token-callback': HTTP 401" in result.stderr
