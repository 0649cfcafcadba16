"""The dev fakes' OTLP/HTTP trace receiver: what the OpenTelemetry SDK's own OTLP exporter sends is kept and shown.

The exporter tests run the app under a real uvicorn (the same server configuration as
``python -m instore_devfakes``) on a free port in a thread, since the exporter speaks real HTTP.
"""

from __future__ import annotations

import gzip
import threading
import zlib
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import uvicorn
from litestar.testing import TestClient
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest, ExportTraceServiceResponse
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource as ProtoResource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from instore_devfakes.app import SigningKey, create_app
from instore_devfakes.otlp import SpanStore
from instore_devfakes.settings import DevFakesSettings
from instore_shared.service import http_config
from tests.support.processes import free_port, wait_until

PROBLEM = "urn:instore-integration:problem:"
MAX_BODY = 64 * 1024


@pytest.fixture(scope="module")
def signing_key() -> SigningKey:
    return SigningKey.generate()


@pytest.fixture(scope="module")
def receiver(signing_key: SigningKey) -> Iterator[str]:
    """The dev fakes app under uvicorn on a free port (bodies up to :data:`MAX_BODY`); yields its base URL."""
    port = free_port()
    settings = DevFakesSettings(http_port=port, otlp_max_body_bytes=MAX_BODY)
    server = uvicorn.Server(http_config(create_app(settings, key=signing_key), "127.0.0.1", port))
    thread = threading.Thread(target=server.run, name="devfakes-otlp", daemon=True)
    thread.start()
    wait_until(lambda: server.started or not thread.is_alive(), 30, "the dev fakes to serve")
    assert server.started, "uvicorn did not start"
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(15)


@pytest.fixture
def url(receiver: str) -> str:
    """The receiver's base URL, holding no span."""
    assert httpx.delete(receiver + "/otlp/spans", timeout=5).status_code == 200
    return receiver


@pytest.fixture
def client(signing_key: SigningKey) -> Iterator[TestClient[Any]]:
    with TestClient(create_app(DevFakesSettings(otlp_max_body_bytes=MAX_BODY), key=signing_key)) as c:
        yield c


def _provider(url: str, service: str, **exporter: Any) -> TracerProvider:
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=url + "/v1/traces", **exporter)))
    return provider


def _spans(url: str, trace_id: str) -> list[dict[str, Any]]:
    response = httpx.get(url + "/otlp/spans", params={"traceId": trace_id}, timeout=5)
    assert response.status_code == 200, response.text
    return list(response.json())


