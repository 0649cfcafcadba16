"""End to end: one payment webhook is one trace, from the gateway's HTTP request across Kafka into
order-finalization, its Composable Commerce calls, and the event it publishes — whose ``traceparent``
header lets a downstream consumer continue the same trace.

The dev fakes (their OTLP receiver), the gateway and order-finalization run as processes against
real Kafka and the commercetools mock, exporting with the OpenTelemetry SDK's OTLP exporter.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaConsumer

from instore_devfakes.instore_samples import payment_webhook
from tests.e2e.test_metrics import _start_group_at_end
from tests.e2e.test_order_flow import _sale
from tests.e2e.test_traces import EXPORT_DEADLINE_S, _ancestors, _describe, _one
from tests.support.processes import CtMock, Kafka, Service, free_port, start_service

pytestmark = pytest.mark.e2e

SECRET = "e2e-webhook-traces-" + uuid.uuid4().hex
WEBHOOKS = "instore.webhooks.v1"
PAYMENTS = "commerce.payments.completed.v1"


@dataclass
class Stack:
    fakes: Service
    gateway: Service
    finalizer: Service
    mock: CtMock
    kafka: Kafka


@pytest.fixture(scope="module")
def stack(kafka: Kafka, ct_mock: CtMock) -> Iterator[Stack]:
    started: list[Service] = []
    try:
        fakes_port = free_port()
        started.append(
            start_service(
                "dev-fakes-webhook-traces",
                "instore_devfakes",
                {"DEVFAKES_HTTP_PORT": str(fakes_port)},
                fakes_port,
                ready_path="/healthz",
            )
        )
        otel = {"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{fakes_port}", "OTEL_BSP_SCHEDULE_DELAY": "200"}
        common = {"KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers}
        gateway_port = free_port()
        started.append(
            start_service(
                "gateway-webhook-traces",
                "instore_gateway",
                {
                    **common,
                    **otel,
                    "GATEWAY_HTTP_PORT": str(gateway_port),
                    "INSTORE_WEBHOOK_SECRET": SECRET,
                    "INSTORE_CALLBACK_API_KEY": "e2e-webhook-traces-key-" + uuid.uuid4().hex,
                },
                gateway_port,
            )
        )
        group = f"order-finalization-traces-{uuid.uuid4().hex[:8]}"
        asyncio.run(_start_group_at_end(kafka, group, WEBHOOKS))  # only this test's webhook is consumed
        port = free_port()
        started.append(
            start_service(
                "order-finalization-traces",
                "instore_order_finalization",
                {
                    **common,
                    **otel,
                    **ct_mock.settings_env(),
                    "ORDER_FINALIZATION_HTTP_PORT": str(port),
                    "ORDER_FINALIZATION_CONSUMER_GROUP": group,
                },
                port,
            )
        )
        fakes, gateway, finalizer = started
        yield Stack(fakes, gateway, finalizer, ct_mock, kafka)
    finally:
        for service in reversed(started):
            service.stop()


def _spans(stack: Stack, trace_id: str | None = None) -> list[dict[str, Any]]:
    response = httpx.get(stack.fakes.url + "/otlp/spans", params={"traceId": trace_id} if trace_id else None, timeout=5)
    assert response.status_code == 200, response.text
    return list(response.json())


def _post(stack: Stack, body: bytes) -> str:
    response = httpx.post(
        f"{stack.gateway.url}/instore/webhooks",
        content=body,
        headers={"X-Signature": hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()},
        timeout=10,
    )
    assert response.status_code == 202, response.text
    return str(response.json()["webhookId"])


def _event_traceparent(kafka: Kafka, webhook_id: str) -> str:
    """The ``traceparent`` header of the payments-completed event made from webhook ``webhook_id``."""

    async def read() -> str:
        consumer = AIOKafkaConsumer(
            PAYMENTS, bootstrap_servers=kafka.bootstrap_servers, group_id=None, auto_offset_reset="earliest"
        )
        await consumer.start()
        try:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                for records in (await consumer.getmany(timeout_ms=300)).values():
                    for record in records:
                        if webhook_id.encode() in (record.value or b""):
                            headers = {k: v.decode() for k, v in record.headers}
                            return headers.get("traceparent", "")
            raise AssertionError(f"no event for webhook {webhook_id} within 30 s")
        finally:
            await consumer.stop()

    return asyncio.run(read())


def test_one_payment_webhook_is_one_trace_into_its_order_and_its_event(stack: Stack) -> None:
    cart = asyncio.run(_sale(stack.mock, [("CREDIT_CARD", 2500, "Success")]))
    assert httpx.delete(stack.fakes.url + "/otlp/spans", timeout=5).status_code == 200
    webhook_id = _post(stack, payment_webhook(cart["id"]))

    def complete(spans: list[dict[str, Any]]) -> bool:
        return any(s["service"] == "gateway" and s["kind"] == "SERVER" for s in spans) and any(
            s["service"] == "order-finalization"
            and s["kind"] == "PRODUCER"
            and s["attributes"].get("messaging.destination.name") == PAYMENTS
            and s["attributes"].get("messaging.operation") == "publish"
            for s in spans
        )

    deadline = time.monotonic() + EXPORT_DEADLINE_S
    spans = _spans(stack)
    while not complete(spans):  # a bounded poll of the receiver: the services export every 200 ms
        assert time.monotonic() < deadline, f"the webhook's spans did not all arrive; held:\n{_describe(spans)}"
        time.sleep(0.1)
        spans = _spans(stack)
    server = _one(spans, "the gateway's server span", service="gateway", kind="SERVER")
    assert server["name"] == "POST /instore/webhooks" and not server["parentSpanId"]
    trace = _spans(stack, server["traceId"])
    assert {s["service"] for s in spans} == {s["service"] for s in trace}, f"more than one trace:\n{_describe(spans)}"
    by_id = {s["spanId"]: s for s in trace}

    publish = _one(
        trace,
        "the gateway's publish of the webhook",
        service="gateway",
        kind="PRODUCER",
        attr_messaging_destination_name=WEBHOOKS,
    )
    assert publish["parentSpanId"] == server["spanId"]
    consume = _one(
        trace,
        "order-finalization's processing",
        service="order-finalization",
        kind="CONSUMER",
        attr_messaging_operation="process",
    )
    assert consume["parentSpanId"] == publish["spanId"]  # across Kafka
    create = _one(trace, "the Order's creation", service="order-finalization", kind="CLIENT", name="commercetools POST orders")
    assert consume["spanId"] in _ancestors(create, by_id)
    assert create["attributes"]["http.response.status_code"] == 201
    event = _one(
        trace,
        "the event's publish",
        service="order-finalization",
        kind="PRODUCER",
        attr_messaging_destination_name=PAYMENTS,
        attr_messaging_operation="publish",
    )
    assert consume["spanId"] in _ancestors(event, by_id)
    assert all(s["spanId"] == server["spanId"] or server["spanId"] in _ancestors(s, by_id) for s in trace), _describe(trace)
    assert not [s["name"] for s in trace if cart["id"] in s["name"]], _describe(trace)

    # a downstream consumer of the event continues the same trace
    version, trace_id, _parent, _flags = _event_traceparent(stack.kafka, webhook_id).split("-")
    assert (version, trace_id) == ("00", server["traceId"])
