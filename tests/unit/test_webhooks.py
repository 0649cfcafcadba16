"""Webhook intake: signatures over the raw bytes, size and JSON checks, durable before acknowledged."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Iterator
from typing import Any

import pytest
from litestar.testing import TestClient

from instore_gateway.app import Ports, create_app
from instore_gateway.settings import GatewaySettings
from instore_gateway.vault import InMemoryTokenVault
from instore_shared.contract.instore_webhooks import (
    routing_key,
    signature_valid,
    webhook_id,
)
from instore_shared.kafka.rpc import BrokerUnavailable, NotAcknowledged

SECRET = b"webhook-shared-secret-for-tests"
PROBLEM = "urn:instore-integration:problem:"
BODY = json.dumps(
    {
        "id": "evt-1",
        "type": "payment.completed",
        "cartId": "cart-123",
        "data": {"amount": {"centAmount": 1999, "currencyCode": "EUR"}},
    },
    indent=2,
).encode()


def sign(body: bytes, secret: bytes = SECRET) -> str:
    return hmac.new(secret, body, hashlib.sha256).hexdigest()


class Recorder:
    def __init__(self) -> None:
        self.published: list[dict[str, Any]] = []
        self.fail: Exception | None = None

    async def publish(
        self,
        topic: str,
        key: str | None,
        value: bytes,
        *,
        message_type: str,
        timeout_s: float,
        headers: dict[str, str] | None = None,
    ) -> None:
        if self.fail is not None:
            raise self.fail
        self.published.append({"topic": topic, "key": key, "value": value, "headers": headers or {}})


class Lookups:
    async def lookup(self, *a: Any) -> Any:
        raise AssertionError

    async def ready(self) -> bool:
        return True


@pytest.fixture(params=[True, False], ids=["raw-route", "litestar-route"])
def gateway(request: pytest.FixtureRequest) -> Iterator[tuple[Recorder, TestClient[Any]]]:
    """The gateway both ways the route is served: below Litestar (the default) and by Litestar (tracing on)."""
    events = Recorder()
    settings = GatewaySettings(
        instore_callback_api_key="k" * 20, instore_webhook_secret=SECRET.decode(), webhook_max_body_bytes=4096
    )
    app = create_app(
        settings,
        Ports(cart_lookups=Lookups(), events=events, vault=InMemoryTokenVault()),  # type: ignore[arg-type]
        raw_routes=request.param,
    )
    with TestClient(app) as client:
        yield events, client


def _post(client: TestClient[Any], body: bytes, headers: dict[str, str]) -> Any:
    return client.post("/instore/webhooks", content=body, headers={"Content-Type": "application/json", **headers})


def _problem(response: Any, status: int, slug: str) -> None:
    assert response.status_code == status, response.text
    assert response.json()["type"] == PROBLEM + slug


@pytest.mark.parametrize(
    "encode",
    [
        lambda b: sign(b),
        lambda b: sign(b).upper(),
        lambda b: "sha256=" + sign(b),
        lambda b: base64.b64encode(hmac.new(SECRET, b, hashlib.sha256).digest()).decode(),
        lambda b: base64.urlsafe_b64encode(hmac.new(SECRET, b, hashlib.sha256).digest()).decode().rstrip("="),
    ],
)
@pytest.mark.parametrize("header", ["X-Signature", "verification-signature"])
def test_signed_webhook_is_published_raw_then_acknowledged(
    gateway: tuple[Recorder, TestClient[Any]], encode: Any, header: str
) -> None:
    events, client = gateway
    response = _post(client, BODY, {header: encode(BODY)})
    assert response.status_code == 202, response.text
    assert response.json() == {"webhookId": "evt-1"}
    (message,) = events.published
    assert message["topic"] == "instore.webhooks.v1" and message["key"] == "cart-123"
    assert message["value"] == BODY  # the bytes as received: whitespace, order and all
    assert message["headers"]["webhook-id"] == "evt-1" and message["headers"]["received-at"].endswith("Z")


@pytest.mark.parametrize(
    "mutate",
    [
        lambda b: b[:-1],  # truncated
        lambda b: json.dumps(json.loads(b)).encode(),  # re-serialised: same JSON, other bytes
        lambda b: b.replace(b"1999", b"1"),  # forged amount
    ],
)
def test_forged_truncated_and_reserialised_bodies_are_refused(gateway: tuple[Recorder, TestClient[Any]], mutate: Any) -> None:
    events, client = gateway
    _problem(_post(client, mutate(BODY), {"X-Signature": sign(BODY)}), 401, "invalid-signature")
    assert events.published == []


@pytest.mark.parametrize(
    "headers", [{}, {"X-Signature": ""}, {"X-Signature": "not-a-signature"}, {"X-Signature": sign(BODY, b"other-secret")}]
)
def test_missing_or_wrong_signature_is_401_and_nothing_published(
    gateway: tuple[Recorder, TestClient[Any]], headers: dict[str, str]
) -> None:
    events, client = gateway
    _problem(_post(client, BODY, headers), 401, "invalid-signature")
    assert events.published == []


def test_signed_but_not_json_is_400(gateway: tuple[Recorder, TestClient[Any]]) -> None:
    events, client = gateway
    body = b"definitely not json"
    _problem(_post(client, body, {"X-Signature": sign(body)}), 400, "not-json")
    assert events.published == []


def test_too_large_is_413(gateway: tuple[Recorder, TestClient[Any]]) -> None:
    events, client = gateway
    body = json.dumps({"pad": "x" * 5000}).encode()
    _problem(_post(client, body, {"X-Signature": sign(body)}), 413, "payload-too-large")
    assert events.published == []


@pytest.mark.parametrize("body", [b"[" * 1500 + b"]" * 1500, b'{"a":' + b"[" * 1200 + b"]" * 1200 + b"}"])
def test_a_body_nested_too_deeply_is_400_not_500(gateway: tuple[Recorder, TestClient[Any]], body: bytes) -> None:
    events, client = gateway
    response = client.post("/instore/webhooks", content=body, headers={"X-Signature": sign(body)})
    _problem(response, 400, "bad-request")
    assert "nested too deeply" in response.json()["detail"]
    assert events.published == []


def test_too_large_without_content_length_is_413(gateway: tuple[Recorder, TestClient[Any]]) -> None:
    """A chunked body (no Content-Length) is counted as it arrives and refused once past the limit."""
    events, client = gateway
    body = json.dumps({"pad": "x" * 5000}).encode()

    def chunks() -> Iterator[bytes]:
        for i in range(0, len(body), 1000):
            yield body[i : i + 1000]

    response = client.post("/instore/webhooks", content=chunks(), headers={"X-Signature": sign(body)})
    _problem(response, 413, "payload-too-large")
    assert events.published == []


def test_problems_carry_instance_correlation_id_and_no_store(gateway: tuple[Recorder, TestClient[Any]]) -> None:
    _events, client = gateway
    response = _post(client, BODY, {"X-Signature": "00"})
    problem = response.json()
    assert response.headers["content-type"] == "application/problem+json"
    assert problem["instance"] == "/instore/webhooks"
    assert problem["correlationId"] == response.headers["x-correlation-id"]
    assert response.headers["cache-control"] == "no-store"


def test_a_bug_in_the_publisher_is_a_500_problem_without_internals(gateway: tuple[Recorder, TestClient[Any]]) -> None:
    events, client = gateway
    events.fail = ZeroDivisionError("secret internals")
    response = _post(client, BODY, {"X-Signature": sign(BODY)})
    _problem(response, 500, "internal-error")
    assert "secret internals" not in response.text and "Traceback" not in response.text


async def test_a_client_gone_mid_body_gets_nothing_published() -> None:
    """The raw route reads the body itself: a disconnect before its end publishes nothing and answers nothing."""
    events = Recorder()
    app = create_app(
        GatewaySettings(instore_callback_api_key="k" * 20, instore_webhook_secret=SECRET.decode()),
        Ports(cart_lookups=Lookups(), events=events, vault=InMemoryTokenVault()),  # type: ignore[arg-type]
        raw_routes=True,
    )
    messages = [{"type": "http.request", "body": BODY[:10], "more_body": True}, {"type": "http.disconnect"}]
    sent: list[Any] = []

    async def receive() -> Any:
        return messages.pop(0)

    async def send(message: Any) -> None:
        sent.append(message)

    async with app.lifespan():  # type: ignore[attr-defined]
        await app(
            {
                "type": "http",
                "method": "POST",
                "path": "/instore/webhooks",
                "raw_path": b"/instore/webhooks",
                "headers": [(b"x-signature", sign(BODY).encode())],
                "query_string": b"",
                "http_version": "1.1",
                "scheme": "http",
                "server": ("t", 80),
                "client": ("c", 1),
                "root_path": "",
                "asgi": {"version": "3.0"},
            },
            receive,
            send,
        )  # type: ignore[arg-type]
    assert events.published == [] and sent == []
    from prometheus_client import REGISTRY

    labels = {"method": "POST", "path": "/instore/webhooks", "app_name": "gateway"}
    assert REGISTRY.get_sample_value("instore_http_requests_total", {**labels, "status_code": "499"})  # never a 200


def test_kafka_down_is_503_not_stored_with_retry_after(gateway: tuple[Recorder, TestClient[Any]]) -> None:
    events, client = gateway
    events.fail = BrokerUnavailable("not connected to Kafka")
    response = _post(client, BODY, {"X-Signature": sign(BODY)})
    _problem(response, 503, "webhook-not-stored")
    assert response.headers["retry-after"] == "5"


def test_a_publish_not_acknowledged_in_time_says_it_may_be_stored(gateway: tuple[Recorder, TestClient[Any]]) -> None:
    """A timeout is not a refusal: the webhook may be in Kafka, so the answer must not say "not stored"."""
    events, client = gateway
    events.fail = NotAcknowledged("publish to instore.webhooks.v1 not acknowledged within 2 s")
    response = _post(client, BODY, {"X-Signature": sign(BODY)})
    _problem(response, 503, "webhook-not-acknowledged")
    assert response.headers["retry-after"] == "5"
    assert "may have been stored" in response.json()["detail"] and "duplicates are safe" in response.json()["detail"]


def test_no_secret_configured_refuses_everything() -> None:
    events = Recorder()
    app = create_app(
        GatewaySettings(instore_callback_api_key="k" * 20),
        Ports(cart_lookups=Lookups(), events=events, vault=InMemoryTokenVault()),
    )  # type: ignore[arg-type]
    with TestClient(app) as client:
        _problem(_post(client, BODY, {"X-Signature": sign(BODY, b"")}), 401, "invalid-signature")
    assert events.published == []


def test_routing_key_and_webhook_id_rules() -> None:
    assert routing_key({"returnCartId": "r-1"}) == "r-1"
    assert routing_key({"data": {"orderNumber": "store-1-000001"}}) == "store-1-000001"
    assert routing_key({"cartId": "bad key with spaces"}) is None
    assert routing_key(["not", "an", "object"]) is None
    assert webhook_id(b"{}", {}) == "sha256:" + hashlib.sha256(b"{}").hexdigest()
    assert webhook_id(b"{}", {"id": "evt-9"}) == "evt-9"
    assert not signature_valid(BODY, sign(BODY), b"")


@pytest.mark.parametrize("body", [b"[1,2]", b'"text"', b"null", b"42"])
def test_json_that_is_not_an_object_is_400(gateway: tuple[Recorder, TestClient[Any]], body: bytes) -> None:
    events, client = gateway
    _problem(_post(client, body, {"X-Signature": sign(body)}), 400, "not-json-object")
    assert events.published == []


@pytest.mark.parametrize(
    "signature",
    [
        lambda b: "@" + base64.b64encode(hmac.new(SECRET, b, hashlib.sha256).digest()).decode(),
        lambda b: (lambda s: s[:10] + " " + s[10:])(base64.b64encode(hmac.new(SECRET, b, hashlib.sha256).digest()).decode()),
        lambda b: sign(b)[:-1],
    ],
)
def test_signatures_with_stray_characters_are_refused(gateway: tuple[Recorder, TestClient[Any]], signature: Any) -> None:
    _events, client = gateway
    _problem(_post(client, BODY, {"X-Signature": signature(BODY)}), 401, "invalid-signature")


def test_a_webhook_kafka_refuses_as_too_large_is_413_not_retried_forever() -> None:
    from instore_shared.kafka.rpc import MessageRejected

    class TooLarge(Recorder):
        async def publish(self, *a: Any, **kw: Any) -> None:
            raise MessageRejected("too large")

    app = create_app(
        GatewaySettings(instore_callback_api_key="k" * 20, instore_webhook_secret=SECRET.decode()),
        Ports(cart_lookups=Lookups(), events=TooLarge(), vault=InMemoryTokenVault()),
    )  # type: ignore[arg-type]
    with TestClient(app) as client:
        response = _post(client, BODY, {"X-Signature": sign(BODY)})
    _problem(response, 413, "payload-too-large")
    assert "retry-after" not in response.headers


def test_a_256_character_cart_key_is_still_the_kafka_key() -> None:
    """commercetools keys reach 256 characters; the consumers accept them, so one cart's webhooks stay on one partition."""
    from instore_shared.contract.instore_webhooks import routing_key

    assert routing_key({"returnCartId": "k" * 256}) == "k" * 256
    assert routing_key({"returnCartId": "k" * 257}) is None


@pytest.mark.parametrize(
    "content_type",
    [None, "", "text/plain", "application/octet-stream", "application/x-www-form-urlencoded", "nonsense;;", "TEXT/JSON"],
)
def test_a_signed_webhook_is_taken_whatever_its_content_type(
    gateway: tuple[Recorder, TestClient[Any]], content_type: str | None
) -> None:
    """The signature authenticates the exact bytes; refusing over a header (415) would drop real webhooks
    (the host app's JSON routes are the ones that check it: test_sessions, test_host_events)."""
    events, client = gateway
    headers = {"X-Signature": sign(BODY)} | ({} if content_type is None else {"Content-Type": content_type})
    response = client.post("/instore/webhooks", content=BODY, headers=headers)
    assert response.status_code == 202, response.text
    assert events.published[0]["value"] == BODY