def _assert_problem(response: httpx.Response, status: int, slug: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert body["type"] == PROBLEM + slug and body["status"] == status and body["detail"]
    assert "Traceback" not in response.text
    return dict(body)


# -- what the SDK's OTLP/HTTP exporter sends ----------------------------------------------
def test_the_sdk_exporter_delivers_a_parent_and_its_child(url: str) -> None:
    provider = _provider(url, "test-service")
    tracer = provider.get_tracer("test.scope")
    with tracer.start_as_current_span("GET /carts/{id}", kind=SpanKind.SERVER) as parent:
        parent.set_attribute("http.route", "/carts/{id}")
        with tracer.start_as_current_span("commerce get_cart", kind=SpanKind.CLIENT) as child:
            child.set_attributes({"http.response.status_code": 404, "retried": False, "share": 0.5, "tags": ["a", "b"]})
            child.set_status(StatusCode.ERROR, "not found")
            child.add_event("answer", {"bytes": 12})
    provider.shutdown()
    trace_id = format(parent.get_span_context().trace_id, "032x")

    spans = _spans(url, trace_id)
    assert [s["name"] for s in spans] == ["GET /carts/{id}", "commerce get_cart"]  # oldest start first
    got_parent, got_child = spans
    assert got_parent["spanId"] == format(parent.get_span_context().span_id, "016x")
    assert got_parent["parentSpanId"] == ""
    assert got_child["spanId"] == format(child.get_span_context().span_id, "016x")
    assert got_child["parentSpanId"] == got_parent["spanId"]
    assert {s["traceId"] for s in spans} == {trace_id}
    assert {s["service"] for s in spans} == {"test-service"} and {s["scope"] for s in spans} == {"test.scope"}
    assert (got_parent["kind"], got_child["kind"]) == ("SERVER", "CLIENT")
    assert got_parent["attributes"] == {"http.route": "/carts/{id}"}
    assert got_child["attributes"] == {"http.response.status_code": 404, "retried": False, "share": 0.5, "tags": ["a", "b"]}
    assert (got_child["statusCode"], got_child["statusMessage"]) == ("ERROR", "not found")
    assert got_parent["statusCode"] == "UNSET"
    assert [(e["name"], e["attributes"]) for e in got_child["events"]] == [("answer", {"bytes": 12})]
    assert (got_parent["startTimeUnixNano"], got_parent["endTimeUnixNano"]) == (parent.start_time, parent.end_time)
    assert got_parent["durationMs"] == pytest.approx((parent.end_time - parent.start_time) / 1e6)  # type: ignore[operator]
    assert (
        got_parent["startTimeUnixNano"]
        <= got_child["startTimeUnixNano"]
        <= got_child["endTimeUnixNano"]
        <= got_parent["endTimeUnixNano"]
    )

    (summary,) = [t for t in httpx.get(url + "/otlp/traces", timeout=5).json() if t["traceId"] == trace_id]
    assert summary == {
        "traceId": trace_id,
        "rootName": "GET /carts/{id}",
        "rootService": "test-service",
        "services": ["test-service"],
        "spanCount": 2,
        "errorCount": 1,
        "startTimeUnixNano": parent.start_time,
        "durationMs": got_parent["durationMs"],
    }


def test_a_trace_across_two_services_is_one_trace(url: str) -> None:
    """What W3C traceparent carries across Kafka: the consumer's span is the producer's child, in another service."""
    producer_side, consumer_side = _provider(url, "gateway"), _provider(url, "cart-mapping")
    headers: dict[str, str] = {}
    with producer_side.get_tracer("t").start_as_current_span("publish", kind=SpanKind.PRODUCER) as publish:
        TraceContextTextMapPropagator().inject(headers)
    with consumer_side.get_tracer("t").start_as_current_span(
        "process", kind=SpanKind.CONSUMER, context=TraceContextTextMapPropagator().extract(headers)
    ):
        pass
    producer_side.shutdown()
    consumer_side.shutdown()
    trace_id = format(publish.get_span_context().trace_id, "032x")

    spans = {s["service"]: s for s in _spans(url, trace_id)}
    assert spans["cart-mapping"]["parentSpanId"] == spans["gateway"]["spanId"]
    assert (spans["gateway"]["kind"], spans["cart-mapping"]["kind"]) == ("PRODUCER", "CONSUMER")
    (summary,) = [t for t in httpx.get(url + "/otlp/traces", timeout=5).json() if t["traceId"] == trace_id]
    assert summary["services"] == ["cart-mapping", "gateway"] and summary["rootService"] == "gateway"


def _recorded(n: int) -> list[ReadableSpan]:
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "batch"}))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    for i in range(n):
        with provider.get_tracer("t").start_as_current_span(f"span-{i}"):
            pass
    return list(memory.get_finished_spans())


@pytest.mark.parametrize("compression", [Compression.Gzip, Compression.Deflate, Compression.NoCompression])
def test_the_exporter_compressed_or_not_is_answered_success(url: str, compression: Compression) -> None:
    spans = _recorded(20)
    exporter = OTLPSpanExporter(endpoint=url + "/v1/traces", compression=compression)
    assert exporter.export(spans) is SpanExportResult.SUCCESS
    exporter.shutdown()
    held = httpx.get(url + "/otlp/spans", params={"service": "batch"}, timeout=5).json()
    assert sorted(s["name"] for s in held) == sorted(f"span-{i}" for i in range(20))


def test_the_answer_is_an_empty_export_response(url: str) -> None:
    body = _request([("a" * 32, "b" * 16, "", "one")]).SerializeToString()
    response = httpx.post(url + "/v1/traces", content=body, headers={"Content-Type": "application/x-protobuf"})
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/x-protobuf"
    answer = ExportTraceServiceResponse.FromString(response.content)
    assert answer == ExportTraceServiceResponse() and not answer.HasField("partial_success")


