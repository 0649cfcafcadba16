"""Payment-extension intake at the gateway: signed, checked, allow-listed, durable in Kafka before 200."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from litestar.testing import TestClient

from instore_devfakes.instore_samples import payment_request
from instore_gateway.app import Ports, create_app
from instore_gateway.settings import GatewaySettings
from instore_gateway.vault import InMemoryTokenVault
from instore_shared.kafka.rpc import BrokerUnavailable, MessageRejected, NotAcknowledged
from instore_shared.url_allowlist import InvalidAllowList, UrlAllowList
from tests.unit.test_webhooks import PROBLEM, SECRET, Lookups, Recorder, sign

ALLOWED = "https://*.instore.example.com,http://127.0.0.1:8090"
STATUS = "https://eu.instore.example.com/payments/r-1/status"
CALLBACK = "https://eu.instore.example.com/payments/r-1/result"


@pytest.fixture(params=[True, False], ids=["raw-route", "litestar-route"])
def gateway(request: pytest.FixtureRequest) -> Iterator[tuple[Recorder, TestClient[Any]]]:
    """The gateway both ways the routes are served: below Litestar (the default) and by Litestar (tracing on)."""
    events = Recorder()
    settings = GatewaySettings(
        instore_callback_api_key="k" * 20,
        instore_webhook_secret=SECRET.decode(),
        payment_extension_allowed_urls=ALLOWED,
        payment_extension_max_body_bytes=2048,
    )
    app = create_app(
        settings,
        Ports(cart_lookups=Lookups(), events=events, vault=InMemoryTokenVault()),  # type: ignore[arg-type]
        raw_routes=request.param,
    )
    with TestClient(app) as client:
        yield events, client


def _body(**extra: Any) -> bytes:
    fields: dict[str, Any] = {"status_url": STATUS, "callback_url": CALLBACK, "payment_id": "pay-1", "cent_amount": 1949}
    fields.update(extra)
    return payment_request("r-1", **fields)


def _post(client: TestClient[Any], path: str, body: bytes, signature: str | None = None) -> Any:
    headers = {"Content-Type": "application/json"}
    headers["X-Signature"] = sign(body) if signature is None else signature
    return client.post(path, content=body, headers=headers)


def _problem(response: Any, status: int, slug: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["type"] == PROBLEM + slug


def test_a_signed_request_is_published_raw_then_answered_200(gateway: tuple[Recorder, TestClient[Any]]) -> None:
    events, client = gateway
    body = _body()
    response = _post(client, "/instore/payment-extensions/bank-card/payment", body)
    assert response.status_code == 200, response.text
    assert response.json() == {"requestId": "r-1", "status": "accepted"}
    (message,) = events.published
    assert message["topic"] == "instore.payment-requests.v1" and message["key"] == "pay-1"
    assert message["value"] == body
    assert message["headers"]["request-id"] == "r-1"
    assert message["headers"]["tender"] == "bank-card" and message["headers"]["action"] == "payment"
    assert message["headers"]["received-at"].endswith("Z")


def test_a_forged_or_missing_signature_is_401_and_nothing_is_published(gateway: tuple[Recorder, TestClient[Any]]) -> None:
    events, client = gateway
    body = _body()
    _problem(_post(client, "/instore/payment-extensions/bank-card/payment", body, sign(body, b"other")), 401, "invalid-signature")
    _problem(_post(client, "/instore/payment-extensions/bank-card/payment", body, ""), 401, "invalid-signature")
    _problem(
        _post(client, "/instore/payment-extensions/prompt-answers", b'{"requestId":"r-1:prompt:1","response":"y"}', "00" * 32),
        401,
        "invalid-signature",
    )
    assert events.published == []


@pytest.mark.parametrize("field", ["statusUrl", "callbackUrl"])
@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data/",  # cloud metadata
        "https://eu.instore.example.com.evil.net/x",  # suffix trick
        "https://evil.net/?u=https://eu.instore.example.com",  # allowed host only in the query
        "https://eu.instore.example.com@evil.net/x",  # user info
        "http://eu.instore.example.com/x",  # http where https is allowed
        "https://eu.instore.example.com:8443/x",  # another port
        "https://instore.example.com/x",  # the wildcard's own domain
        "http://127.0.0.1:8091/x",  # the local simulator's neighbour
        "file:///etc/passwd",
        "https://eu.instore.example.com\\@evil.net/",
    ],
)
def test_a_url_outside_the_allow_list_is_refused_and_nothing_is_published(
    gateway: tuple[Recorder, TestClient[Any]], field: str, url: str
) -> None:
    events, client = gateway
    key = "status_url" if field == "statusUrl" else "callback_url"
    response = _post(client, "/instore/payment-extensions/bank-card/payment", _body(**{key: url}))
    _problem(response, 422, "url-not-allowed")
    assert field in response.json()["detail"]
    assert events.published == []


@pytest.mark.parametrize(
    ("path", "body", "status", "slug"),
    [
        ("/instore/payment-extensions/cash/payment", None, 404, "unknown-extension-action"),
        ("/instore/payment-extensions/bank-card/balance", None, 404, "unknown-extension-action"),
        ("/instore/payment-extensions/bank-card/payment", b"not json", 400, "not-json"),
        ("/instore/payment-extensions/bank-card/payment", b"[1,2]", 422, "invalid-request"),
        ("/instore/payment-extensions/bank-card/payment", json.dumps({"requestId": "r-1"}).encode(), 422, "invalid-request"),
        ("/instore/payment-extensions/bank-card/payment", _body(cent_amount=None), 422, "invalid-request"),
        ("/instore/payment-extensions/bank-card/payment", _body(cent_amount=-5), 422, "invalid-request"),
        ("/instore/payment-extensions/bank-card/payment", _body(cent_amount=0), 422, "invalid-request"),
        ("/instore/payment-extensions/bank-card/payment", _body(currency="eur"), 422, "invalid-request"),
        ("/instore/payment-extensions/bank-card/refund", _body(), 422, "invalid-request"),  # no reference
        ("/instore/payment-extensions/bank-card/payment", _body(requestId="a b"), 422, "invalid-request"),
        ("/instore/payment-extensions/bank-card/payment", _body(captureMode="steal"), 422, "invalid-request"),
        ("/instore/payment-extensions/bank-card/payment", b"{" * 5000, 413, "payload-too-large"),
    ],
)
def test_bad_requests_get_a_problem_and_nothing_is_published(
    gateway: tuple[Recorder, TestClient[Any]], path: str, body: bytes | None, status: int, slug: str
) -> None:
    events, client = gateway
    _problem(_post(client, path, body if body is not None else _body()), status, slug)
    assert events.published == []


@pytest.mark.parametrize(
    ("error", "slug"),
    [
        (NotAcknowledged("late"), "not-acknowledged"),
        (BrokerUnavailable("down"), "not-stored"),
    ],
)
def test_kafka_not_taking_it_is_503_with_retry_after(
    gateway: tuple[Recorder, TestClient[Any]], error: Exception, slug: str
) -> None:
    events, client = gateway
    events.fail = error
    response = _post(client, "/instore/payment-extensions/gift-card/payment", _body())
    _problem(response, 503, slug)
    assert response.headers["retry-after"] == "2"


def test_kafka_refusing_the_size_is_413(gateway: tuple[Recorder, TestClient[Any]]) -> None:
    events, client = gateway
    events.fail = MessageRejected("too large")
    _problem(_post(client, "/instore/payment-extensions/wallet/payment", _body()), 413, "payload-too-large")


def test_a_prompt_answer_is_published_keyed_by_the_prompt(gateway: tuple[Recorder, TestClient[Any]]) -> None:
    events, client = gateway
    body = json.dumps({"requestId": "r-1:prompt:1", "response": "approve"}).encode()
    response = _post(client, "/instore/payment-extensions/prompt-answers", body)
    assert response.status_code == 200, response.text
    (message,) = events.published
    assert message["topic"] == "instore.payment-prompt-answers.v1" and message["key"] == "r-1:prompt:1"
    assert json.loads(message["value"]) == {"requestId": "r-1:prompt:1", "response": "approve"}
    _problem(_post(client, "/instore/payment-extensions/prompt-answers", b'{"requestId":"r-1:prompt:1"}'), 422, "invalid-request")


def test_the_routes_are_in_the_openapi_document(gateway: tuple[Recorder, TestClient[Any]]) -> None:
    _, client = gateway
    paths = client.get("/schema/openapi.json").json()["paths"]
    assert "/instore/payment-extensions/{tender}/{action}" in paths
    assert "/instore/payment-extensions/prompt-answers" in paths


@pytest.mark.parametrize("setting", ["ftp://x.example.com", "https://", "https://a.example.com/path", "nonsense"])
def test_an_allow_list_entry_that_is_not_an_origin_is_refused(setting: str) -> None:
    with pytest.raises(InvalidAllowList):
        UrlAllowList(setting)
    with pytest.raises(ValueError, match=r"not scheme://host"):
        GatewaySettings(instore_callback_api_key="k" * 20, payment_extension_allowed_urls=setting)


def test_allow_list_matching() -> None:
    allowed = UrlAllowList("https://*.example.com,http://127.0.0.1:8090,https://pay.example.org:8443")
    assert allowed.allows("https://a.example.com/x?y=1")
    assert allowed.allows("https://A.B.Example.COM./x")
    assert allowed.allows("http://127.0.0.1:8090/sim/status/1")
    assert allowed.allows("https://pay.example.org:8443/")
    assert not allowed.allows("https://pay.example.org/")
    assert not allowed.allows("https://example.com/")
    assert not allowed.allows("https://aexample.com/")
    assert not allowed.allows("http://127.0.0.1:80/")
    assert not allowed.allows("https://a.example.com:99999/")
    assert not allowed.allows("")
    assert not allowed.allows("https://ｅvil.example.com/")  # a non-ASCII host: IDNA would map it after our check
    assert not allowed.allows("https://a.example.com%2F.evil.net/")
    assert UrlAllowList("http://[::1]:8091").allows("http://[::1]:8091/x")


def test_money_as_commercetools_writes_it_is_accepted(gateway: tuple[Recorder, TestClient[Any]]) -> None:
    events, client = gateway
    body = _body(amount={"type": "centPrecision", "currencyCode": "EUR", "centAmount": 1949, "fractionDigits": 2})
    assert _post(client, "/instore/payment-extensions/bank-card/payment", body).status_code == 200
    assert len(events.published) == 1


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/instore/payment-extensions/bank-card/payment/extra", 404),
        ("/instore/payment-extensions/bank-card/", 404),
        ("/instore/payment-extensions//payment", 400),  # an empty segment is refused at the edge
    ],
)
def test_paths_outside_the_two_routes_are_not_taken(gateway: tuple[Recorder, TestClient[Any]], path: str, status: int) -> None:
    events, client = gateway
    response = _post(client, path, _body())
    assert response.status_code == status and response.headers["content-type"] == "application/problem+json"
    assert events.published == []


def test_an_oversized_prompt_answer_is_413(gateway: tuple[Recorder, TestClient[Any]]) -> None:
    events, client = gateway
    _problem(_post(client, "/instore/payment-extensions/prompt-answers", b"{" * 5000), 413, "payload-too-large")
    assert events.published == []


def test_requests_are_counted_by_tender_action_and_outcome(gateway: tuple[Recorder, TestClient[Any]]) -> None:
    from prometheus_client import REGISTRY

    _events, client = gateway

    def count(tender: str, action: str, outcome: str) -> float:
        return (
            REGISTRY.get_sample_value(
                "instore_payment_extension_requests_total", {"tender": tender, "action": action, "outcome": outcome}
            )
            or 0.0
        )

    before = (
        count("wallet", "payment", "accepted"),
        count("unknown", "unknown", "unknown-extension-action"),
        count("wallet", "payment", "payload-too-large"),
    )
    assert _post(client, "/instore/payment-extensions/wallet/payment", _body()).status_code == 200
    assert _post(client, "/instore/payment-extensions/cash/steal", _body()).status_code == 404
    assert _post(client, "/instore/payment-extensions/wallet/payment", b"{" * 5000).status_code == 413
    after = (
        count("wallet", "payment", "accepted"),
        count("unknown", "unknown", "unknown-extension-action"),
        count("wallet", "payment", "payload-too-large"),
    )
    assert after == (before[0] + 1, before[1] + 1, before[2] + 1)


@pytest.mark.parametrize("raw", [True, False], ids=["raw-route", "litestar-route"])
def test_a_body_nested_too_deeply_is_400_not_500(raw: bool) -> None:
    events = Recorder()
    settings = GatewaySettings(
        instore_callback_api_key="k" * 20,
        instore_webhook_secret=SECRET.decode(),
        payment_extension_allowed_urls=ALLOWED,
        payment_extension_max_body_bytes=8192,
    )
    app = create_app(
        settings,
        Ports(cart_lookups=Lookups(), events=events, vault=InMemoryTokenVault()),  # type: ignore[arg-type]
        raw_routes=raw,
    )
    body = _body()[:-1] + b',"x":' + b"[" * 1500 + b"]" * 1500 + b"}"
    with TestClient(app) as client:
        _problem(_post(client, "/instore/payment-extensions/bank-card/payment", body), 400, "bad-request")
    assert events.published == []


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/octet-stream"])
@pytest.mark.parametrize("path", ["/instore/payment-extensions/bank-card/payment", "/instore/payment-extensions/prompt-answers"])
def test_a_signed_request_is_taken_whatever_its_content_type(
    gateway: tuple[Recorder, TestClient[Any]], path: str, content_type: str | None
) -> None:
    """Signed like webhooks: the signature covers the bytes, the Content-Type is not checked (no 415)."""
    events, client = gateway
    body = _body() if path.endswith("/payment") else b'{"requestId": "r-1:prompt:1", "response": "approve"}'
    headers = {"X-Signature": sign(body)} | ({} if content_type is None else {"Content-Type": content_type})
    response = client.post(path, content=body, headers=headers)
    assert response.status_code == 200, response.text
    assert len(events.published) == 1
