"""The cart callbacks in the gateway, both ways they are served (below Litestar by default, by Litestar with tracing on)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import msgspec
import pytest
from litestar.testing import TestClient
from prometheus_client import REGISTRY

from instore_gateway.app import Ports, create_app
from instore_gateway.settings import GatewaySettings
from instore_gateway.vault import InMemoryTokenVault
from instore_shared.contract.cart_lookup import CartKind, CartLookupReply, LookupStatus
from instore_shared.kafka.rpc import BrokerUnavailable, ReplyTimeout

KEY = "callback-api-key-for-tests-0123456789"
PROBLEM = "urn:instore-integration:problem:"
CART = b'{"id":"c-1","version":3,"cartState":"Active","totalPrice":{"centAmount":1999,"currencyCode":"EUR"}}'


class Lookups:
    """Answers what ``answer`` says and records what was asked."""

    def __init__(self) -> None:
        self.answer: Any = CartLookupReply(status=LookupStatus.FOUND, cart=msgspec.Raw(CART))
        self.asked: list[tuple[CartKind, str, str]] = []

    async def lookup(self, kind: CartKind, cart_ref: str, correlation_id: str) -> CartLookupReply:
        self.asked.append((kind, cart_ref, correlation_id))
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer

    async def ready(self) -> bool:
        return True


class Events:
    async def publish(self, *a: Any, **kw: Any) -> None:
        raise AssertionError("nothing is published by a callback")


@pytest.fixture(params=[True, False], ids=["raw-route", "litestar-route"])
def gateway(request: pytest.FixtureRequest) -> Iterator[tuple[Lookups, TestClient[Any]]]:
    lookups = Lookups()
    app = create_app(
        GatewaySettings(instore_callback_api_key=KEY),
        Ports(cart_lookups=lookups, events=Events(), vault=InMemoryTokenVault()),  # type: ignore[arg-type]
        raw_routes=request.param,
    )
    with TestClient(app) as client:
        yield lookups, client


def _problem(response: Any, status: int, slug: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    assert body["type"] == PROBLEM + slug and body["correlationId"] == response.headers["x-correlation-id"]
    assert "Traceback" not in response.text
    return body


@pytest.mark.parametrize(
    ("path", "kind"), [("/instore/callbacks/carts/c-1", CartKind.SALE), ("/instore/callbacks/return-carts/c-1", CartKind.RETURN)]
)
def test_a_found_cart_is_answered_as_cart_mapping_returned_it(
    gateway: tuple[Lookups, TestClient[Any]], path: str, kind: CartKind
) -> None:
    lookups, client = gateway
    response = client.get(path, headers={"X-Api-Key": KEY + " "})  # trailing whitespace is not part of the key
    assert response.status_code == 200 and response.content == CART
    assert response.headers["content-type"] == "application/json"
    assert response.headers["cache-control"] == "no-store"
    assert lookups.asked == [(kind, "c-1", response.headers["x-correlation-id"])]


@pytest.mark.parametrize(
    "headers", [{}, {"X-Api-Key": "wrong"}, {"X-Api-Key": KEY[:-1]}, [("X-Api-Key", KEY), ("X-Api-Key", KEY)]]
)
def test_without_exactly_the_key_it_is_401_and_nothing_is_asked(gateway: tuple[Lookups, TestClient[Any]], headers: Any) -> None:
    lookups, client = gateway
    response = client.get("/instore/callbacks/carts/c-1", headers=headers)
    _problem(response, 401, "unauthorized")
    assert response.headers["www-authenticate"] == 'ApiKey header="X-Api-Key"'
    assert lookups.asked == []


@pytest.mark.parametrize("cart_id", ["a", "k" * 257, "a.b", "caf%C3%A9", "a%20b"])
def test_a_cart_id_that_is_no_id_or_key_is_400(gateway: tuple[Lookups, TestClient[Any]], cart_id: str) -> None:
    lookups, client = gateway
    _problem(client.get(f"/instore/callbacks/carts/{cart_id}", headers={"X-Api-Key": KEY}), 400, "invalid-cart-id")
    assert lookups.asked == []


@pytest.mark.parametrize(
    ("answer", "status", "slug"),
    [
        (CartLookupReply(status=LookupStatus.NOT_FOUND, reason="cart-not-found"), 404, "cart-not-found"),
        (CartLookupReply(status=LookupStatus.CONFLICT, reason="cart-not-active", detail="Ordered"), 409, "cart-not-active"),
        (CartLookupReply(status=LookupStatus.INVALID, reason="cart-empty"), 422, "cart-empty"),
        (CartLookupReply(status=LookupStatus.UPSTREAM_ERROR, reason="commerce-unavailable"), 502, "commerce-unavailable"),
        (BrokerUnavailable("down"), 503, "broker-unavailable"),
        (ReplyTimeout("late"), 504, "cart-lookup-timeout"),
        (msgspec.DecodeError("bad"), 502, "bad-reply"),
    ],
)
def test_refusals_and_failures_are_problems(
    gateway: tuple[Lookups, TestClient[Any]], answer: Any, status: int, slug: str
) -> None:
    lookups, client = gateway
    lookups.answer = answer
    before = REGISTRY.get_sample_value("instore_cart_lookups_total", {"kind": "sale", "outcome": str(status)}) or 0
    body = _problem(client.get("/instore/callbacks/carts/c-1", headers={"X-Api-Key": KEY}), status, slug)
    assert body["instance"] == "/instore/callbacks/carts/c-1"
    if isinstance(answer, CartLookupReply):
        assert body.get("reason") == answer.reason
    after = REGISTRY.get_sample_value("instore_cart_lookups_total", {"kind": "sale", "outcome": str(status)})
    assert after == before + 1


def test_a_bug_in_the_lookup_is_a_500_problem_without_internals(gateway: tuple[Lookups, TestClient[Any]]) -> None:
    lookups, client = gateway
    lookups.answer = ZeroDivisionError("secret internals")
    response = client.get("/instore/callbacks/carts/c-1", headers={"X-Api-Key": KEY})
    _problem(response, 500, "internal-error")
    assert "secret internals" not in response.text


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/instore/callbacks/carts/c-1/extra", 404),
        ("GET", "/instore/callbacks/carts/", 404),
        ("POST", "/instore/callbacks/carts/c-1", 405),
        ("GET", "/instore/webhooks", 405),
    ],
)
def test_other_paths_and_methods_are_litestar_s_answers(
    gateway: tuple[Lookups, TestClient[Any]], method: str, path: str, status: int
) -> None:
    lookups, client = gateway
    response = client.request(method, path, headers={"X-Api-Key": KEY})
    assert response.status_code == status and response.headers["content-type"] == "application/problem+json"
    assert lookups.asked == []


def test_http_metrics_are_labelled_with_the_route_template(gateway: tuple[Lookups, TestClient[Any]]) -> None:
    _lookups, client = gateway
    labels = {"method": "GET", "path": "/instore/callbacks/return-carts/{cartId}", "status_code": "200", "app_name": "gateway"}
    before = REGISTRY.get_sample_value("instore_http_requests_total", labels) or 0
    assert client.get("/instore/callbacks/return-carts/some-cart-key", headers={"X-Api-Key": KEY}).status_code == 200
    assert REGISTRY.get_sample_value("instore_http_requests_total", labels) == before + 1


@pytest.mark.parametrize(("access_log", "logged_statuses"), [("all", [200, 401]), ("errors", [401])])
def test_the_access_log_writes_every_request_or_only_errors(access_log: str, logged_statuses: list[int]) -> None:
    from structlog.testing import capture_logs

    app = create_app(
        GatewaySettings(instore_callback_api_key=KEY, gateway_access_log=access_log),  # type: ignore[arg-type]
        Ports(cart_lookups=Lookups(), events=Events(), vault=InMemoryTokenVault()),
    )  # type: ignore[arg-type]
    with TestClient(app) as client, capture_logs() as logs:
        assert client.get("/instore/callbacks/carts/c-1", headers={"X-Api-Key": KEY}).status_code == 200
        assert client.get("/instore/callbacks/carts/c-1").status_code == 401
    assert [line["status"] for line in logs if line["event"] == "http.request"] == logged_statuses


@pytest.mark.parametrize("raw", [True, False], ids=["raw-route", "litestar-route"])
def test_cors_headers_only_on_the_host_app_routes(raw: bool) -> None:
    """Litestar's CORS config is app-wide; the callbacks (and webhooks, payment extensions) are server-to-server."""
    origin = "https://host.example.com"
    app = create_app(
        GatewaySettings(instore_callback_api_key=KEY, gateway_cors_allow_origins=origin),
        Ports(cart_lookups=Lookups(), events=Events(), vault=InMemoryTokenVault()),  # type: ignore[arg-type]
        raw_routes=raw,
    )
    with TestClient(app) as client:
        callback = client.get("/instore/callbacks/carts/c-1", headers={"X-Api-Key": KEY, "Origin": origin})
        preflight = client.options(
            "/instore/callbacks/carts/c-1", headers={"Origin": origin, "Access-Control-Request-Method": "GET"}
        )
        sessions = client.options("/sessions", headers={"Origin": origin, "Access-Control-Request-Method": "POST"})
    assert callback.status_code == 200
    assert not [h for h in callback.headers if h.lower().startswith("access-control-")]
    assert not [h for h in preflight.headers if h.lower().startswith("access-control-")]
    assert sessions.headers["access-control-allow-origin"] == origin
