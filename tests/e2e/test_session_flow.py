"""End to end: colleague sessions with real processes — the local IMS and InStore auth fakes,
two gateway replicas sharing a Redis token vault, and Kafka for the audit events.

The session is opened on one replica and the token callback answered by the other.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import jwt
import pytest
from cryptography.fernet import Fernet
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.support.processes import (
    Kafka,
    RedisServer,
    Service,
    free_port,
    start_service,
)

pytestmark = pytest.mark.e2e

API_KEY = "e2e-sessions-key-" + uuid.uuid4().hex
CONNECTION_KEY = "e2e-connection-key-" + uuid.uuid4().hex
VAULT_KEY = Fernet.generate_key().decode()
PROBLEM = "urn:instore-integration:problem:"
BODY = {"locationId": "store-berlin-01", "workstationId": "pos-3"}


@dataclass
class Stack:
    fakes: Service
    gateways: list[Service]
    issuer: str


@pytest.fixture(scope="module")
def stack(kafka: Kafka, redis: RedisServer) -> Iterator[Stack]:
    fakes_port = free_port()
    issuer = f"http://127.0.0.1:{fakes_port}/ims"
    fakes = start_service(
        "dev-fakes",
        "instore_devfakes",
        {
            "DEVFAKES_HTTP_PORT": str(fakes_port),
            "DEVFAKES_ISSUER": issuer,
            "DEVFAKES_CONNECTION_KEY": CONNECTION_KEY,
            "DEVFAKES_TENANT_ID": "e2e-tenant",
        },
        fakes_port,
        ready_path="/healthz",
    )
    gateways: list[Service] = []
    try:
        for name in ("gateway-s1", "gateway-s2"):
            port = free_port()
            gateways.append(
                start_service(
                    name,
                    "instore_gateway",
                    {
                        "KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
                        "KAFKA_TOPIC_PARTITIONS": "3",
                        "GATEWAY_HTTP_PORT": str(port),
                        "INSTORE_CALLBACK_API_KEY": API_KEY,
                        "TOKEN_VAULT_BACKEND": "redis",
                        "TOKEN_VAULT_REDIS_URL": redis.url,
                        "TOKEN_VAULT_ENCRYPTION_KEYS": VAULT_KEY,
                        "IMS_JWKS_URL": f"{issuer}/.well-known/jwks.json",
                        "IMS_ISSUER": issuer,
                        "INSTORE_AUTH_BASE_URL": f"http://127.0.0.1:{fakes_port}/instore-auth",
                        "INSTORE_TENANT_ID": "e2e-tenant",
                        "INSTORE_CONNECTION_KEY": CONNECTION_KEY,
                        "INSTORE_AUTH_TIMEOUT_SECONDS": "1",
                    },
                    port,
                )
            )
        yield Stack(fakes, gateways, issuer)
    finally:
        for service in [*gateways, fakes]:
            service.stop()


def _mint(stack: Stack, **claims: Any) -> str:
    response = httpx.post(f"{stack.fakes.url}/ims/token", json={"userId": "colleague-42", **claims})
    response.raise_for_status()
    return response.json()["idToken"]


def _session(gateway: Service, token: str) -> httpx.Response:
    return httpx.post(f"{gateway.url}/sessions", json=BODY, headers={"Authorization": f"Bearer {token}"}, timeout=10)


def _problem(response: httpx.Response, status: int, slug: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert body["type"] == PROBLEM + slug
    return body


def _control(stack: Stack, mode: str, delay: float = 0) -> None:
    httpx.post(f"{stack.fakes.url}/_control", json={"mode": mode, "delaySeconds": delay}).raise_for_status()


SEEN: dict[str, str] = {}


def test_session_on_one_replica_token_from_the_other(stack: Stack) -> None:
    created = _session(stack.gateways[0], _mint(stack))
    assert created.status_code == 201, created.text
    body = created.json()
    assert set(body) == {"userAccessToken", "userKey", "expiresAt"}
    SEEN.update(token=body["userAccessToken"], user_key=body["userKey"])
    fetched = httpx.get(f"{stack.gateways[1].url}/instore/callbacks/tokens/{body['userKey']}", headers={"X-Api-Key": API_KEY})
    assert fetched.status_code == 200, fetched.text
    assert fetched.json()["access_token"] == body["userAccessToken"]
    assert fetched.json()["token_type"] == "Bearer" and 0 < fetched.json()["expires_in"] <= 3600
    last = httpx.get(f"{stack.fakes.url}/_control").json()["lastRequest"]
    assert last == {"tenantId": "e2e-tenant", "userId": "colleague-42", "scopes": []}


async def test_session_started_event_is_on_kafka_without_secrets(stack: Stack, kafka: Kafka) -> None:
    from aiokafka import AIOKafkaConsumer

    user = f"colleague-{uuid.uuid4().hex[:6]}"
    assert _session(stack.gateways[1], _mint(stack, userId=user)).status_code == 201
    consumer = AIOKafkaConsumer(
        "instore.session-events.v1", bootstrap_servers=kafka.bootstrap_servers, auto_offset_reset="earliest", group_id=None
    )
    await consumer.start()
    found: list[dict[str, Any]] = []
    try:
        deadline = time.monotonic() + 20
        while not found and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=500)
            for records in batch.values():
                for record in records:
                    event = json.loads(record.value)
                    if event["userId"] == user:
                        found.append(event)
                        assert record.key == user.encode()
                        assert CONNECTION_KEY.encode() not in record.value
    finally:
        await consumer.stop()
    assert found and found[0]["type"] == "session-started" and found[0]["locationId"] == "store-berlin-01"


def _host_events(gateway: Service, batch: dict[str, Any], token: str, user_key: str) -> httpx.Response:
    return httpx.post(
        f"{gateway.url}/host/events", json=batch, timeout=10, headers={"Authorization": f"Bearer {token}", "X-User-Key": user_key}
    )


async def test_browser_events_of_a_session_reach_kafka_with_its_colleague_and_workstation(stack: Stack, kafka: Kafka) -> None:
    """The host app forwards InStore's window events: session on one replica, events through the other (Redis vault)."""
    from aiokafka import AIOKafkaConsumer

    user = f"colleague-{uuid.uuid4().hex[:6]}"
    token = _mint(stack, userId=user)
    user_key = _session(stack.gateways[0], token).json()["userKey"]
    cart = f"cart-{uuid.uuid4().hex[:8]}"
    batch = {
        "events": [
            {"type": "mistStatus", "detail": {"process": "checkout", "status": "success"}, "cartId": cart, "id": "e1"},
            {"type": "inStoreCore-Alert", "detail": {"message": "Zahlung erfolgreich"}, "cartId": cart, "id": "e2"},
            {"type": "inStoreCore-receiptChoice", "detail": "email", "cartId": cart, "id": "e3"},
        ]
    }
    answer = _host_events(stack.gateways[1], batch, token, user_key)
    assert answer.status_code == 202, answer.text
    other = _host_events(stack.gateways[1], batch, _mint(stack), user_key)
    _problem(other, 403, "session-mismatch")  # colleague-42's valid token with this colleague's session
    consumer = AIOKafkaConsumer(
        "instore.host-events.v1", bootstrap_servers=kafka.bootstrap_servers, auto_offset_reset="earliest", group_id=None
    )
    await consumer.start()
    found: list[tuple[bytes, dict[str, Any]]] = []
    try:
        deadline = time.monotonic() + 20
        while len(found) < 3 and time.monotonic() < deadline:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                found += [(r.key, json.loads(r.value)) for r in records if json.loads(r.value)["cartId"] == cart]
    finally:
        await consumer.stop()
    assert [event["type"] for _, event in found] == ["mistStatus", "inStoreCore-Alert", "inStoreCore-receiptChoice"]
    assert all(key == cart.encode() for key, _ in found)
    assert {(e["colleagueId"], e["locationId"], e["workstationId"]) for _, e in found} == {
        (user, BODY["locationId"], BODY["workstationId"])
    }
    assert [e["eventId"] for _, e in found] == answer.json()["eventIds"]


