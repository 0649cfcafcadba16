"""The API documents (issue 15 part 6): valid against the official schemas, complete, committed up to date.

- OpenAPI 3.1: the JSON Schema bundled with ``openapi-spec-validator`` (the OpenAPI Initiative's
  ``schema.json``, 2022-10-07) plus that package's own checks;
- AsyncAPI 3.0: ``tests/support/schemas/asyncapi-3.0.0.json``, vendored from the npm package
  ``@asyncapi/specs`` (see the README beside it) — no network in CI;
- every topic of the registry (dead-letter topics included) is a channel, every gateway route an
  operation, every Kafka service's FastStream subscriptions a ``receive`` of that service;
- ``docs/api/*.json`` equal what ``make api-docs`` generates.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any
from unittest import mock

import httpx
import jsonschema
import msgspec
import openapi_spec_validator
import pytest
from litestar.routes import HTTPRoute
from litestar.testing import TestClient
from openapi_spec_validator import validate as validate_openapi

from instore_gateway import api_docs
from instore_gateway.app import Ports, create_app
from instore_gateway.settings import GatewaySettings
from instore_gateway.vault import InMemoryTokenVault
from instore_shared.kafka import asyncapi
from instore_shared.kafka.dlq import DLQ_SUFFIX, dlq_topic
from instore_shared.kafka.topics import ALL_TOPICS
from tests.fakes.commerce import InMemoryCommerce

REPO = Path(__file__).resolve().parents[2]
SCHEMAS = REPO / "tests" / "support" / "schemas"
OPENAPI_SCHEMA = Path(openapi_spec_validator.__file__).parent / "resources" / "schemas" / "v3.1" / "schema.json"


@cache
def openapi_doc() -> dict[str, Any]:
    return api_docs.openapi_document()


@cache
def asyncapi_doc() -> dict[str, Any]:
    return api_docs.asyncapi_document()


def _openapi_validator() -> jsonschema.Draft202012Validator:
    schema = json.loads(OPENAPI_SCHEMA.read_text())
    assert schema["$id"].startswith("https://spec.openapis.org/oas/3.1/schema/")
    return jsonschema.Draft202012Validator(schema)


def _asyncapi_validator() -> jsonschema.Draft7Validator:
    schema = json.loads((SCHEMAS / "asyncapi-3.0.0.json").read_text())
    assert schema["$id"] == "http://asyncapi.com/definitions/3.0.0/asyncapi.json"
    return jsonschema.Draft7Validator(schema)


def _errors(validator: Any, doc: dict[str, Any]) -> list[str]:
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message[:200]}" for e in validator.iter_errors(doc)]


# -- validity -------------------------------------------------------------------------
def test_the_openapi_document_is_valid_openapi_3_1() -> None:
    doc = openapi_doc()
    assert doc["openapi"].startswith("3.1")
    assert _errors(_openapi_validator(), doc) == []
    validate_openapi(doc)  # the package's checks beyond the JSON Schema (path parameters, references)


def test_the_asyncapi_document_is_valid_asyncapi_3_0() -> None:
    assert _errors(_asyncapi_validator(), asyncapi_doc()) == []


@pytest.mark.parametrize(
    ("which", "breakage"),
    [
        ("openapi", lambda d: d["paths"]["/healthz"]["get"].update(responses="none")),
        ("openapi", lambda d: d["components"]["securitySchemes"]["CallbackApiKey"].update({"in": "body"})),
        ("asyncapi", lambda d: next(iter(d["operations"].values())).update(action="publish")),
        ("asyncapi", lambda d: next(iter(d["channels"].values()))["bindings"]["kafka"].update(partitions="many")),
    ],
)
def test_the_validators_catch_a_broken_document(which: str, breakage: Any) -> None:
    """The schemas are really applied (a validator that accepts everything would pass the tests above)."""
    doc = json.loads(json.dumps(openapi_doc() if which == "openapi" else asyncapi_doc()))
    breakage(doc)
    validator = _openapi_validator() if which == "openapi" else _asyncapi_validator()
    assert _errors(validator, doc)


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield value
            else:
                yield from _refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _refs(value)


@pytest.mark.parametrize("which", ["openapi", "asyncapi"])
def test_every_reference_resolves_inside_the_document(which: str) -> None:
    doc = openapi_doc() if which == "openapi" else asyncapi_doc()
    refs = set(_refs(doc))
    assert refs
    for ref in refs:
        assert ref.startswith("#/"), ref
        node: Any = doc
        for part in ref[2:].split("/"):
            node = node[part.replace("~1", "/").replace("~0", "~")]


# -- committed copies and what is served ----------------------------------------------
def test_the_committed_copies_are_up_to_date() -> None:
    for name, content in api_docs.documents().items():
        committed = REPO / "docs" / "api" / name
        assert committed.read_text(encoding="utf-8") == content, f"docs/api/{name} is stale: run `make api-docs`"


def test_the_check_mode_reports_a_stale_copy(tmp_path: Path) -> None:
    assert api_docs.main(["--dir", str(tmp_path)]) == 0
    assert api_docs.main(["--check", "--dir", str(tmp_path)]) == 0
    (tmp_path / "asyncapi.json").write_text("{}\n")
    assert api_docs.main(["--check", "--dir", str(tmp_path)]) == 1


@pytest.fixture(params=[True, False], ids=["raw-route", "litestar-route"])
def gateway(request: pytest.FixtureRequest) -> Iterator[TestClient[Any]]:
    with mock.patch.dict(os.environ, clear=True):
        settings = GatewaySettings(instore_callback_api_key="document-generation-only")
    app = create_app(
        settings, Ports(cart_lookups=object(), events=object(), vault=InMemoryTokenVault()), raw_routes=request.param
    )  # type: ignore[arg-type]
    with TestClient(app) as client:
        yield client


def test_the_gateway_serves_the_committed_documents(gateway: TestClient[Any]) -> None:
    assert gateway.get("/schema/openapi.json").json() == openapi_doc()
    assert gateway.get("/asyncapi.json").json() == asyncapi_doc()


def test_the_gateway_serves_its_deployment_s_topic_names_under_a_prefix() -> None:
    with mock.patch.dict(os.environ, clear=True):
        settings = GatewaySettings(instore_callback_api_key="document-generation-only", kafka_topic_prefix="dev.")
    app = create_app(settings, Ports(cart_lookups=object(), events=object(), vault=InMemoryTokenVault()))  # type: ignore[arg-type]
    with TestClient(app) as client:
        served = client.get("/asyncapi.json").json()
    plain = asyncapi_doc()
    assert served.keys() == plain.keys() and served["channels"].keys() == plain["channels"].keys()
    assert served["operations"].keys() == plain["operations"].keys()
    for cid, channel in served["channels"].items():
        assert channel["address"] == "dev." + plain["channels"][cid]["address"]
        assert channel["bindings"]["kafka"]["topic"] == channel["address"]
    groups = {
        group
        for op in served["operations"].values()
        for group in op.get("bindings", {}).get("kafka", {}).get("groupId", {}).get("enum", [])
    }
    assert groups and all(g.startswith("dev.") for g in groups)
    assert _errors(_asyncapi_validator(), served) == []


# -- completeness: AsyncAPI -----------------------------------------------------------
def _channel_of(doc: dict[str, Any], operation: dict[str, Any]) -> str:
    address: str = doc["channels"][operation["channel"]["$ref"].rsplit("/", 1)[1]]["address"]
    return address


def test_every_topic_of_the_registry_is_a_channel_with_its_message() -> None:
    doc = asyncapi_doc()
    by_address = {channel["address"]: channel for channel in doc["channels"].values()}
    assert set(by_address) == {topic.name for topic in ALL_TOPICS}
    for topic in ALL_TOPICS:
        message = doc["components"]["messages"][asyncapi.channel_id(topic)]
        assert message["bindings"]["kafka"]["key"]["description"] == topic.key
        struct = asyncapi.payload_struct(topic)
        if struct is not None:  # the Struct's own JSON Schema
            (ref,), expected = msgspec.json.schema_components([struct], ref_template="#/components/schemas/{name}")
            assert message["payload"] == ref == {"$ref": f"#/components/schemas/{struct.__name__}"}
            assert doc["components"]["schemas"][struct.__name__] == expected[struct.__name__]
        else:
            assert message["payload"]["description"], f"{topic.name}: raw bytes, documented"


def test_every_dead_letter_topic_is_a_channel_of_its_source() -> None:
    """Each topic a service reads in a consumer group (the ones that dead-letter) has its DLQ in the document,
    sent by that service; each DLQ is read by the replay command, which sends back to the source."""
    doc = asyncapi_doc()
    ops = [(op["tags"][0]["name"], op["action"], _channel_of(doc, op)) for op in doc["operations"].values()]
    dlqs = {topic.name for topic in ALL_TOPICS if topic.name.endswith(DLQ_SUFFIX)}
    assert dlqs == {"instore.webhooks.v1.dlq", "instore.payment-requests.v1.dlq"}
    for dlq in dlqs:
        source = dlq.removesuffix(DLQ_SUFFIX)
        assert ("replay-dlq", "receive", dlq) in ops and ("replay-dlq", "send", source) in ops
        headers = doc["components"]["messages"][dlq.replace(".", "_")]["headers"]
        assert "dlq-error-reason" in headers["required"]
    for by, action, address in ops:
        op = next(o for o in asyncapi.OPERATIONS if o.by == by and o.action == action and o.topic.name == address)
        if action == "receive" and op.group is not None and by != "cart-mapping":
            assert (by, "send", dlq_topic(address)) in ops, f"{by} dead-letters {address}"


def test_every_channel_has_an_operation_or_says_it_is_for_downstream_consumers() -> None:
    doc = asyncapi_doc()
    used = {_channel_of(doc, op) for op in doc["operations"].values()}
    for channel in doc["channels"].values():
        sent = channel["address"] in used
        assert sent or "downstream" in channel["description"], channel["address"]
    written = {_channel_of(doc, op) for op in doc["operations"].values() if op["action"] == "send"}
    assert written == {topic.name for topic in ALL_TOPICS}, "every topic is written by someone of ours"


async def test_every_kafka_service_subscription_is_a_receive_of_that_service() -> None:
    """Cross-check with FastStream's own view (each service's /asyncapi.json, generated from its subscribers)."""
    from instore_cart_mapping.app import create_app as cart_mapping_app
    from instore_order_finalization.app import create_app as order_finalization_app
    from instore_payment_extension.app import create_app as payment_extension_app
    from instore_refund.app import create_app as refund_app

    doc = asyncapi_doc()
    receives = {(op["tags"][0]["name"], _channel_of(doc, op)) for op in doc["operations"].values() if op["action"] == "receive"}
    for name, factory in (
        ("cart-mapping", cart_mapping_app),
        ("order-finalization", order_finalization_app),
        ("refund", refund_app),
        ("payment-extension", payment_extension_app),
    ):
        app = factory(commerce=InMemoryCommerce())
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://svc") as client:
            own = (await client.get("/asyncapi.json")).json()
        subscribed = {
            own["channels"][op["channel"]["$ref"].rsplit("/", 1)[1]]["address"]
            for op in own["operations"].values()
            if op["action"] == "receive"
        } - {address for address in _addresses(own) if address.startswith("/")}  # FastStream lists its HTTP routes too
        assert subscribed, name
        assert {(name, address) for address in subscribed} <= receives, name


def _addresses(doc: dict[str, Any]) -> set[str]:
    return {channel["address"] for channel in doc["channels"].values()}


# -- completeness: OpenAPI ------------------------------------------------------------
_NOT_DOCUMENTED = {"/schema", "/schema/{path}"}
"""The document's viewer and its not-found page (the document itself, /schema/openapi.json, is documented)."""


