"""POST /host/events: the browser events of InStore's component, from a signed-in colleague's session, into Kafka."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from litestar.testing import TestClient

from instore_gateway.app import Ports, create_app
from instore_gateway.identity import Colleague, InvalidIdentity
from instore_gateway.settings import GatewaySettings
from instore_gateway.vault import InMemoryTokenVault, StoredToken
from instore_shared.kafka.rpc import BrokerUnavailable, NotAcknowledged
from tests.unit.test_sessions import API_KEY, GOOD, FakeAuth, FakeLookups, _problem

OTHER = "other-ims-token"
USER_KEY = "k" * 43


class Ims:
    async def verify(self, token: str) -> Colleague:
        if token == GOOD:
            return Colleague("colleague-42", "Ada")
        if token == OTHER:
            return Colleague("colleague-7", "Bob")
        raise InvalidIdentity("bad-signature")

    async def aclose(self) -> None: ...


class Events:
    def __init__(self) -> None:
        self.published: list[dict[str, Any]] = []
        self.fail: Exception | None = None

    async def publish(
        self, topic: str, key: str, value: bytes, *, message_type: str, timeout_s: float, headers: dict[str, str] | None = None
    ) -> None:
        if self.fail is not None:
            raise self.fail
        self.published.append({"topic": topic, "key": key, "value": json.loads(value), "headers": headers or {}})


@pytest.fixture
def gateway() -> Iterator[tuple[Events, TestClient[Any]]]:
    events, vault = Events(), InMemoryTokenVault()
    settings = GatewaySettings(
        instore_callback_api_key=API_KEY,
        host_events_max_batch=5,
        host_events_max_detail_bytes=256,
        host_events_rate_limit_per_minute=20,
    )
    app = create_app(settings, Ports(cart_lookups=FakeLookups(), events=events, vault=vault, ims=Ims(), instore_auth=FakeAuth()))  # type: ignore[arg-type]
    asyncio.run(
        vault.put(
            USER_KEY,
            StoredToken(
                access_token="uat-secret",
                expires_at=time.time() + 600,
                user_id="colleague-42",
                location_id="store-berlin-01",
                workstation_id="pos-3",
            ),
        )
    )
    with TestClient(app) as client:
        yield events, client


def _post(client: TestClient[Any], body: Any, token: str = GOOD, user_key: str | None = USER_KEY) -> Any:
    headers = {"Authorization": f"Bearer {token}"}
    if user_key is not None:
        headers["X-User-Key"] = user_key
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return client.post("/host/events", content=content, headers={**headers, "Content-Type": "application/json"})


MIST = {
    "type": "mistStatus",
    "detail": {"process": "checkout", "status": "success", "orderId": "o-1"},
    "cartId": "cart-1",
    "occurredAt": "2026-12-04T10:00:00Z",
    "id": "ev-1",
}
ALERT = {"type": "inStoreCore-Alert", "detail": {"message": "Karte einstecken", "level": "info"}}
RECEIPT = {"type": "inStoreCore-receiptChoice", "detail": "email"}
UNKNOWN = {"type": "inStoreCore-somethingNew", "detail": {"anything": [1, 2, 3]}}


def test_a_batch_is_published_with_who_and_where_from_the_session(gateway: tuple[Events, TestClient[Any]]) -> None:
    events, client = gateway
    response = _post(client, {"events": [MIST, ALERT, RECEIPT, UNKNOWN]})
    assert response.status_code == 202, response.text
    assert response.json()["accepted"] == 4
    assert [p["topic"] for p in events.published] == ["instore.host-events.v1"] * 4
    first = events.published[0]
    assert first["key"] == "cart-1" and events.published[1]["key"] == "pos-3"  # the cart, else the workstation
    value = first["value"]
    assert (value["colleagueId"], value["locationId"], value["workstationId"]) == ("colleague-42", "store-berlin-01", "pos-3")
    assert value["detail"] == MIST["detail"]  # extra fields (orderId) kept raw
    assert (
        events.published[3]["value"]["detail"] == UNKNOWN["detail"]
        and events.published[3]["value"]["type"] == "inStoreCore-somethingNew"
    )
    assert first["headers"]["event-id"] == value["eventId"] == response.json()["eventIds"][0]
    assert USER_KEY not in json.dumps(events.published) and "uat-secret" not in json.dumps(events.published)


def test_a_retried_batch_keeps_the_event_ids_of_events_with_an_id(gateway: tuple[Events, TestClient[Any]]) -> None:
    _, client = gateway
    first = _post(client, {"events": [MIST, ALERT]}).json()["eventIds"]
    second = _post(client, {"events": [MIST, ALERT]}).json()["eventIds"]
    assert first[0] == second[0] and first[1] != second[1]  # MIST has an id, ALERT none


def test_who_and_where_in_the_body_are_ignored(gateway: tuple[Events, TestClient[Any]]) -> None:
    events, client = gateway
    forged = {**ALERT, "colleagueId": "boss", "locationId": "hq", "workstationId": "x"}
    assert _post(client, {"events": [forged]}).status_code == 202
    value = events.published[0]["value"]
    assert (value["colleagueId"], value["locationId"], value["workstationId"]) == ("colleague-42", "store-berlin-01", "pos-3")


@pytest.mark.parametrize(
    ("token", "user_key", "status", "slug"),
    [
        ("nope", USER_KEY, 401, "unauthorized"),
        (GOOD, None, 401, "session-required"),
        (GOOD, "short", 401, "session-required"),
        (GOOD, "z" * 43, 401, "session-not-found"),
        (OTHER, USER_KEY, 403, "session-mismatch"),  # another colleague's valid token with this session's key
    ],
)
def test_no_session_of_this_colleague_no_events(
    gateway: tuple[Events, TestClient[Any]], token: str, user_key: str | None, status: int, slug: str
) -> None:
    events, client = gateway
    _problem(_post(client, {"events": [ALERT]}, token, user_key), status, slug)
    assert events.published == []


@pytest.mark.parametrize(
    ("body", "status", "slug"),
    [
        (b"{not json", 400, "not-json"),
        ({"events": []}, 422, "invalid-events"),
        ({"events": [ALERT] * 6}, 422, "invalid-events"),
        ({"events": [{"detail": {}}]}, 422, "invalid-events"),
        ({"events": [ALERT], "more": 1}, 422, "invalid-events"),
        ({"events": [{"type": "mistStatus", "detail": {"process": "checkout", "status": "great"}}]}, 422, "invalid-events"),
        ({"events": [{"type": "mistStatus", "detail": {"process": "shoplifting", "status": "success"}}]}, 422, "invalid-events"),
        ({"events": [{"type": "mistStatus", "detail": "success"}]}, 422, "invalid-events"),
        ({"events": [{"type": "inStoreCore-Alert", "detail": 5}]}, 422, "invalid-events"),
        ({"events": [{"type": "x" * 65}]}, 422, "invalid-events"),
        ({"events": [{"type": "big", "detail": "x" * 300}]}, 422, "invalid-events"),
        ({"events": [{**ALERT, "cartId": "a b"}]}, 422, "invalid-events"),
        ({"events": [ALERT, {"type": "mistStatus"}]}, 422, "invalid-events"),  # one bad event: none published
    ],
)
def test_bad_batches_get_a_problem_and_nothing_is_published(
    gateway: tuple[Events, TestClient[Any]], body: Any, status: int, slug: str
) -> None:
    events, client = gateway
    _problem(_post(client, body), status, slug)
    assert events.published == []


@pytest.mark.parametrize("error", [BrokerUnavailable("down"), NotAcknowledged("late")])
def test_kafka_not_taking_them_is_503(gateway: tuple[Events, TestClient[Any]], error: Exception) -> None:
    events, client = gateway
    events.fail = error
    response = _post(client, {"events": [ALERT]})
    _problem(response, 503, "events-not-stored")
    assert response.headers["retry-after"] == "2"


def test_batches_are_rate_limited_per_session(gateway: tuple[Events, TestClient[Any]]) -> None:
    _, client = gateway
    answers = [_post(client, {"events": [ALERT]}).status_code for _ in range(21)]
    assert answers[:20] == [202] * 20 and answers[20] == 429


def test_the_route_and_the_schemas_are_documented(gateway: tuple[Events, TestClient[Any]]) -> None:
    _, client = gateway
    paths = client.get("/schema/openapi.json").json()["paths"]
    assert {"/host/events", "/schemas/host-events-batch.json", "/schemas/host-event.json"} <= set(paths)
    event = client.get("/schemas/host-event.json").json()
    assert "HostEvent" in json.dumps(event) and "colleagueId" in json.dumps(event)
    assert "events" in json.dumps(client.get("/schemas/host-events-batch.json").json())


def test_the_asyncapi_document_describes_every_topic_the_gateway_writes(gateway: tuple[Events, TestClient[Any]]) -> None:
    _, client = gateway
    doc = client.get("/asyncapi.json").json()
    assert doc["asyncapi"] == "3.0.0"
    sent = {
        doc["channels"][op["channel"]["$ref"].rsplit("/", 1)[1]]["address"]
        for op in doc["operations"].values()
        if op["action"] == "send" and op["tags"] == [{"name": "gateway"}]
    }
    assert {
        "instore.host-events.v1",
        "instore.webhooks.v1",
        "instore.payment-requests.v1",
        "instore.payment-prompt-answers.v1",
        "instore.session-events.v1",
        "instore.cart-requests.v1",
    } == sent
    text = json.dumps(doc)
    assert "#/$defs/" not in text


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-ndjson", "multipart/form-data; boundary=x"])
def test_a_batch_not_labelled_json_is_refused_415(gateway: tuple[Events, TestClient[Any]], content_type: str | None) -> None:
    events, client = gateway
    headers = {"Authorization": f"Bearer {GOOD}", "X-User-Key": USER_KEY}
    headers |= {} if content_type is None else {"Content-Type": content_type}
    response = client.post("/host/events", content=json.dumps({"events": [ALERT]}).encode(), headers=headers)
    _problem(response, 415, "unsupported-media-type")
    assert response.headers["accept-post"] == "application/json"
    assert events.published == []


@pytest.mark.parametrize("content_type", ["application/json;charset=UTF-8", "APPLICATION/JSON", "application/vnd.x+json"])
def test_a_batch_labelled_with_any_json_media_type_is_taken(gateway: tuple[Events, TestClient[Any]], content_type: str) -> None:
    events, client = gateway
    headers = {"Authorization": f"Bearer {GOOD}", "X-User-Key": USER_KEY, "Content-Type": content_type}
    response = client.post("/host/events", content=json.dumps({"events": [ALERT]}).encode(), headers=headers)
    assert response.status_code == 202, response.text
    assert len(events.published) == 1
