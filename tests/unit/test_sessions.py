"""POST /sessions and the token callback, with fakes for the IMS, InStore's auth API and Kafka."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from typing import Any

import msgspec
import pytest
from litestar.testing import TestClient

from instore_gateway.app import Ports, create_app
from instore_gateway.identity import Colleague, InvalidIdentity
from instore_gateway.instore_auth import (
    InStoreAuthTimeout,
    InStoreAuthUnavailable,
    UserAccessToken,
)
from instore_gateway.settings import GatewaySettings
from instore_gateway.vault import InMemoryTokenVault
from instore_shared.kafka.rpc import BrokerUnavailable

API_KEY = "unit-callback-key-0123456789"
GOOD = "good-ims-token"
PROBLEM = "urn:instore-integration:problem:"


class FakeIms:
    async def verify(self, token: str) -> Colleague:
        if token != GOOD:
            raise InvalidIdentity("bad-signature")
        return Colleague("colleague-42", "Ada")

    async def aclose(self) -> None: ...


class FakeAuth:
    def __init__(self) -> None:
        self.fail: Exception | None = None
        self.calls: list[tuple[str, str, str]] = []

    async def user_access_token(self, user_id: str, location_id: str, workstation_id: str) -> UserAccessToken:
        self.calls.append((user_id, location_id, workstation_id))
        if self.fail:
            raise self.fail
        return UserAccessToken("uat-secret-token", time.time() + 600)

    async def aclose(self) -> None: ...


class FakeEvents:
    def __init__(self) -> None:
        self.published: list[tuple[str, str, bytes]] = []
        self.fail = False

    async def publish(self, topic: str, key: str, value: bytes, *, message_type: str, timeout_s: float) -> None:
        if self.fail:
            raise BrokerUnavailable("down")
        self.published.append((topic, key, value))


class FakeLookups:
    async def lookup(self, *a: Any) -> Any:
        raise AssertionError("not used")

    async def ready(self) -> bool:
        return True


class World:
    def __init__(self, rate_limit: int = 100) -> None:
        self.now = [time.time()]
        self.vault = InMemoryTokenVault(clock=lambda: self.now[0])
        self.auth = FakeAuth()
        self.events = FakeEvents()
        settings = GatewaySettings(instore_callback_api_key=API_KEY, sessions_rate_limit_per_minute=rate_limit)
        self.app = create_app(
            settings,
            Ports(cart_lookups=FakeLookups(), events=self.events, vault=self.vault, ims=FakeIms(), instore_auth=self.auth),
        )  # type: ignore[arg-type]


@pytest.fixture
def world() -> Iterator[tuple[World, TestClient[Any]]]:
    w = World()
    with TestClient(w.app) as client:
        yield w, client


def _session(client: TestClient[Any], token: str | None = GOOD, body: Any = None) -> Any:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return client.post(
        "/sessions",
        headers=headers,
        json=body if body is not None else {"locationId": "store-berlin-01", "workstationId": "pos-3"},
    )


def _problem(response: Any, status: int, slug: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert body["type"] == PROBLEM + slug
    return body


def test_session_then_token_callback(world: tuple[World, TestClient[Any]]) -> None:
    w, client = world
    response = _session(client)
    assert response.status_code == 201, response.text
    body = response.json()
    assert set(body) == {"userAccessToken", "userKey", "expiresAt"}
    assert body["userAccessToken"] == "uat-secret-token"
    assert re.fullmatch(r"[A-Za-z0-9_-]{43}", body["userKey"])
    assert body["expiresAt"].endswith("Z")
    assert w.auth.calls == [("colleague-42", "store-berlin-01", "pos-3")]

    from structlog.testing import capture_logs

    with capture_logs() as logs:
        token = client.get(f"/instore/callbacks/tokens/{body['userKey']}", headers={"X-Api-Key": API_KEY})
    assert token.status_code == 200, token.text
    (audit,) = [line for line in logs if line["event"] == "token_callback.answered"]  # every handout leaves a line
    assert body["userKey"] not in str(audit) and "uat-secret-token" not in str(audit)
    assert token.json()["access_token"] == "uat-secret-token"
    assert token.json()["token_type"] == "Bearer"
    assert 590 <= token.json()["expires_in"] <= 600
    assert token.headers["cache-control"] == "no-store"

    ((topic, key, value),) = w.events.published
    event = msgspec.json.decode(value)
    assert (topic, key, event["type"], event["userId"], event["locationId"]) == (
        "instore.session-events.v1",
        "colleague-42",
        "session-started",
        "colleague-42",
        "store-berlin-01",
    )
    assert b"uat-secret-token" not in value and body["userKey"].encode() not in value


def test_every_session_gets_a_new_user_key(world: tuple[World, TestClient[Any]]) -> None:
    _, client = world
    keys = {_session(client).json()["userKey"] for _ in range(20)}
    assert len(keys) == 20


@pytest.mark.parametrize("token", [None, "wrong", ""])
def test_no_or_bad_ims_token_is_401(world: tuple[World, TestClient[Any]], token: str | None) -> None:
    w, client = world
    response = _session(client, token)
    body = _problem(response, 401, "unauthorized")
    assert response.headers["www-authenticate"].startswith("Bearer")
    if token == "wrong":
        assert body["reason"] == "bad-signature"
    assert w.auth.calls == [] and w.events.published == []


def test_basic_auth_or_two_authorization_headers_are_401(world: tuple[World, TestClient[Any]]) -> None:
    _, client = world
    _problem(
        client.post("/sessions", headers={"Authorization": "Basic Zm9vOmJhcg=="}, json={"locationId": "l", "workstationId": "w"}),
        401,
        "unauthorized",
    )
    _problem(
        client.post(
            "/sessions",
            headers=[("Authorization", f"Bearer {GOOD}"), ("Authorization", "Bearer x")],
            json={"locationId": "l", "workstationId": "w"},
        ),
        401,
        "unauthorized",
    )


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"locationId": "l"},
        {"locationId": 1, "workstationId": "w"},
        {"locationId": "", "workstationId": "w"},
        {"locationId": "x" * 129, "workstationId": "w"},
        {"locationId": "a b", "workstationId": "w"},
        [],
        "text",
        {"locationId": "l\n", "workstationId": "w"},
    ],
)
def test_bad_body_is_400_and_asks_nothing(world: tuple[World, TestClient[Any]], body: Any) -> None:
    w, client = world
    _problem(_session(client, body=body), 400, "bad-request")
    assert w.auth.calls == []


def test_bad_body_names_the_field_not_the_value(world: tuple[World, TestClient[Any]]) -> None:
    _, client = world
    body = _problem(_session(client, body={"locationId": "has space", "workstationId": "w"}), 400, "bad-request")
    assert body["errors"][0]["key"] == "locationId"
    assert "has space" not in str(body)


def test_bad_body_without_token_is_401_first(world: tuple[World, TestClient[Any]]) -> None:
    _, client = world
    _problem(_session(client, token=None, body={}), 401, "unauthorized")


@pytest.mark.parametrize(
    ("failure", "status", "slug"),
    [
        (InStoreAuthTimeout("slow"), 504, "instore-auth-timeout"),
        (InStoreAuthUnavailable("down"), 502, "instore-auth-unavailable"),
    ],
)
def test_instore_auth_failures(world: tuple[World, TestClient[Any]], failure: Exception, status: int, slug: str) -> None:
    w, client = world
    w.auth.fail = failure
    _problem(_session(client), status, slug)
    assert w.events.published == []


def test_kafka_down_means_no_session(world: tuple[World, TestClient[Any]]) -> None:
    w, client = world
    w.events.fail = True
    response = _session(client)
    _problem(response, 503, "broker-unavailable")
    assert "userKey" not in response.text and "uat-secret-token" not in response.text


def test_token_callback_errors(world: tuple[World, TestClient[Any]]) -> None:
    w, client = world
    key = _session(client).json()["userKey"]
    _problem(client.get(f"/instore/callbacks/tokens/{key}"), 401, "unauthorized")
    _problem(client.get(f"/instore/callbacks/tokens/{key}", headers={"X-Api-Key": "nope"}), 401, "unauthorized")
    for bad in ("short", key + "x", key[:-1] + "!", "x" * 43 + "%20", key + "%0A"):
        _problem(client.get(f"/instore/callbacks/tokens/{bad}", headers={"X-Api-Key": API_KEY}), 400, "invalid-user-key")
    unknown = _problem(
        client.get(f"/instore/callbacks/tokens/{'A' * 43}", headers={"X-Api-Key": API_KEY}), 404, "user-key-not-found"
    )
    assert "A" * 43 not in unknown["instance"]  # the user key is not echoed
    w.now[0] += 601  # the token expired
    _problem(client.get(f"/instore/callbacks/tokens/{key}", headers={"X-Api-Key": API_KEY}), 404, "user-key-not-found")


def test_the_callback_api_key_is_compared_without_surrounding_whitespace(world: tuple[World, TestClient[Any]]) -> None:
    """RFC 9110 §5.5: whitespace around a field value is not part of it — leading and trailing alike."""
    _, client = world
    path = f"/instore/callbacks/tokens/{'A' * 43}"
    for given in (API_KEY, f" {API_KEY}", f"{API_KEY} ", f"\t{API_KEY}\t", f"  {API_KEY} \t"):
        _problem(client.get(path, headers={"X-Api-Key": given}), 404, "user-key-not-found")
    for given in (f"{API_KEY} x", f"{API_KEY}\n", API_KEY[:-1], "", " "):
        _problem(client.get(path, headers={"X-Api-Key": given}), 401, "unauthorized")
    twice = client.get(path, headers=[("X-Api-Key", API_KEY), ("X-Api-Key", f"{API_KEY} ")])
    _problem(twice, 401, "unauthorized")


def test_sessions_are_rate_limited_per_client() -> None:
    w = World(rate_limit=3)
    with TestClient(w.app) as client:
        codes = [_session(client).status_code for _ in range(4)]
        limited = _session(client)
        # other routes are not limited
        assert client.get("/healthz").status_code == 200
    assert codes[:3] == [201, 201, 201] and codes[3] == 429
    _problem(limited, 429, "too-many-requests")
    assert int(limited.headers["retry-after"]) > 0


def test_rate_limit_ignores_a_forged_x_forwarded_for() -> None:
    w = World(rate_limit=2)
    with TestClient(w.app) as client:
        codes = [
            client.post(
                "/sessions",
                headers={"Authorization": f"Bearer {GOOD}", "X-Forwarded-For": f"203.0.113.{i}"},
                json={"locationId": "l", "workstationId": "w"},
            ).status_code
            for i in range(3)
        ]
    assert codes == [201, 201, 429]


def test_a_deeply_nested_body_is_400_not_500(world: tuple[World, TestClient[Any]]) -> None:
    _, client = world
    nested = "[" * 100_000 + "]" * 100_000
    response = client.post(
        "/sessions",
        headers={"Authorization": f"Bearer {GOOD}", "Content-Type": "application/json"},
        content=f'{{"locationId":"l","workstationId":"w","x":{nested}}}',
    )
    _problem(response, 400, "bad-request")


@pytest.mark.parametrize(
    ("path", "logged"),
    [
        ("/instore/callbacks/tokens/" + "k" * 43, "/instore/callbacks/tokens/***"),
        ("/instore/callbacks//tokens/" + "k" * 43, "/instore/callbacks//tokens/***"),
        ("/INSTORE/CALLBACKS/TOKENS/" + "k" * 43 + "/x", "/INSTORE/CALLBACKS/TOKENS/***"),
        ("/instore/callbacks/carts/" + "k" * 43, "/instore/callbacks/carts/***"),
        ("/instore/callbacks/carts/demo-sale-cart", "/instore/callbacks/carts/demo-sale-cart"),
    ],
)
def test_user_keys_never_reach_logs_or_problem_bodies(path: str, logged: str) -> None:
    from instore_gateway.problems import redact_path

    assert redact_path(path) == logged


_SESSION_BODY = b'{"locationId": "store-berlin-01", "workstationId": "pos-3"}'


@pytest.mark.parametrize(
    "content_type",
    [
        "application/json",
        "application/json; charset=utf-8",
        "Application/JSON;Charset=UTF-8",
        'application/json ; charset="utf-8"',
        "application/vnd.instore.session+json",
        "APPLICATION/MERGE-PATCH+JSON",
    ],
)
def test_a_session_body_is_taken_as_any_json_media_type(world: tuple[World, TestClient[Any]], content_type: str) -> None:
    _, client = world
    response = client.post(
        "/sessions", content=_SESSION_BODY, headers={"Authorization": f"Bearer {GOOD}", "Content-Type": content_type}
    )
    assert response.status_code == 201, response.text


@pytest.mark.parametrize(
    "content_type", [None, "", "text/plain", "application/x-www-form-urlencoded", "application/jsonx", "text/json", "json"]
)
def test_a_session_body_that_is_not_labelled_json_is_refused_415(
    world: tuple[World, TestClient[Any]], content_type: str | None
) -> None:
    w, client = world
    headers = {"Authorization": f"Bearer {GOOD}"} | ({} if content_type is None else {"Content-Type": content_type})
    response = client.post("/sessions", content=_SESSION_BODY, headers=headers)
    body = _problem(response, 415, "unsupported-media-type")
    assert response.headers["accept-post"] == "application/json"
    assert "application/json" in body["detail"] and body["correlationId"]
    assert w.auth.calls == []  # refused before InStore is asked for a token


def test_two_content_types_are_refused_415(world: tuple[World, TestClient[Any]]) -> None:
    _, client = world
    headers = [("Authorization", f"Bearer {GOOD}"), ("Content-Type", "application/json"), ("Content-Type", "text/plain")]
    _problem(client.post("/sessions", content=_SESSION_BODY, headers=headers), 415, "unsupported-media-type")


def test_without_a_token_the_answer_is_401_whatever_the_content_type(world: tuple[World, TestClient[Any]]) -> None:
    _, client = world
    _problem(client.post("/sessions", content=_SESSION_BODY, headers={"Content-Type": "text/plain"}), 401, "unauthorized")
