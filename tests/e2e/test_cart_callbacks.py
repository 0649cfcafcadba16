"""End to end: InStore's cart callbacks over HTTP → gateway → Kafka → cart-mapping → commercetools mock, and back.

Every part is a real process: two gateway replicas, one cart-mapping, Apache Kafka and
the npm commercetools mock, wired only by environment variables as in production.
"""

from __future__ import annotations

import json
import signal
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from instore_shared.commercetools import CommercetoolsClient
from instore_shared.settings import CommercetoolsSettings
from tests.support.processes import CtMock, Kafka, Service, free_port, start_service

pytestmark = pytest.mark.e2e

API_KEY = "e2e-callback-key-" + uuid.uuid4().hex
PROBLEM = "urn:instore-integration:problem:"


@dataclass
class Stack:
    """The running processes."""

    gateways: list[Service]
    cart_mapping: Service
    mock: CtMock
    cart_mapping_group: str


@pytest.fixture(scope="module")
def stack(kafka: Kafka, ct_mock: CtMock) -> Iterator[Stack]:
    common = {"KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers, "KAFKA_TOPIC_PARTITIONS": "3"}
    port = free_port()
    group = f"cart-mapping-e2e-{uuid.uuid4().hex[:8]}"
    cart_mapping = start_service(
        "cart-mapping",
        "instore_cart_mapping",
        {**common, **ct_mock.settings_env(), "CART_MAPPING_HTTP_PORT": str(port), "CART_MAPPING_CONSUMER_GROUP": group},
        port,
    )
    gateways = []
    try:
        for name in ("gateway-a", "gateway-b"):
            port = free_port()
            gateways.append(
                start_service(
                    name,
                    "instore_gateway",
                    {
                        **common,
                        "GATEWAY_HTTP_PORT": str(port),
                        "INSTORE_CALLBACK_API_KEY": API_KEY,
                        "GATEWAY_CART_LOOKUP_TIMEOUT_SECONDS": "2",
                    },
                    port,
                )
            )
        yield Stack(gateways, cart_mapping, ct_mock, group)
    finally:
        for service in [*gateways, cart_mapping]:
            service.stop()


def _get(service: Service, path: str, key: str | None = API_KEY) -> httpx.Response:
    headers = {"X-Api-Key": key} if key is not None else {}
    return httpx.get(service.url + path, headers=headers, timeout=10)


def _assert_problem(response: httpx.Response, status: int, slug: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert body["type"] == PROBLEM + slug and body["status"] == status
    assert "Traceback" not in response.text
    return body


def _assert_clean_stop(service: Service, last_event: str) -> None:
    """SIGTERM ends the process through its shutdown path (uvicorn re-raises the signal after it)."""
    code = service.stop(signal.SIGTERM)
    assert code in (0, -signal.SIGTERM), service.process.describe()
    events = [json.loads(line).get("event") for line in service.process.output().splitlines() if line.startswith("{")]
    assert last_event in events, service.process.describe()
    assert "Traceback" not in service.process.output(), service.process.describe()


async def _commerce(mock: CtMock) -> CommercetoolsClient:
    env = mock.settings_env()
    return CommercetoolsClient(CommercetoolsSettings(**{k.removeprefix("CTP_").lower(): v for k, v in env.items()}))


async def test_sale_cart_is_served_by_every_replica_exactly_as_commerce_has_it(stack: Stack) -> None:
    seed = stack.mock.seed
    async with await _commerce(stack.mock) as commerce:
        direct = (await commerce.get_cart(seed["openCartId"])).json()
    for gateway in stack.gateways:
        for ref in (seed["openCartKey"], seed["openCartId"]):
            response = _get(gateway, f"/instore/callbacks/carts/{ref}")
            assert response.status_code == 200, response.text
            assert response.headers["content-type"].startswith("application/json")
            assert response.json() == direct


async def test_concurrent_lookups_on_both_replicas_each_get_their_own_cart(stack: Stack) -> None:
    """Both gateway replicas read every reply; each answers only its own requests, with the right cart."""
    import asyncio

    seed = stack.mock.seed
    wanted = {seed["openCartKey"]: seed["openCartId"], seed["returnCartKey"]: seed["returnCartId"]}
    async with httpx.AsyncClient(headers={"X-Api-Key": API_KEY}, timeout=10) as client:

        async def ask(i: int) -> tuple[str, int, str]:
            key = list(wanted)[i % 2]
            gateway = stack.gateways[(i // 2) % 2]
            kind = "carts" if key == seed["openCartKey"] else "return-carts"
            response = await client.get(f"{gateway.url}/instore/callbacks/{kind}/{key}")
            return key, response.status_code, response.json().get("id", "")

        results = await asyncio.gather(*(ask(i) for i in range(80)))
    assert [r for r in results if r[1] != 200] == []
    assert all(wanted[key] == cart_id for key, _, cart_id in results)


async def test_return_cart_is_served(stack: Stack) -> None:
    seed = stack.mock.seed
    response = _get(stack.gateways[0], f"/instore/callbacks/return-carts/{seed['returnCartKey']}")
    assert response.status_code == 200, response.text
    assert response.json()["id"] == seed["returnCartId"]


def test_two_api_key_headers_are_refused_even_if_one_is_right(stack: Stack) -> None:
    for keys in ([API_KEY, "x"], ["x", API_KEY], [API_KEY, API_KEY]):
        response = httpx.get(
            f"{stack.gateways[0].url}/instore/callbacks/carts/{stack.mock.seed['openCartKey']}",
            headers=[("X-Api-Key", k) for k in keys],
        )
        _assert_problem(response, 401, "unauthorized")


@pytest.mark.parametrize(
    "path",
    [
        "/instore%2Fcallbacks/carts/demo-open-cart",
        "/instore/callbacks/carts/demo%2Fsale",
        "//instore/callbacks/carts/demo-open-cart",
        "/instore/callbacks/carts/..%2F..%2Fhealthz",
    ],
)
def test_encoded_slashes_and_empty_segments_are_400(stack: Stack, path: str) -> None:
    response = httpx.get(stack.gateways[0].url + path, headers={"X-Api-Key": API_KEY})
    _assert_problem(response, 400, "invalid-path")


@pytest.mark.parametrize(
    ("method", "path", "status", "slug"),
    [
        ("GET", "/nope", 404, "not-found"),
        ("POST", "/instore/callbacks/carts/demo-open-cart", 405, "method-not-allowed"),
    ],
)
def test_routing_errors_carry_a_correlation_id_too(stack: Stack, method: str, path: str, status: int, slug: str) -> None:
    response = httpx.request(method, stack.gateways[0].url + path)
    body = _assert_problem(response, status, slug)
    assert body["correlationId"] == response.headers["x-correlation-id"]
    assert response.headers["cache-control"] == "no-store"


def test_return_cart_on_the_sale_path_is_422(stack: Stack) -> None:
    _assert_problem(
        _get(stack.gateways[0], f"/instore/callbacks/carts/{stack.mock.seed['returnCartKey']}"), 422, "cart-is-a-return"
    )


def test_unknown_cart_is_404(stack: Stack) -> None:
    body = _assert_problem(_get(stack.gateways[1], "/instore/callbacks/carts/no-such-cart"), 404, "cart-not-found")
    assert body["reason"] == "cart-not-found"


@pytest.mark.parametrize("key", [None, "wrong-key", API_KEY + "x", ""])
def test_missing_or_wrong_api_key_is_401(stack: Stack, key: str | None) -> None:
    _assert_problem(
        _get(stack.gateways[0], f"/instore/callbacks/carts/{stack.mock.seed['openCartKey']}", key), 401, "unauthorized"
    )


@pytest.mark.parametrize("ref", ["a", "x" * 257, "bad%20id", "semi%3Bcolon", "%C3%A9t%C3%A9", "dots.in.key"])
def test_cart_id_that_cannot_be_an_id_or_key_is_400(stack: Stack, ref: str) -> None:
    _assert_problem(_get(stack.gateways[0], f"/instore/callbacks/carts/{ref}"), 400, "invalid-cart-id")


async def _create_cart(mock: CtMock, draft: dict[str, Any]) -> dict[str, Any]:
    async with await _commerce(mock) as commerce:
        return (await commerce.request("POST", "/carts", json=draft)).json()


@pytest.mark.parametrize("length", [101, 200, 256])
def test_unknown_long_keys_are_404_not_an_outage(stack: Stack, length: int) -> None:
    """Issue 10 B4: keys of 101-256 characters answered 502 commerce-unavailable (the mock's 414)."""
    ref = (uuid.uuid4().hex * 8)[:length]
    for path in ("carts", "return-carts"):
        _assert_problem(_get(stack.gateways[0], f"/instore/callbacks/{path}/{ref}"), 404, "cart-not-found")


async def test_a_cart_with_a_256_character_key_is_served(stack: Stack) -> None:
    key = ("k-" + uuid.uuid4().hex * 8)[:256]
    cart = await _create_cart(
        stack.mock,
        {
            "currency": "EUR",
            "country": "DE",
            "key": key,
            "customLineItems": [
                {
                    "name": {"en": "Gift card"},
                    "quantity": 1,
                    "slug": "gift-card",
                    "money": {"currencyCode": "EUR", "centAmount": 2500},
                    "taxCategory": {"typeId": "tax-category", "key": "standard"},
                }
            ],
        },
    )
    assert cart["key"] == key
    response = _get(stack.gateways[1], f"/instore/callbacks/carts/{key}")
    assert response.status_code == 200, response.text
    assert response.json()["id"] == cart["id"]


async def test_cart_in_another_currency_is_422(stack: Stack) -> None:
    cart = await _create_cart(
        stack.mock,
        {
            "currency": "USD",
            "country": "US",
            "key": f"usd-{uuid.uuid4().hex[:8]}",
            "customLineItems": [
                {
                    "name": {"en": "Gift card"},
                    "quantity": 1,
                    "slug": "gift-card",
                    "money": {"currencyCode": "USD", "centAmount": 2500},
                    "taxCategory": {"typeId": "tax-category", "key": "standard"},
                }
            ],
        },
    )
    body = _assert_problem(_get(stack.gateways[0], f"/instore/callbacks/carts/{cart['key']}"), 422, "wrong-currency")
    assert body["reason"] == "wrong-currency" and "USD" in body["detail"]


async def test_empty_cart_is_422(stack: Stack) -> None:
    cart = await _create_cart(stack.mock, {"currency": "EUR", "country": "DE", "key": f"empty-{uuid.uuid4().hex[:8]}"})
    _assert_problem(_get(stack.gateways[1], f"/instore/callbacks/carts/{cart['id']}"), 422, "cart-empty")


async def test_frozen_cart_is_409(stack: Stack) -> None:
    cart = await _create_cart(
        stack.mock,
        {
            "currency": "EUR",
            "country": "DE",
            "key": f"frozen-{uuid.uuid4().hex[:8]}",
            "lineItems": [{"sku": "SKU-MUG", "quantity": 1}],
        },
    )
    async with await _commerce(stack.mock) as commerce:
        await commerce.request(
            "POST", f"/carts/{cart['id']}", json={"version": cart["version"], "actions": [{"action": "freezeCart"}]}
        )
    body = _assert_problem(_get(stack.gateways[0], f"/instore/callbacks/carts/{cart['key']}"), 409, "cart-not-active")
    assert "Frozen" in body["detail"]


async def test_return_of_more_than_was_bought_is_422(stack: Stack) -> None:
    seed = stack.mock.seed
    cart = await _create_cart(
        stack.mock,
        {
            "currency": "EUR",
            "country": "DE",
            "key": f"over-return-{uuid.uuid4().hex[:8]}",
            "lineItems": [
                {
                    "sku": "SKU-TSHIRT-M",
                    "quantity": 3,  # two were bought
                    "custom": {
                        "type": {"typeId": "type", "key": "instore-line-item"},
                        "fields": {
                            "purchaseOrderId": seed["orderId"],
                            "purchaseLineItemId": seed["orderLineItemIds"]["SKU-TSHIRT-M"],
                        },
                    },
                }
            ],
        },
    )
    body = _assert_problem(
        _get(stack.gateways[0], f"/instore/callbacks/return-carts/{cart['key']}"), 422, "return-quantity-exceeded"
    )
    assert "3 asked back, 2 bought" in body["detail"]


def test_correlation_id_follows_the_lookup_through_kafka(stack: Stack) -> None:
    response = _get(stack.gateways[1], f"/instore/callbacks/carts/{stack.mock.seed['openCartKey']}")
    cid = response.headers["x-correlation-id"]
    lines = [json.loads(line) for line in stack.cart_mapping.process.output().splitlines() if line.startswith("{")]
    answered = [line for line in lines if line.get("event") == "cart_lookup.answered" and line.get("correlation_id") == cid]
    assert answered and answered[0]["status"] == "found"


def test_no_secret_in_any_log_line_and_every_line_is_json(stack: Stack) -> None:
    for service in [*stack.gateways, stack.cart_mapping]:
        output = service.process.output()
        assert API_KEY not in output
        assert "test-secret" not in output
        for line in output.splitlines():
            assert isinstance(json.loads(line), dict), f"{service.process.name}: not a JSON line: {line!r}"


def test_health_readiness_and_openapi(stack: Stack) -> None:
    gateway = stack.gateways[0]
    assert httpx.get(gateway.url + "/healthz").json() == {"status": "ok"}
    assert httpx.get(gateway.url + "/readyz").json() == {"status": "ready"}
    spec = httpx.get(gateway.url + "/schema/openapi.json").json()
    assert "/instore/callbacks/carts/{cartId}" in spec["paths"]
    assert httpx.get(stack.cart_mapping.url + "/healthz").status_code == 200
    assert httpx.get(stack.cart_mapping.url + "/readyz").json() == {"status": "ready"}


def test_unreachable_broker_is_503_and_not_ready() -> None:
    port = free_port()
    gateway = start_service(
        "gateway-no-kafka",
        "instore_gateway",
        {
            "KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}",
            "GATEWAY_HTTP_PORT": str(port),
            "INSTORE_CALLBACK_API_KEY": API_KEY,
        },
        port,
        ready_path="/healthz",
    )
    try:
        _assert_problem(httpx.get(gateway.url + "/readyz"), 503, "not-ready")
        response = _get(gateway, "/instore/callbacks/carts/demo-open-cart")
        _assert_problem(response, 503, "broker-unavailable")
        assert response.headers["retry-after"] == "5"
    finally:
        _assert_clean_stop(gateway, "gateway.stopped")


def test_cart_mapping_down_is_504_and_a_restart_serves_again(stack: Stack, kafka: Kafka) -> None:
    """Last on purpose: stops cart-mapping (SIGTERM must end it cleanly), lookups time out,
    then a new cart-mapping process in the same consumer group serves the running gateways."""
    _assert_clean_stop(stack.cart_mapping, "cart_mapping.stopped")
    path = f"/instore/callbacks/carts/{stack.mock.seed['openCartKey']}"
    _assert_problem(_get(stack.gateways[0], path), 504, "cart-lookup-timeout")

    port = free_port()
    restarted = start_service(
        "cart-mapping-restarted",
        "instore_cart_mapping",
        {
            "KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
            **stack.mock.settings_env(),
            "CART_MAPPING_HTTP_PORT": str(port),
            "CART_MAPPING_CONSUMER_GROUP": stack.cart_mapping_group,
        },
        port,
    )
    try:
        deadline = time.monotonic() + 30  # the group rebalance hands it the partitions
        while True:
            response = _get(stack.gateways[1], path)
            if response.status_code == 200 or time.monotonic() > deadline:
                break
        assert response.status_code == 200, response.text
    finally:
        _assert_clean_stop(restarted, "cart_mapping.stopped")