# -- bad bodies ---------------------------------------------------------------------------
def _post(url: str, body: Any, content_type: str = "application/x-protobuf", **headers: str) -> httpx.Response:
    return httpx.post(url + "/v1/traces", content=body, headers={"Content-Type": content_type, **headers}, timeout=10)


@pytest.mark.parametrize("body", [b"not a protobuf", b"\xff" * 64, b"\x0a\xff\xff\xff\xff\x0f", b"\x0a\x05abc"])
def test_garbage_is_400(url: str, body: bytes) -> None:
    _assert_problem(_post(url, body), 400, "invalid-otlp-body")
    assert httpx.get(url + "/healthz").status_code == 200


def test_a_body_over_the_limit_is_413_with_or_without_a_length(url: str) -> None:
    _assert_problem(_post(url, b"\x00" * (MAX_BODY + 1)), 413, "payload-too-large")

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it streams in
        for _ in range(20):
            yield b"\x00" * 8192

    _assert_problem(_post(url, chunks()), 413, "payload-too-large")
    assert httpx.get(url + "/healthz").status_code == 200


def test_a_body_at_the_limit_is_read() -> None:
    """A valid request padded to exactly the limit with an unknown field is taken (the bound is not off by one)."""
    request = _request([("a" * 32, "b" * 16, "", "padded")])
    body = request.SerializeToString()
    pad = MAX_BODY - len(body) - 4  # field 15, length-delimited, 3-byte length
    padded = body + b"\x7a" + _varint(pad) + b"p" * pad
    assert len(padded) == MAX_BODY
    with TestClient(create_app(DevFakesSettings(otlp_max_body_bytes=MAX_BODY))) as c:
        response = c.post("/v1/traces", content=padded, headers={"Content-Type": "application/x-protobuf"})
        assert response.status_code == 200, response.text
        assert [s["name"] for s in c.get("/otlp/spans").json()] == ["padded"]


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        out.append((n & 0x7F) | (0x80 if n > 0x7F else 0))
        n >>= 7
        if not n:
            return bytes(out)


def test_a_small_gzip_body_that_inflates_beyond_the_limit_is_413(url: str) -> None:
    bomb = gzip.compress(b"\x00" * (50 * MAX_BODY))
    assert len(bomb) < MAX_BODY
    _assert_problem(_post(url, bomb, **{"Content-Encoding": "gzip"}), 413, "payload-too-large")


@pytest.mark.parametrize(
    ("encoding", "body"),
    [
        ("gzip", b"not gzip at all"),
        ("gzip", gzip.compress(b"\x0a\x00" * 10)[:-6]),  # truncated
        ("deflate", b"not zlib"),
    ],
)
def test_a_body_that_does_not_decompress_is_400(url: str, encoding: str, body: bytes) -> None:
    _assert_problem(_post(url, body, **{"Content-Encoding": encoding}), 400, "invalid-otlp-body")


def test_other_media_types_and_encodings_are_415(url: str) -> None:
    _assert_problem(_post(url, b"{}", content_type="text/plain"), 415, "unsupported-media-type")
    _assert_problem(_post(url, b"", **{"Content-Encoding": "br"}), 415, "unsupported-media-type")


def test_spans_with_unusable_ids_are_refused_the_rest_kept(url: str) -> None:
    request = _request(
        [
            ("a" * 32, "b" * 16, "", "good"),
            ("abcd", "b" * 16, "", "short-trace"),
            ("a" * 32, "", "", "no-span-id"),
            ("a" * 32, "c" * 16, "dd", "odd-parent"),
            ("0" * 32, "e" * 16, "", "zero-trace"),
        ]
    )
    response = _post(url, request.SerializeToString())
    assert response.status_code == 200
    answer = ExportTraceServiceResponse.FromString(response.content)
    assert answer.partial_success.rejected_spans == 4 and answer.partial_success.error_message
    assert [s["name"] for s in _spans(url, "a" * 32)] == ["good"]


