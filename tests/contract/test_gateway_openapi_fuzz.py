"""Fuzz the gateway against its own OpenAPI document with schemathesis (issue 10 B5).

The gateway is served by the real HTTP server — uvicorn as ``instore_shared.service.http_config``
configures it, on a free port in this process — and reads its document from
``GET /schema/openapi.json``. Its ports are in-memory fakes (below): the document is about
the HTTP contract, not Kafka or Composable Commerce.

For every operation, schemathesis draws requests the document calls valid (positive) and
invalid (negative), a bounded number of each, and we require:

- no 5xx, ever, and every answer conforms to the document (status, content type, body);
- no schema-valid request refused: a positive request gets 2xx, or 404 (no such cart/user
  key), or 401 where only credentials are missing (the webhook's signature).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
import uvicorn
from hypothesis import HealthCheck, given, settings
from schemathesis.generation.modes import GenerationMode

from instore_gateway.app import Ports, create_app
from instore_gateway.identity import Colleague, InvalidIdentity
from instore_gateway.instore_auth import UserAccessToken
from instore_gateway.settings import GatewaySettings
from instore_gateway.vault import InMemoryTokenVault
from instore_shared.contract.cart_lookup import CartKind, CartLookupReply, LookupStatus
from instore_shared.service import http_config
from tests.support.processes import free_port, wait_until

API_KEY = "fuzz-callback-key-" + uuid.uuid4().hex
IMS_TOKEN = "fuzz-ims-token"
MAX_EXAMPLES = 40
"""Examples per operation and generation mode (7 operations; the whole run stays well under 60 s)."""


class FakeLookups:
    """Carts whose ref starts with ``found`` exist; every other ref is unknown."""

    async def lookup(self, kind: CartKind, cart_ref: str, correlation_id: str) -> CartLookupReply:
        if cart_ref.startswith("found"):
            import msgspec

            return CartLookupReply(status=LookupStatus.FOUND, cart=msgspec.Raw(msgspec.json.encode({"id": cart_ref})))
        return CartLookupReply(status=LookupStatus.NOT_FOUND, reason="cart-not-found", detail="no such cart")

    async def ready(self) -> bool:
        return True


class FakeIms:
    async def verify(self, token: str) -> Colleague:
        if token != IMS_TOKEN:
            raise InvalidIdentity("bad-signature")
        return Colleague("colleague-42", "Ada")

    async def aclose(self) -> None: ...


class FakeAuth:
    async def user_access_token(self, user_id: str, location_id: str, workstation_id: str) -> UserAccessToken:
        return UserAccessToken("uat-fuzz-token", time.time() + 600)

    async def aclose(self) -> None: ...


class FakeEvents:
    async def publish(
        self, topic: str, key: str, value: bytes, *, message_type: str, timeout_s: float, headers: dict[str, str] | None = None
    ) -> None:
        return None


@pytest.fixture(scope="module")
def gateway_url() -> Iterator[str]:
    settings_ = GatewaySettings(
        instore_callback_api_key=API_KEY, sessions_rate_limit_per_minute=100_000, instore_webhook_secret="fuzz-webhook-secret"
    )  # type: ignore[arg-type]
    app = create_app(
        settings_,
        Ports(
            cart_lookups=FakeLookups(), events=FakeEvents(), vault=InMemoryTokenVault(), ims=FakeIms(), instore_auth=FakeAuth()
        ),
    )  # type: ignore[arg-type]
    port = free_port()
    server = uvicorn.Server(http_config(app, "127.0.0.1", port))
    thread = threading.Thread(target=server.run, name="gateway-under-fuzz", daemon=True)
    thread.start()
    try:
        wait_until(lambda: server.started or not thread.is_alive(), 30, "the gateway to serve")
        assert server.started, "the gateway did not start"
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(15)


def _check(case: Any, mode: GenerationMode, calls: list[int]) -> None:
    calls.append(1)
    headers = {"X-Api-Key": API_KEY, "Authorization": f"Bearer {IMS_TOKEN}"}
    response = case.call(headers=headers)
    status = response.status_code
    request = f"{case.method} {case.formatted_path} {case.body!r:.200}"
    assert status < 500, f"{request} → {status} {response.text[:300]}"
    if mode is GenerationMode.POSITIVE:
        # besides 2xx: the cart or user key does not exist; the webhook or payment-extension request is
        # not signed (its signature is over the exact bytes sent, which a document cannot describe)
        webhook = case.path == "/instore/webhooks" or case.path.startswith("/instore/payment-extensions/")
        # and POST /host/events needs a session the gateway issued (a drawn user key names none)
        webhook = webhook or case.path == "/host/events"
        assert 200 <= status < 300 or (status == 404 and not webhook) or (status == 401 and webhook), (
            f"a schema-valid request was refused: {request} → {status} {response.text[:300]}"
        )
    case.validate_response(response, headers=headers)


def _fuzzer(strategy: Any, mode: GenerationMode, calls: list[int]) -> Any:
    @settings(max_examples=MAX_EXAMPLES, deadline=None, database=None, derandomize=True, suppress_health_check=list(HealthCheck))
    @given(strategy)
    def fuzz(case: Any) -> None:
        _check(case, mode, calls)

    return fuzz


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=lambda m: m.value)
def test_no_schema_valid_request_is_refused_and_nothing_fails(gateway_url: str, mode: GenerationMode) -> None:
    schema = schemathesis.openapi.from_url(gateway_url + "/schema/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 7, [op.label for op in operations]
    for operation in operations:
        spec = schema.raw_schema["paths"][operation.path][operation.method.lower()]
        has_inputs = bool(spec.get("parameters") or spec.get("requestBody"))
        if mode is GenerationMode.NEGATIVE and not has_inputs:
            continue  # nothing in it to make invalid (GET /healthz)
        calls: list[int] = []
        fuzz = _fuzzer(operation.as_strategy(generation_mode=mode), mode, calls)
        fuzz()
        assert len(calls) >= (5 if has_inputs else 1), f"{operation.label}: only {len(calls)} requests were drawn"
