"""The integration's own metrics: bounded labels, and that each place counts what it says."""

from __future__ import annotations

from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from aiokafka import TopicPartition
from litestar.testing import TestClient
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from instore_gateway.app import Ports, create_app
from instore_gateway.settings import GatewaySettings
from instore_gateway.vault import InMemoryTokenVault
from instore_shared import metrics
from instore_shared.commercetools import CommercetoolsClient, NotFound, TransientError
from instore_shared.kafka.consumer import retry_transient
from tests.unit.test_commercetools_client import SETTINGS, Server
from tests.unit.test_webhooks import BODY, SECRET, Lookups, Recorder, sign


def value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.mark.parametrize(
    ("method", "path", "operation"),
    [
        ("GET", "/carts/3f2a1c4e-0b1d-4c8e-9a7f-1234567890ab", "GET carts/{id}"),
        ("GET", "/carts/key=demo-sale-cart", "GET carts/key={key}"),
        ("GET", "/orders/order-number=store-berlin-01-000002", "GET orders/order-number={orderNumber}"),
        ("POST", "/orders", "POST orders"),
        ("GET", "/orders?where=cart(id%3D%22x%22)", "GET orders"),
        ("POST", "/payments/abc", "POST payments/{id}"),
        (
            "GET",
            "/custom-objects/instore-integration-announcements/payments-completed.42",
            "GET custom-objects/{container}/{key}",
        ),
        ("POST", "/custom-objects", "POST custom-objects"),
        ("GET", "/", "GET /"),
    ],
)
def test_a_commerce_operation_is_a_path_template_without_ids(method: str, path: str, operation: str) -> None:
    assert metrics.commerce_operation(method, path) == operation


async def test_the_client_counts_each_call_by_operation_and_final_status_and_its_retries() -> None:
    answers = [
        httpx.Response(503, json={"message": "down"}),
        httpx.Response(200, json={"id": "c1"}),
        httpx.Response(404, json={"statusCode": 404, "message": "x", "errors": [{"code": "ResourceNotFound", "message": "x"}]}),
    ]
    ok_before = value("instore_commerce_requests_total", operation="GET carts/{id}", status="200")
    missing_before = value("instore_commerce_requests_total", operation="GET carts/{id}", status="404")
    retries_before = value("instore_commerce_retries_total", operation="GET carts/{id}")
    count_before = value("instore_commerce_request_duration_seconds_count", operation="GET carts/{id}")
    async with CommercetoolsClient(SETTINGS, transport=httpx.MockTransport(Server(answers))) as client:
        await client.get_cart("3f2a1c4e-0b1d-4c8e-9a7f-1234567890ab")
        with pytest.raises(NotFound):
            await client.get_cart("3f2a1c4e-0b1d-4c8e-9a7f-000000000000")
    assert value("instore_commerce_requests_total", operation="GET carts/{id}", status="200") == ok_before + 1
    assert value("instore_commerce_requests_total", operation="GET carts/{id}", status="404") == missing_before + 1
    assert value("instore_commerce_retries_total", operation="GET carts/{id}") == retries_before + 1
    assert value("instore_commerce_request_duration_seconds_count", operation="GET carts/{id}") == count_before + 2


async def test_a_call_that_never_got_an_answer_is_status_error() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    before = value("instore_commerce_requests_total", operation="POST orders", status="error")
    async with CommercetoolsClient(SETTINGS, transport=httpx.MockTransport(Server(refuse))) as client:
        with pytest.raises(TransientError):
            await client.request("POST", "/orders", json={})
    assert value("instore_commerce_requests_total", operation="POST orders", status="error") == before + 1


async def test_an_outage_wait_counts_each_retry_and_the_seconds_waited() -> None:
    calls = 0

    async def work() -> str:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise TransientError(503, "ServiceUnavailable", "down")
        return "done"

    retries, waited = (
        value("instore_outage_retries_total", operation="unit"),
        value("instore_outage_wait_seconds_total", operation="unit"),
    )
    assert await retry_transient(work, 60.0, "unit") == "done"
    assert value("instore_outage_retries_total", operation="unit") == retries + 2
    assert value("instore_outage_wait_seconds_total", operation="unit") > waited


