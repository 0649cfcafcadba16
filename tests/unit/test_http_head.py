"""HEAD wherever GET works (issue 15 part 7, RFC 9110 §9.3.2): the GET's status and header fields, no body.

The gateway both ways its hot routes are served (below Litestar and by Litestar), and the Kafka services'
ASGI apps (FastStream's routes and prometheus_client's /metrics). The apps are called at the ASGI level
(TestClient / httpx's ASGITransport pass on what the app sends), so a body sent on HEAD would show.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import httpx
import msgspec
import pytest
from litestar.testing import TestClient

from instore_gateway.app import Ports, create_app
from instore_gateway.settings import GatewaySettings
from instore_gateway.vault import InMemoryTokenVault, StoredToken
from instore_shared import http_head
from instore_shared.contract.cart_lookup import CartKind, CartLookupReply, LookupStatus
from tests.fakes.commerce import InMemoryCommerce

API_KEY = "head-callback-key-0123456789"
USER_KEY = "u" * 43


class Lookups:
    async def lookup(self, kind: CartKind, cart_ref: str, correlation_id: str) -> CartLookupReply:
        if cart_ref == "missing":
            return CartLookupReply(status=LookupStatus.NOT_FOUND, reason="cart-not-found", detail="no such cart")
        return CartLookupReply(status=LookupStatus.FOUND, cart=msgspec.Raw(msgspec.json.encode({"id": cart_ref})))

    async def ready(self) -> bool:
        return True


@pytest.fixture(params=[True, False], ids=["raw-route", "litestar-route"])
def gateway(request: pytest.FixtureRequest) -> Iterator[TestClient[Any]]:
    vault = InMemoryTokenVault()
    asyncio.run(
        vault.put(USER_KEY, StoredToken("uat", time.time() + 600, user_id="c-1", location_id="l-1", workstation_id="w-1"))
    )
    settings = GatewaySettings(instore_callback_api_key=API_KEY)
    app = create_app(settings, Ports(cart_lookups=Lookups(), events=object(), vault=vault), raw_routes=request.param)  # type: ignore[arg-type]
    with TestClient(app) as client:
        yield client


_SAME_HEADERS = ("content-type", "content-length", "cache-control", "www-authenticate", "pragma", "retry-after")


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/healthz", 200),
        ("/readyz", 200),
        ("/asyncapi.json", 200),
        ("/schema/openapi.json", 200),
        ("/schemas/host-event.json", 200),
        ("/schemas/host-events-batch.json", 200),
        ("/instore/callbacks/carts/cart-1", 200),
        ("/instore/callbacks/return-carts/cart-1", 200),
        ("/instore/callbacks/carts/missing", 404),
        ("/instore/callbacks/carts/x", 400),
        (f"/instore/callbacks/tokens/{USER_KEY}", 200),
        ("/instore/callbacks/tokens/" + "v" * 43, 404),
        ("/no/such/route", 404),
    ],
)
def test_head_answers_the_get_s_status_and_headers_without_a_body(gateway: TestClient[Any], path: str, status: int) -> None:
    headers = {"X-Api-Key": API_KEY}
    got, head = gateway.get(path, headers=headers), gateway.head(path, headers=headers)
    assert got.status_code == head.status_code == status, head.text
    assert got.content and head.content == b""
    for name in _SAME_HEADERS:
        assert head.headers.get(name) == got.headers.get(name), name
    assert head.headers["content-length"] == str(len(got.content))
    assert head.headers["x-correlation-id"]


def test_head_of_metrics_is_its_get_without_the_body(gateway: TestClient[Any]) -> None:
    got, head = gateway.get("/metrics"), gateway.head("/metrics")
    assert got.status_code == head.status_code == 200
    assert head.headers["content-type"] == got.headers["content-type"] and head.content == b""
    assert b"instore_" in got.content


def test_head_is_guarded_like_get(gateway: TestClient[Any]) -> None:
    head = gateway.head("/instore/callbacks/carts/cart-1")
    assert head.status_code == 401 and head.content == b""
    assert head.headers["www-authenticate"] == 'ApiKey header="X-Api-Key"'
    assert head.headers["content-type"] == "application/problem+json"


def test_head_of_a_route_without_get_is_405(gateway: TestClient[Any]) -> None:
    head = gateway.head("/instore/webhooks")
    assert head.status_code == 405 and head.content == b""
    assert "HEAD" not in head.headers["allow"]


def test_the_allow_header_of_a_405_lists_head_beside_get(gateway: TestClient[Any]) -> None:
    response = gateway.post("/healthz", content=b"{}")
    assert response.status_code == 405
    allowed = [m.strip() for m in response.headers["allow"].split(",")]
    assert "GET" in allowed and "HEAD" in allowed


# -- the Kafka services -------------------------------------------------------------------
def _service_apps() -> list[tuple[str, Any]]:
    from instore_cart_mapping.app import create_app as cart_mapping_app
    from instore_order_finalization.app import create_app as order_finalization_app
    from instore_payment_extension.app import create_app as payment_extension_app
    from instore_refund.app import create_app as refund_app

    return [
        ("cart-mapping", cart_mapping_app),
        ("order-finalization", order_finalization_app),
        ("refund", refund_app),
        ("payment-extension", payment_extension_app),
    ]


@pytest.mark.parametrize(("name", "factory"), _service_apps(), ids=[name for name, _ in _service_apps()])
async def test_the_kafka_services_answer_head_wherever_they_answer_get(name: str, factory: Any) -> None:
    app = factory(commerce=InMemoryCommerce())
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://svc") as client:
        doc = (await client.get("/asyncapi.json")).json()
        paths = ["/healthz", "/readyz", "/metrics", "/asyncapi.json", "/asyncapi"]
        paths += [c["address"] for c in doc["channels"].values() if c["address"].startswith("/schemas/")]
        assert len(paths) > 5, name
        for path in paths:
            got, head = await client.get(path), await client.head(path)
            assert got.status_code == head.status_code, path
            assert got.content and head.content == b"", path
            assert head.headers.get("content-type") == got.headers.get("content-type"), path
            if path != "/metrics":  # its content changes between two scrapes
                assert head.headers.get("content-length") == got.headers.get("content-length"), path
        missing = await client.head("/no/such/route")
        assert missing.status_code == 404 and missing.content == b""


# -- the middleware itself ------------------------------------------------------------------
async def test_a_streamed_body_is_dropped_and_the_answer_still_ends() -> None:
    seen: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(scope["method"])
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"6")]})
        await send({"type": "http.response.body", "body": b"abc", "more_body": True})
        await send({"type": "http.response.body", "body": b"def"})

    sent: list[dict[str, Any]] = []

    async def send(message: Any) -> None:
        sent.append(message)

    async def receive() -> Any:
        return {"type": "http.request", "body": b""}

    scope = {"type": "http", "method": "HEAD", "path": "/"}
    await http_head.head_as_get(app)(scope, receive, send)
    assert seen == ["GET"] and scope["method"] == "HEAD"  # the caller's scope is left as it was
    assert sent == [
        {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"6")]},
        {"type": "http.response.body", "body": b"", "more_body": False},
    ]


@pytest.mark.parametrize(
    ("allow", "expected"),
    [("GET, OPTIONS", "GET, HEAD, OPTIONS"), ("OPTIONS, POST", "OPTIONS, POST"), ("GET,HEAD", "GET, HEAD")],
)
def test_allow_with_head(allow: str, expected: str) -> None:
    assert http_head.allow_with_head(allow) == expected
