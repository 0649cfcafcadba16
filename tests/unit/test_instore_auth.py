"""The InStore auth client: the assumed request shape, and every failure mapped."""

from __future__ import annotations

import json

import httpx
import pytest

from instore_gateway.instore_auth import (
    InStoreAuthClient,
    InStoreAuthTimeout,
    InStoreAuthUnavailable,
    render_body,
)
from instore_gateway.session_settings import DEFAULT_AUTH_BODY


def _client(handler: httpx.MockTransport, template: str = DEFAULT_AUTH_BODY) -> InStoreAuthClient:
    return InStoreAuthClient(
        "https://instore.example/api/",
        "/v1/user-token",
        template,
        "tenant-1",
        "conn-key-secret",
        ["sale", "refund"],
        2.0,
        transport=handler,
    )


async def test_request_is_built_from_the_template_and_answer_read_as_oauth() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"access_token": "uat-1", "token_type": "Bearer", "expires_in": 600})

    token = await _client(httpx.MockTransport(handler)).user_access_token("colleague-42", "loc-1", "ws-1")
    assert token.access_token == "uat-1"
    assert str(seen[0].url) == "https://instore.example/api/v1/user-token"
    assert json.loads(seen[0].content) == {
        "tenantId": "tenant-1",
        "userId": "colleague-42",
        "connectionKey": "conn-key-secret",
        "scopes": ["sale", "refund"],
    }


def test_values_cannot_inject_json_and_unknown_placeholders_fail() -> None:
    body = render_body(
        '{"u": "{userId}", "fixed": "x", "nested": ["{tenantId}"]}', {"userId": '", "admin": true, "x": "', "tenantId": "t"}
    )
    assert json.loads(body) == {"u": '", "admin": true, "x": "', "fixed": "x", "nested": ["t"]}
    with pytest.raises(ValueError):
        render_body('{"u": "{password}"}', {})
    with pytest.raises(ValueError):
        render_body("not json", {})


@pytest.mark.parametrize(
    "response",
    [
        httpx.Response(500),
        httpx.Response(503),
        httpx.Response(401, json={"error": "invalid_client"}),
        httpx.Response(200, content=b"<html>"),
        httpx.Response(200, json={"access_token": "", "expires_in": 60}),
        httpx.Response(200, json={"access_token": "t", "expires_in": 0}),
    ],
)
async def test_failures_are_unavailable(response: httpx.Response) -> None:
    with pytest.raises(InStoreAuthUnavailable):
        await _client(httpx.MockTransport(lambda r: response)).user_access_token("u", "l", "w")


async def test_timeout_and_network_errors_are_told_apart() -> None:
    def slow(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("slow", request=request)

    def down(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    with pytest.raises(InStoreAuthTimeout):
        await _client(httpx.MockTransport(slow)).user_access_token("u", "l", "w")
    with pytest.raises(InStoreAuthUnavailable):
        await _client(httpx.MockTransport(down)).user_access_token("u", "l", "w")