# -- OTLP/JSON ----------------------------------------------------------------------------
def _json_request(trace_id: str, span_id: str, parent: str = "", name: str = "json-span") -> dict[str, Any]:
    return {
        "resourceSpans": [
            {
                "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "json-service"}}]},
                "scopeSpans": [
                    {
                        "scope": {"name": "json.scope"},
                        "spans": [
                            {
                                "traceId": trace_id,
                                "spanId": span_id,
                                "parentSpanId": parent,
                                "name": name,
                                "kind": 4,
                                "startTimeUnixNano": "1700000000000000000",
                                "endTimeUnixNano": "1700000000250000000",
                                "attributes": [
                                    {"key": "messaging.system", "value": {"stringValue": "kafka"}},
                                    {"key": "messaging.batch.message_count", "value": {"intValue": "3"}},
                                ],
                                "links": [{"traceId": "1" * 32, "spanId": "2" * 16}],
                                "status": {"code": 1},
                            }
                        ],
                    }
                ],
            }
        ]
    }


def test_otlp_json_with_hex_ids_is_taken(url: str) -> None:
    trace_id = "5B8EFFF798038103D269B633813FC60C"  # hex, any case
    response = httpx.post(url + "/v1/traces", json=_json_request(trace_id, "EEE19B7EC3C1B174", "EEE19B7EC3C1B173"))
    assert response.status_code == 200 and response.json() == {}
    (span,) = _spans(url, trace_id.lower())
    assert (span["spanId"], span["parentSpanId"], span["kind"], span["service"], span["scope"]) == (
        "eee19b7ec3c1b174",
        "eee19b7ec3c1b173",
        "PRODUCER",
        "json-service",
        "json.scope",
    )
    assert span["attributes"] == {"messaging.system": "kafka", "messaging.batch.message_count": 3}
    assert (span["startTimeUnixNano"], span["durationMs"], span["statusCode"]) == (1700000000000000000, 250.0, "OK")
    assert span["links"] == [{"traceId": "1" * 32, "spanId": "2" * 16, "attributes": {}}]


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[1, 2]",
        b'{"resourceSpans": 5}',
        b"[" * 50_000,
        b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "zz"}]}]}]}',
        b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"name": 5}]}]}]}',
    ],
)
def test_bad_json_is_400(url: str, body: bytes) -> None:
    _assert_problem(_post(url, body, content_type="application/json"), 400, "invalid-otlp-body")


# -- the store and its views --------------------------------------------------------------
def _request(spans: list[tuple[str, str, str, str]], service: str = "svc", start: int = 1_000) -> ExportTraceServiceRequest:
    """An export request of ``(trace id hex, span id hex, parent span id hex, name)`` spans, 1 ms each, 1 ms apart."""
    return ExportTraceServiceRequest(
        resource_spans=[
            ResourceSpans(
                resource=ProtoResource(attributes=[KeyValue(key="service.name", value=AnyValue(string_value=service))]),
                scope_spans=[
                    ScopeSpans(
                        spans=[
                            Span(
                                trace_id=bytes.fromhex(t),
                                span_id=bytes.fromhex(s),
                                parent_span_id=bytes.fromhex(p),
                                name=n,
                                kind=Span.SPAN_KIND_INTERNAL,
                                start_time_unix_nano=start + i * 1_000_000,
                                end_time_unix_nano=start + (i + 1) * 1_000_000,
                            )
                            for i, (t, s, p, n) in enumerate(spans)
                        ]
                    )
                ],
            )
        ]
    )


def _send(client: TestClient[Any], request: ExportTraceServiceRequest) -> None:
    response = client.post("/v1/traces", content=request.SerializeToString(), headers={"Content-Type": "application/x-protobuf"})
    assert response.status_code == 200, response.text


def test_only_the_last_spans_are_kept(signing_key: SigningKey) -> None:
    with TestClient(create_app(DevFakesSettings(otlp_max_spans=3), key=signing_key)) as c:
        _send(c, _request([("a" * 32, f"{i:016x}", "", f"s{i}") for i in range(1, 6)]))
        assert [s["name"] for s in c.get("/otlp/spans").json()] == ["s3", "s4", "s5"]


def test_a_span_sent_twice_is_held_once() -> None:
    store = SpanStore(10)
    with TestClient(create_app(DevFakesSettings(), spans=store)) as c:
        request = _request([("a" * 32, "b" * 16, "", "once")])
        _send(c, request)
        _send(c, request)  # an exporter's retry
        assert len(store) == 1 and c.get("/otlp/traces").json()[0]["spanCount"] == 1


