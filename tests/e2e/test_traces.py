"""End to end: one cart callback is one trace, from the gateway's HTTP request across Kafka into cart-mapping and back.

The dev fakes (their OTLP/HTTP receiver, ``POST /v1/traces``), the gateway and cart-mapping run
as processes against real Kafka and the commercetools mock; the services export their spans
with the OpenTelemetry SDK's own OTLP exporter because ``OTEL_EXPORTER_OTLP_ENDPOINT`` points
at the dev fakes (the gateway uncompressed, cart-mapping gzip: both decodings are used). One
sale-cart callback must leave exactly one trace in the receiver whose spans are linked
gateway HTTP server span → gateway Kafka publish → cart-mapping consume → Composable Commerce
call(s) and the reply's publish, every parent a span of the same trace.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tests.e2e.test_metrics import _start_group_at_end
from tests.support.processes import CtMock, Kafka, Service, free_port, start_service, wait_until

pytestmark = pytest.mark.e2e

API_KEY = "e2e-traces-key-" + uuid.uuid4().hex
REQUESTS = "instore.cart-requests.v1"
REPLIES = "instore.cart-replies.v1"
EXPORT_DEADLINE_S = 30.0


@dataclass
class Stack:
    fakes: Service
    gateway: Service
    cart_mapping: Service
    mock: CtMock


@pytest.fixture(scope="module")
def stack(kafka: Kafka, ct_mock: CtMock) -> Iterator[Stack]:
    started: list[Service] = []
    try:
        fakes_port = free_port()
        started.append(
            start_service(
                "dev-fakes-traces", "instore_devfakes", {"DEVFAKES_HTTP_PORT": str(fakes_port)}, fakes_port, ready_path="/healthz"
            )
        )
        # the standard SDK variables; a short batch delay so the spans arrive within the test
        otel = {"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{fakes_port}", "OTEL_BSP_SCHEDULE_DELAY": "200"}
        common = {"KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers}
        gateway_port = free_port()
        started.append(
            start_service(
                "gateway-traces",
                "instore_gateway",
                {
                    **common,
                    **otel,
                    "GATEWAY_HTTP_PORT": str(gateway_port),
                    "INSTORE_CALLBACK_API_KEY": API_KEY,
                    "GATEWAY_ACCESS_LOG": "all",
                },
                gateway_port,
            )
        )  # a line per request: the gateway's line of the lookup
        # a group of its own, at the end of the shared broker's request topic: only this test's request is consumed
        group = f"cart-mapping-traces-{uuid.uuid4().hex[:8]}"
        asyncio.run(_start_group_at_end(kafka, group, REQUESTS))  # the gateway has created the topics by now
        port = free_port()
        started.append(
            start_service(
                "cart-mapping-traces",
                "instore_cart_mapping",
                {
                    **common,
                    **otel,
                    **ct_mock.settings_env(),
                    "OTEL_EXPORTER_OTLP_COMPRESSION": "gzip",
                    "CART_MAPPING_HTTP_PORT": str(port),
                    "CART_MAPPING_CONSUMER_GROUP": group,
                },
                port,
            )
        )
        fakes, gateway, cart_mapping = started
        yield Stack(fakes, gateway, cart_mapping, ct_mock)
    finally:
        for service in reversed(started):
            service.stop()


def _spans(stack: Stack) -> list[dict[str, Any]]:
    response = httpx.get(stack.fakes.url + "/otlp/spans", timeout=5)
    assert response.status_code == 200, response.text
    return list(response.json())


def _one(spans: list[dict[str, Any]], what: str, **match: Any) -> dict[str, Any]:
    """The single span whose fields (``attr_<name>`` for attributes) equal ``match``."""

    def fits(span: dict[str, Any]) -> bool:
        return all(
            (span["attributes"].get(k[5:].replace("_", ".")) if k.startswith("attr_") else span.get(k)) == v
            for k, v in match.items()
        )

    found = [s for s in spans if fits(s)]
    assert len(found) == 1, f"{len(found)} spans are {what} ({match}); held:\n{_describe(spans)}"
    return found[0]


def _describe(spans: list[dict[str, Any]]) -> str:
    return "\n".join(
        f"  {s['traceId'][:8]} {s['spanId']} ← {s['parentSpanId'] or '(root)':16} {s['service']:13} {s['kind']:8} {s['name']}"
        for s in spans
    )


def _ancestors(span: dict[str, Any], by_id: dict[str, dict[str, Any]]) -> list[str]:
    """The span ids from ``span``'s parent up to its trace's root (each parent must be held)."""
    chain: list[str] = []
    while span["parentSpanId"]:
        assert span["parentSpanId"] in by_id, f"the parent of {span['name']!r} is not in its trace"
        assert len(chain) < len(by_id), "the parent links form a cycle"
        chain.append(span["parentSpanId"])
        span = by_id[span["parentSpanId"]]
    return chain


@dataclass
class Lookup:
    """One sale-cart callback and the spans the receiver held once every kind of span it makes had arrived."""

    cart_key: str
    spans: list[dict[str, Any]]


@pytest.fixture(scope="module")
def lookup(stack: Stack) -> Lookup:
    assert httpx.delete(stack.fakes.url + "/otlp/spans", timeout=5).status_code == 200  # nothing from the start-up
    cart_key = stack.mock.seed["openCartKey"]  # demo-sale-cart may be ordered by an earlier test (then 409)
    response = httpx.get(f"{stack.gateway.url}/instore/callbacks/carts/{cart_key}", headers={"X-Api-Key": API_KEY}, timeout=10)
    assert response.status_code == 200, response.text

    def complete(spans: list[dict[str, Any]]) -> bool:
        """Every kind of span this lookup makes has arrived (the gateway's server span ends, so is exported, last)."""
        seen = {(s["service"], s["kind"]) for s in spans}
        return {
            ("gateway", "SERVER"),
            ("gateway", "PRODUCER"),
            ("cart-mapping", "CONSUMER"),
            ("cart-mapping", "CLIENT"),
            ("cart-mapping", "PRODUCER"),
        } <= seen and any(
            s["service"] == "cart-mapping"
            and s["attributes"].get("messaging.destination.name") == REPLIES
            and s["attributes"].get("messaging.operation") == "publish"
            for s in spans
        )

    deadline = time.monotonic() + EXPORT_DEADLINE_S
    spans = _spans(stack)
    while not complete(spans):  # a bounded poll of the receiver: the services export every 200 ms
        assert time.monotonic() < deadline, (
            f"the spans of the lookup did not all arrive within {EXPORT_DEADLINE_S} s; held:\n{_describe(spans)}\n"
            f"{stack.gateway.process.describe(10)}\n{stack.cart_mapping.process.describe(10)}"
        )
        time.sleep(0.1)
        spans = _spans(stack)
    return Lookup(cart_key, spans)


def test_one_cart_callback_is_one_trace_across_kafka(stack: Stack, lookup: Lookup) -> None:
    spans = lookup.spans
    # exactly one trace: the consumer continued the gateway's trace rather than starting one of its own
    assert {s["traceId"] for s in spans} == {spans[0]["traceId"]}, f"more than one trace:\n{_describe(spans)}"
    by_id = {s["spanId"]: s for s in spans}
    assert len(by_id) == len(spans)
    roots = [s for s in spans if not s["parentSpanId"]]
    assert len(roots) == 1, f"not one root:\n{_describe(spans)}"

    server = _one(spans, "the gateway's HTTP server span", service="gateway", kind="SERVER")
    assert server is roots[0] and "/instore/callbacks/carts/" in server["name"]
    request_publish = _one(
        spans,
        "the gateway's publish of the request",
        service="gateway",
        kind="PRODUCER",
        attr_messaging_destination_name=REQUESTS,
    )
    assert request_publish["parentSpanId"] == server["spanId"]
    consume = _one(
        spans,
        "cart-mapping's processing of the request",
        service="cart-mapping",
        kind="CONSUMER",
        attr_messaging_operation="process",
    )
    assert consume["parentSpanId"] == request_publish["spanId"]  # W3C traceparent across Kafka

    commerce = [s for s in spans if s["service"] == "cart-mapping" and s["kind"] == "CLIENT"]
    assert commerce and all(s["name"].startswith("commercetools ") for s in commerce), _describe(spans)
    assert all(consume["spanId"] in _ancestors(s, by_id) for s in commerce), _describe(spans)
    assert all(s["attributes"].get("http.response.status_code") == 200 for s in commerce), _describe(spans)
    reply = _one(
        spans,
        "cart-mapping's publish of the reply",
        service="cart-mapping",
        kind="PRODUCER",
        attr_messaging_destination_name=REPLIES,
        attr_messaging_operation="publish",
    )
    assert consume["spanId"] in _ancestors(reply, by_id)

    # every span descends from the gateway's server span and starts within it; none failed
    assert all(s is server or server["spanId"] in _ancestors(s, by_id) for s in spans), _describe(spans)
    assert all(server["startTimeUnixNano"] <= s["startTimeUnixNano"] <= server["endTimeUnixNano"] for s in spans)
    assert all(s["statusCode"] != "ERROR" for s in spans), _describe(spans)

    (summary,) = httpx.get(stack.fakes.url + "/otlp/traces", timeout=5).json()
    assert summary["traceId"] == server["traceId"] and summary["rootService"] == "gateway"
    assert summary["services"] == ["cart-mapping", "gateway"] and summary["spanCount"] == len(spans)


def test_span_names_and_routes_carry_no_cart_id(lookup: Lookup) -> None:
    """Span names are templates (the route, the Composable Commerce operation), like the metrics' labels: a tracing
    backend groups spans by name, and a name per cart would be unbounded. ``http.route`` is the route template
    (OpenTelemetry's HTTP semantic conventions), not the path requested.

    Fails while the gateway keeps the Litestar OpenTelemetry plugin's default span details: the plugin wraps the app
    before routing, so its span name and ``http.route`` are the raw path (``GET /instore/callbacks/carts/demo-open-cart``).
    """
    named = [s["name"] for s in lookup.spans if lookup.cart_key in s["name"]]
    assert named == [], f"span names with the cart key {lookup.cart_key!r}: {named}"
    routes = [s["attributes"]["http.route"] for s in lookup.spans if "http.route" in s["attributes"]]
    assert routes and all(lookup.cart_key not in route for route in routes), routes


def test_log_lines_carry_the_trace_id(stack: Stack, lookup: Lookup) -> None:
    """Both services' JSON log lines about the lookup name its trace."""
    trace_id = lookup.spans[0]["traceId"]
    for service in (stack.gateway, stack.cart_mapping):
        wait_until(
            lambda service=service: trace_id in _trace_ids(service.process.output()),
            10,
            f"a {service.process.name} log line with the trace id",
        )


def _trace_ids(output: str) -> set[str]:
    """The ``trace_id`` of every JSON log line of ``output``."""
    return {json.loads(line).get("trace_id") for line in output.splitlines() if line.startswith("{")}