def test_a_handled_webhook_counts_its_outcome_verdicts_and_its_webhook_to_event_time() -> None:
    topic = "unit.events.v1"
    count = value("instore_webhook_to_event_seconds_count", topic=topic)
    total = value("instore_webhook_to_event_seconds_sum", topic=topic)
    metrics.webhook_handled(
        "order-created", topic, ["published"], "2026-12-03T10:00:00.000Z", now=1796292000.0 + 1.5
    )  # 2026-12-03T10:00:01.5Z
    metrics.webhook_handled("already-ordered", topic, ["already-published"], "2026-12-03T10:00:00.000Z")
    metrics.webhook_handled("order-created", topic, ["published"], "not a time")
    assert value("instore_webhook_to_event_seconds_count", topic=topic) == count + 1
    assert value("instore_webhook_to_event_seconds_sum", topic=topic) == pytest.approx(total + 1.5)
    assert value("instore_events_announced_total", topic=topic, verdict="already-published") >= 1
    assert value("instore_webhooks_processed_total", outcome="already-ordered") >= 1


class _Consumer:
    """What the lag refresh reads of an aiokafka consumer."""

    def __init__(self, marks: dict[int, tuple[int | None, int]]) -> None:
        self.marks = marks

    def assignment(self) -> set[TopicPartition]:
        return {TopicPartition("unit.topic", p) for p in self.marks}

    def highwater(self, tp: TopicPartition) -> int | None:
        return self.marks[tp.partition][0]

    async def position(self, tp: TopicPartition) -> int:
        return self.marks[tp.partition][1]


async def test_consumer_lag_is_high_watermark_minus_position_per_assigned_partition() -> None:
    consumer = _Consumer({0: (10, 4), 1: (7, 7), 2: (None, 0)})
    broker = SimpleNamespace(subscribers=[SimpleNamespace(group_id="g", consumer_subgroup=[consumer])])
    await metrics.refresh_consumer_lag(broker)
    assert value("instore_kafka_consumer_lag", consumer_group="g", topic="unit.topic", partition="0") == 6
    assert value("instore_kafka_consumer_lag", consumer_group="g", topic="unit.topic", partition="1") == 0
    assert (
        REGISTRY.get_sample_value("instore_kafka_consumer_lag", {"consumer_group": "g", "topic": "unit.topic", "partition": "2"})
        is None
    )
    consumer.marks = {1: (9, 7)}  # a rebalance took partition 0 away
    await metrics.refresh_consumer_lag(broker)
    assert (
        REGISTRY.get_sample_value("instore_kafka_consumer_lag", {"consumer_group": "g", "topic": "unit.topic", "partition": "0"})
        is None
    )
    assert value("instore_kafka_consumer_lag", consumer_group="g", topic="unit.topic", partition="1") == 2


@pytest.fixture
def client() -> Iterator[TestClient[Any]]:
    """The gateway with fake ports."""
    settings = GatewaySettings(instore_callback_api_key="k" * 20, instore_webhook_secret=SECRET.decode())
    app = create_app(settings, Ports(cart_lookups=Lookups(), events=Recorder(), vault=InMemoryTokenVault()))  # type: ignore[arg-type]
    with TestClient(app) as test_client:
        yield test_client


def test_the_gateway_serves_metrics_counting_webhooks_by_outcome_and_vault_operations(client: TestClient[Any]) -> None:
    refused = value("instore_webhooks_refused_total", reason="invalid-signature")
    accepted = value("instore_webhooks_accepted_total")
    misses = value("instore_token_vault_operations_total", operation="get", outcome="miss")
    assert client.post("/instore/webhooks", content=BODY, headers={"X-Signature": sign(BODY)}).status_code == 202
    assert client.post("/instore/webhooks", content=BODY, headers={"X-Signature": "00"}).status_code == 401
    unknown = client.get("/instore/callbacks/tokens/" + "u" * 43, headers={"X-Api-Key": "k" * 20})
    assert unknown.status_code == 404
    answer = client.get("/metrics")
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/plain")
    families = {f.name for f in text_string_to_metric_families(answer.text)}
    assert {
        "instore_http_requests",
        "instore_http_request_duration_seconds",
        "instore_webhooks_accepted",
        "instore_webhooks_refused",
        "instore_cart_lookups",
        "instore_token_vault_operations",
        "process_cpu_seconds",
    } <= families
    assert value("instore_webhooks_accepted_total") == accepted + 1
    assert value("instore_webhooks_refused_total", reason="invalid-signature") == refused + 1
    assert value("instore_token_vault_operations_total", operation="get", outcome="miss") == misses + 1
    assert (
        value("instore_http_requests_total", app_name="gateway", method="POST", path="/instore/webhooks", status_code="401") >= 1
    )