def _foreign_token(stack: Stack, **overrides: Any) -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    now = int(time.time())
    claims = {"iss": stack.issuer, "aud": "instore-integration", "sub": "intruder", "iat": now, "exp": now + 300}
    claims.update(overrides)
    return jwt.encode(claims, key, algorithm="RS256", headers={"kid": overrides.pop("kid", "unknown-kid")})


@pytest.mark.parametrize("case", ["expired", "not-yet-valid", "other-audience", "other-issuer-key", "alg-none", "garbage"])
def test_bad_ims_tokens_are_401(stack: Stack, case: str) -> None:
    token = {
        "expired": lambda: _mint(stack, ttlSeconds=-120),
        "not-yet-valid": lambda: _mint(stack, notBeforeSeconds=600),
        "other-audience": lambda: _mint(stack, audience="another-app"),
        "other-issuer-key": lambda: _foreign_token(stack),
        "alg-none": lambda: jwt.encode(
            {"iss": stack.issuer, "aud": "instore-integration", "sub": "x", "exp": int(time.time()) + 60}, None, algorithm="none"
        ),
        "garbage": lambda: "not.a.jwt",
    }[case]()
    _problem(_session(stack.gateways[0], token), 401, "unauthorized")


def test_user_key_errors(stack: Stack) -> None:
    gateway = stack.gateways[1]
    _problem(
        httpx.get(f"{gateway.url}/instore/callbacks/tokens/{'Q' * 43}", headers={"X-Api-Key": API_KEY}), 404, "user-key-not-found"
    )
    _problem(
        httpx.get(f"{gateway.url}/instore/callbacks/tokens/not-a-key", headers={"X-Api-Key": API_KEY}), 400, "invalid-user-key"
    )
    _problem(httpx.get(f"{gateway.url}/instore/callbacks/tokens/{'Q' * 43}", headers={"X-Api-Key": "wrong"}), 401, "unauthorized")


def test_instore_auth_down_is_502_and_slow_is_504(stack: Stack) -> None:
    token = _mint(stack)
    try:
        _control(stack, "down")
        _problem(_session(stack.gateways[0], token), 502, "instore-auth-unavailable")
        _control(stack, "error")
        _problem(_session(stack.gateways[0], token), 502, "instore-auth-unavailable")
        _control(stack, "slow", delay=3)
        started = time.monotonic()
        _problem(_session(stack.gateways[1], token), 504, "instore-auth-timeout")
        assert time.monotonic() - started < 2.5
    finally:
        _control(stack, "ok")
    assert _session(stack.gateways[0], token).status_code == 201


def test_no_secret_in_any_log_line(stack: Stack) -> None:
    """Last on purpose: reads what every earlier test made the processes log."""
    assert SEEN, "the session test must run first"
    for service in [*stack.gateways, stack.fakes]:
        output = service.process.output()
        for secret in (SEEN["token"], SEEN["user_key"], CONNECTION_KEY, API_KEY, VAULT_KEY):
            assert secret not in output, f"{service.process.name} logged a secret"