def test_traces_are_summarised_newest_first_and_cleared(client: TestClient[Any]) -> None:
    _send(
        client,
        _request(
            [("1" * 32, "a" * 16, "", "old-root"), ("1" * 32, "b" * 16, "a" * 16, "old-child")], service="gateway", start=1_000
        ),
    )
    _send(client, _request([("1" * 32, "c" * 16, "b" * 16, "old-grandchild")], service="cart-mapping", start=1_500_000))
    _send(client, _request([("2" * 32, "d" * 16, "f" * 16, "orphan")], start=9_000_000))  # its root not received yet
    traces = client.get("/otlp/traces").json()
    assert [t["traceId"] for t in traces] == ["2" * 32, "1" * 32]
    assert traces[0] | {"startTimeUnixNano": 0} == {
        "traceId": "2" * 32,
        "rootName": None,
        "rootService": None,
        "services": ["svc"],
        "spanCount": 1,
        "errorCount": 0,
        "startTimeUnixNano": 0,
        "durationMs": 1.0,
    }
    assert traces[1] == {
        "traceId": "1" * 32,
        "rootName": "old-root",
        "rootService": "gateway",
        "services": ["cart-mapping", "gateway"],
        "spanCount": 3,
        "errorCount": 0,
        "startTimeUnixNano": 1_000,
        "durationMs": (1_500_000 + 1_000_000 - 1_000) / 1e6,
    }
    assert [t["traceId"] for t in client.get("/otlp/traces", params={"limit": 1}).json()] == ["2" * 32]
    assert client.get("/otlp/traces", params={"limit": 0}).status_code == 400
    assert [s["name"] for s in client.get("/otlp/spans", params={"traceId": "1" * 32}).json()] == [
        "old-root",
        "old-child",
        "old-grandchild",
    ]
    assert [s["name"] for s in client.get("/otlp/spans", params={"service": "cart-mapping"}).json()] == ["old-grandchild"]
    assert client.get("/otlp/spans", params={"traceId": "9" * 32}).json() == []

    assert client.delete("/otlp/spans").json() == {"deleted": 4}
    assert client.get("/otlp/spans").json() == [] and client.get("/otlp/traces").json() == []


def test_the_html_view_lists_traces_and_shows_a_tree(client: TestClient[Any]) -> None:
    _send(
        client,
        _request(
            [
                ("1" * 32, "a" * 16, "", "root <b>"),
                ("1" * 32, "b" * 16, "a" * 16, "child"),
                ("1" * 32, "c" * 16, "c" * 16, "its-own-parent"),
            ]
        ),
    )
    page = client.get("/otlp")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "1" * 32 in page.text and "root &lt;b&gt;" in page.text and "<b>" not in page.text
    tree = client.get("/otlp", params={"traceId": "1" * 32}).text
    assert tree.index("root &lt;b&gt;") < tree.index("child") and "its-own-parent" in tree
    assert "not found" in client.get("/otlp", params={"traceId": "9" * 32}).text.lower()


def test_settings_of_the_receiver(monkeypatch: pytest.MonkeyPatch) -> None:
    s = DevFakesSettings()
    assert (s.otlp_max_spans, s.otlp_max_body_bytes) == (10_000, 4 * 1024 * 1024)
    monkeypatch.setenv("DEVFAKES_OTLP_MAX_SPANS", "50")
    monkeypatch.setenv("DEVFAKES_OTLP_MAX_BODY_BYTES", "2048")
    assert (DevFakesSettings().otlp_max_spans, DevFakesSettings().otlp_max_body_bytes) == (50, 2048)


def test_deflate_and_gzip_bodies_built_by_hand_are_taken(client: TestClient[Any]) -> None:
    body = _request([("3" * 32, "a" * 16, "", "zipped")]).SerializeToString()
    for encoding, data in (("gzip", gzip.compress(body)), ("deflate", zlib.compress(body)), ("identity", body)):
        response = client.post(
            "/v1/traces",
            content=data,
            headers={"Content-Type": "application/x-protobuf; charset=binary", "Content-Encoding": encoding},
        )
        assert response.status_code == 200, response.text
    assert [s["name"] for s in client.get("/otlp/spans").json()] == ["zipped"]  # the same span three times: held once
