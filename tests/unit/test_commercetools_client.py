"""The Composable Commerce client against an httpx MockTransport: auth, retries, typed errors."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable

import httpx
import pytest

from instore_shared.commercetools import (
    AuthenticationFailed,
    CommercetoolsClient,
    ConcurrentModification,
    DuplicateField,
    InvalidInput,
    NotFound,
    TransientError,
)
from instore_shared.settings import CommercetoolsSettings
from tests.conftest import load_example

SETTINGS = CommercetoolsSettings(
    project_key="p",
    client_id="cid",
    client_secret="csecret",
    auth_url="https://auth.test",
    api_url="https://api.test",
    backoff_initial_seconds=0.001,
    backoff_max_seconds=0.002,
    max_attempts=3,
)


class Server:
    """A scripted Composable Commerce: counts token fetches and serves API answers in order."""

    def __init__(self, api: list[httpx.Response] | Callable[[httpx.Request], httpx.Response], expires_in: int = 3600):
        self.api = api
        self.expires_in = expires_in
        self.tokens_issued = 0
        self.api_calls: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/oauth/token":
            assert request.headers["authorization"] == "Basic " + base64.b64encode(b"cid:csecret").decode()
            body = dict(x.split("=") for x in request.content.decode().split("&"))
            assert body["grant_type"] == "client_credentials"
            self.tokens_issued += 1
            return httpx.Response(
                200,
                json={
                    "access_token": f"tok{self.tokens_issued}",
                    "token_type": "Bearer",
                    "expires_in": self.expires_in,
                    "scope": "view_orders:p",
                },
            )
        self.api_calls.append(request)
        if callable(self.api):
            return self.api(request)
        return self.api.pop(0)


def _client(server: Server) -> CommercetoolsClient:
    return CommercetoolsClient(SETTINGS, transport=httpx.MockTransport(server))


CART = load_example("cart.example.json")


async def test_token_is_fetched_once_and_cached() -> None:
    server = Server(lambda r: httpx.Response(200, json=CART))
    async with _client(server) as client:
        for _ in range(3):
            response = await client.get_cart(CART["id"])
    assert server.tokens_issued == 1
    assert [c.headers["authorization"] for c in server.api_calls] == ["Bearer tok1"] * 3
    assert str(server.api_calls[0].url) == f"https://api.test/p/carts/{CART['id']}"
    assert response.json()["id"] == CART["id"]


async def test_cart_bytes_are_passed_on_unchanged() -> None:
    raw = json.dumps(CART, indent=3).encode()  # formatting the client must not touch
    server = Server(lambda r: httpx.Response(200, content=raw, headers={"content-type": "application/json"}))
    async with _client(server) as client:
        assert (await client.get_cart(CART["id"])).content == raw


async def test_token_is_refetched_a_minute_before_expiry() -> None:
    now = [1000.0]
    server = Server(lambda r: httpx.Response(200, json=CART), expires_in=3600)
    async with CommercetoolsClient(SETTINGS, transport=httpx.MockTransport(server), clock=lambda: now[0]) as client:
        await client.get_cart("a")
        now[0] += 3600 - 61  # still valid for 61 s: kept
        await client.get_cart("a")
        assert server.tokens_issued == 1
        now[0] += 2  # 59 s left: inside the leeway, fetched anew
        await client.get_cart("a")
    assert server.tokens_issued == 2
    assert [c.headers["authorization"] for c in server.api_calls] == ["Bearer tok1", "Bearer tok1", "Bearer tok2"]


async def test_concurrent_calls_share_one_token_fetch() -> None:
    import asyncio

    server = Server(lambda r: httpx.Response(200, json=CART))
    async with _client(server) as client:
        await asyncio.gather(*(client.get_cart("a") for _ in range(20)))
    assert server.tokens_issued == 1


async def test_401_fetches_a_new_token_once_and_repeats() -> None:
    server = Server(
        [httpx.Response(401, json={"statusCode": 401, "message": "invalid_token", "errors": []}), httpx.Response(200, json=CART)]
    )
    async with _client(server) as client:
        await client.get_cart("a")
    assert server.tokens_issued == 2
    assert [c.headers["authorization"] for c in server.api_calls] == ["Bearer tok1", "Bearer tok2"]


async def test_refused_credentials_raise_authentication_failed() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        return httpx.Response(401, json={"error": "invalid_client"})

    async with CommercetoolsClient(SETTINGS, transport=httpx.MockTransport(refuse)) as client:
        with pytest.raises(AuthenticationFailed):
            await client.get_cart("a")


@pytest.mark.parametrize("status", [429, 500, 502, 503])
async def test_transient_answers_are_retried_then_succeed(status: int) -> None:
    server = Server([httpx.Response(status), httpx.Response(status), httpx.Response(200, json=CART)])
    async with _client(server) as client:
        await client.get_cart("a")
    assert len(server.api_calls) == 3


async def test_retries_are_bounded() -> None:
    server = Server(lambda r: httpx.Response(503, json={"statusCode": 503, "message": "down", "errors": []}))
    async with _client(server) as client:
        with pytest.raises(TransientError) as info:
            await client.get_cart("a")
    assert info.value.status == 503 and len(server.api_calls) == SETTINGS.max_attempts


async def test_network_errors_are_retried_and_bounded() -> None:
    def down(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    server = Server(down)
    async with _client(server) as client:
        with pytest.raises(TransientError):
            await client.get_cart("a")
    assert len(server.api_calls) == SETTINGS.max_attempts


def _err(status: int, **first: object) -> httpx.Response:
    return httpx.Response(status, json={"statusCode": status, "message": "m", "errors": [{"message": "m", **first}]})


async def test_errors_are_typed_and_not_retried() -> None:
    cases = [
        (_err(404, code="ResourceNotFound"), NotFound),
        (_err(409, code="ConcurrentModification", currentVersion=7), ConcurrentModification),
        (_err(400, code="DuplicateField", field="orderNumber", duplicateValue="n-1"), DuplicateField),
        (_err(400, code="InvalidOperation"), InvalidInput),
    ]
    for response, kind in cases:
        server = Server([response])
        async with _client(server) as client:
            with pytest.raises(kind) as info:
                await client.request("POST", "/orders", json={"version": 1})
        assert len(server.api_calls) == 1
        if kind is ConcurrentModification:
            assert info.value.current_version == 7  # type: ignore[attr-defined]
        if kind is DuplicateField:
            assert (info.value.field, info.value.duplicate_value) == ("orderNumber", "n-1")  # type: ignore[attr-defined]


async def test_find_cart_falls_back_from_id_to_key() -> None:
    def api(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/carts/key=my-cart"):
            return httpx.Response(200, json=CART)
        return _err(404, code="ResourceNotFound")

    server = Server(api)
    uuid_key = "0f8fad5b-d9cb-469f-a165-70867728950e"
    async with _client(server) as client:
        assert (await client.find_cart("my-cart")).json()["id"] == CART["id"]
        with pytest.raises(NotFound):
            await client.find_cart(uuid_key)
    assert [c.url.path for c in server.api_calls] == [
        "/p/carts/key=my-cart",  # not a UUID: it can only be a key
        f"/p/carts/{uuid_key}",
        f"/p/carts/key={uuid_key}",  # a UUID: id first, then key
    ]


def test_secret_is_not_printed() -> None:
    assert "csecret" not in repr(SETTINGS) and "csecret" not in str(SETTINGS)


class FlakyAuth(Server):
    """A Composable Commerce whose token endpoint first answers ``failures`` (a response or an exception), in order."""

    def __init__(self, failures: list[httpx.Response | Exception]) -> None:
        super().__init__(lambda r: httpx.Response(200, json=CART))
        self.failures = failures
        self.token_calls = 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/oauth/token":
            self.token_calls += 1
            if self.failures:
                failure = self.failures.pop(0)
                if isinstance(failure, Exception):
                    raise failure
                return failure
        return super().__call__(request)


_TIMEOUT = httpx.ReadTimeout("token endpoint hangs")
_CT_429 = httpx.Response(
    429, json={"statusCode": 429, "message": "Too many requests", "errors": [{"code": "TooManyRequests", "message": "slow down"}]}
)
_CT_503 = httpx.Response(503, json={"statusCode": 503, "message": "Service unavailable", "errors": []})


@pytest.mark.parametrize(
    "failure",
    [
        _CT_429,
        _CT_503,
        httpx.Response(502, text="<html>bad gateway</html>"),
        httpx.Response(500),
        httpx.Response(200, json={"token_type": "Bearer"}),  # a 2xx without a token: a broken answer, not a refusal
        httpx.Response(400, text="bad request from a proxy"),  # a 400 without an OAuth error code
        _TIMEOUT,
    ],
    ids=["429", "503", "502-html", "500-empty", "200-no-token", "400-no-oauth-code", "timeout"],
)
async def test_a_token_endpoint_blip_is_retried_like_any_call(failure: httpx.Response | Exception) -> None:
    server = FlakyAuth([failure])
    async with _client(server) as client:
        assert (await client.get_cart(CART["id"])).json()["id"] == CART["id"]
    assert server.token_calls == 2 and len(server.api_calls) == 1


@pytest.mark.parametrize("failure", [_CT_429, _CT_503, _TIMEOUT], ids=["429", "503", "timeout"])
async def test_a_token_endpoint_outage_is_transient_once_the_retries_are_spent(failure: httpx.Response | Exception) -> None:
    server = FlakyAuth([failure] * SETTINGS.max_attempts)
    async with _client(server) as client:
        with pytest.raises(TransientError):  # the consumers wait out an outage instead of dead-lettering
            await client.get_cart(CART["id"])
    assert server.token_calls == SETTINGS.max_attempts and not server.api_calls


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (
            401,
            {
                "statusCode": 401,
                "message": "Please provide valid client credentials.",
                "errors": [{"code": "invalid_client", "message": "bad"}],
                "error": "invalid_client",
            },
        ),
        (
            400,
            {
                "statusCode": 400,
                "message": "Illegal scope",
                "errors": [{"code": "invalid_scope", "message": "x"}],
                "error": "invalid_scope",
            },
        ),
        (401, {"errors": [{"code": "invalid_client"}]}),
    ],
)
async def test_refused_credentials_are_permanent_at_once(status: int, body: dict[str, object]) -> None:
    server = FlakyAuth([httpx.Response(status, json=body)] * 5)
    async with _client(server) as client:
        with pytest.raises(AuthenticationFailed) as info:
            await client.get_cart(CART["id"])
    assert server.token_calls == 1 and info.value.code == body.get("error", "invalid_client")