def test_every_gateway_route_is_an_operation_and_every_get_has_its_head(gateway: TestClient[Any]) -> None:
    paths = openapi_doc()["paths"]
    routes = [r for r in gateway.app.routes if isinstance(r, HTTPRoute)]
    assert len(routes) > 10
    for route in routes:
        path = re.sub(r"\{(\w+):\w+\}", r"{\1}", route.path)
        if path in _NOT_DOCUMENTED:
            continue
        for method in route.methods - {"OPTIONS"}:
            assert method.lower() in paths.get(path, {}), f"{method} {path} is not in the OpenAPI document"
        if "GET" in route.methods:
            assert "head" in paths[path], f"HEAD {path}"
            assert gateway.head(path.replace("{cartId}", "c-1").replace("{userKey}", "u")).status_code != 405


def test_every_operation_states_its_security_and_the_signed_ones_their_body() -> None:
    doc = openapi_doc()
    schemes = doc["components"]["securitySchemes"]
    assert {"CallbackApiKey", "ImsBearer", "SessionUserKey"} <= set(schemes)
    signatures = {name for name, s in schemes.items() if name.startswith("Signature-")}
    assert {schemes[n]["name"] for n in signatures} == {"X-Signature", "verification-signature"}
    assert all(schemes[n]["type"] == "apiKey" and schemes[n]["in"] == "header" for n in signatures)
    assert "HMAC-SHA256" in schemes["Signature-X-Signature"]["description"]
    expected = {
        "/instore/callbacks/carts/{cartId}": [{"CallbackApiKey": []}],
        "/instore/callbacks/return-carts/{cartId}": [{"CallbackApiKey": []}],
        "/instore/callbacks/tokens/{userKey}": [{"CallbackApiKey": []}],
        "/sessions": [{"ImsBearer": []}],
        "/host/events": [{"ImsBearer": [], "SessionUserKey": []}],
        "/instore/webhooks": [{"Signature-X-Signature": []}, {"Signature-verification-signature": []}],
        "/instore/payment-extensions/prompt-answers": [{"Signature-X-Signature": []}, {"Signature-verification-signature": []}],
        "/instore/payment-extensions/{tender}/{action}": [
            {"Signature-X-Signature": []},
            {"Signature-verification-signature": []},
        ],
        "/healthz": [],
        "/readyz": [],
        "/metrics": [],
    }
    for path, item in doc["paths"].items():
        for method, operation in item.items():
            assert "security" in operation, f"{method.upper()} {path} states no security"
            if path in expected:
                assert operation["security"] == expected[path], f"{method.upper()} {path}"
            if path.startswith(("/instore/", "/sessions", "/host/")):
                assert operation["security"], f"{method.upper()} {path} must not be public"
    for path, schema_hint in (
        ("/instore/webhooks", "cartId"),
        ("/instore/payment-extensions/{tender}/{action}", "#/components/schemas/PaymentExtensionRequest"),
        ("/instore/payment-extensions/prompt-answers", "#/components/schemas/PromptAnswer"),
    ):
        body = doc["paths"][path]["post"]["requestBody"]
        assert body["required"] is True and isinstance(body["x-max-body-bytes"], int)
        assert "Content-Type is not checked" in body["description"]
        assert schema_hint in json.dumps(body["content"]["application/json"]["schema"])
    host = doc["paths"]["/host/events"]["post"]["requestBody"]
    assert host["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/EventBatch"}
    assert "415" in host["description"] and "415" in doc["paths"]["/host/events"]["post"]["responses"]
    assert "415" in doc["paths"]["/sessions"]["post"]["responses"]


def test_every_error_answer_is_a_problem_body() -> None:
    doc = openapi_doc()
    problem = {"$ref": "#/components/schemas/Problem"}
    assert set(doc["components"]["schemas"]["Problem"]["properties"]) >= {"type", "title", "status", "detail"}
    count = 0
    for path, item in doc["paths"].items():
        for method, operation in item.items():
            for status, response in operation["responses"].items():
                if int(status) < 400:
                    continue
                if method == "head":
                    assert "content" not in response
                    continue
                count += 1
                assert response["content"] == {"application/problem+json": {"schema": problem}}, (
                    f"{method.upper()} {path} {status}"
                )
    assert count > 40
