"""The fault suite's proxy (faults/proxy.py): what it forwards, what it answers itself, and its marker matcher."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator

import httpx
import pytest
from aiohttp import web

from faults.proxy import FaultProxy, Faults, is_marker_write
from instore_shared.commercetools.errors import ConcurrentModification, TransientError, error_from_response
from tests.support.processes import free_port


def test_the_marker_matcher_knows_the_order_state_marker_the_refund_marker_and_the_published_custom_object() -> None:
    assert is_marker_write(
        "POST", "/p/orders/o-1", {"version": 3, "actions": [{"action": "changeOrderState", "orderState": "Confirmed"}]}
    )
    assert is_marker_write(
        "POST",
        "/p/orders/o-1",
        {"version": 3, "actions": [{"action": "setReturnPaymentState", "returnItemId": "r", "paymentState": "Refunded"}]},
    )
    assert is_marker_write(
        "POST",
        "/p/custom-objects",
        {"container": "c", "key": "o-1", "version": 3, "value": {"state": "published", "eventId": "e"}},
    )
    assert not is_marker_write(
        "POST", "/p/custom-objects", {"container": "c", "key": "o-1", "version": 0, "value": {"state": "claimed", "eventId": "e"}}
    )
    assert not is_marker_write("POST", "/p/orders/o-1", {"version": 3, "actions": [{"action": "addReturnInfo"}]})
    assert not is_marker_write("POST", "/p/orders", {"version": 1, "cart": {"id": "c"}})
    assert not is_marker_write("GET", "/p/custom-objects/c/o-1", None)


@pytest.fixture
async def upstream() -> AsyncIterator[str]:
    async def token(_: web.Request) -> web.Response:
        return web.json_response({"access_token": "tok", "expires_in": 172800, "token_type": "Bearer"})

    async def anything(request: web.Request) -> web.Response:
        return web.json_response({"path": request.path, "body": (await request.read()).decode()})

    app = web.Application()
    app.router.add_post("/oauth/token", token)
    app.router.add_route("*", "/{tail:.*}", anything)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield f"http://127.0.0.1:{port}"
    await runner.cleanup()


async def test_forwards_and_rewrites_the_token_lifetime(upstream: str) -> None:
    proxy = FaultProxy(upstream, Faults(token_ttl_seconds=2))
    url = proxy.start(free_port())
    try:
        async with httpx.AsyncClient() as c:
            token = (await c.post(f"{url}/oauth/token", data={"grant_type": "client_credentials"})).json()
            echoed = (await c.post(f"{url}/p/orders/o-1", json={"version": 4, "actions": []})).json()
    finally:
        proxy.stop()
    assert token == {"access_token": "tok", "expires_in": 2, "token_type": "Bearer"}
    assert echoed["path"] == "/p/orders/o-1" and json.loads(echoed["body"]) == {"version": 4, "actions": []}


async def test_a_409_is_the_official_concurrent_modification_error_with_the_current_version(upstream: str) -> None:
    proxy = FaultProxy(upstream, Faults(share=1.0, kinds=("409",)))
    url = proxy.start(free_port())
    try:
        async with httpx.AsyncClient() as c:
            write = await c.post(f"{url}/p/orders/o-1", json={"version": 7, "actions": []})
            read = await c.get(f"{url}/p/orders/o-1")  # a read cannot conflict: 503 instead
            token = await c.post(f"{url}/oauth/token", data={"grant_type": "client_credentials"})
    finally:
        proxy.stop()
    assert write.status_code == 409
    error = error_from_response(409, write.content)
    assert isinstance(error, ConcurrentModification) and error.current_version == 7
    assert write.json()["errors"][0]["code"] == "ConcurrentModification"
    assert read.status_code == 503 and isinstance(error_from_response(503, read.content), TransientError)
    assert token.status_code == 503
    assert proxy.stats.injected == {"409": 1, "503": 1, "token-503": 1}


async def test_a_marker_outage_refuses_only_marker_writes_and_ends_on_time(upstream: str) -> None:
    faults = Faults(marker_outage_until=time.monotonic() + 60)
    proxy = FaultProxy(upstream, faults)
    url = proxy.start(free_port())
    marker = {"version": 2, "actions": [{"action": "changeOrderState", "orderState": "Confirmed"}]}
    try:
        async with httpx.AsyncClient() as c:
            refused = await c.post(f"{url}/p/orders/o-1", json=marker)
            other = await c.post(f"{url}/p/orders/o-1", json={"version": 2, "actions": [{"action": "addReturnInfo"}]})
            faults.marker_outage_until = time.monotonic() - 1
            after = await c.post(f"{url}/p/orders/o-1", json=marker)
    finally:
        proxy.stop()
    assert (refused.status_code, other.status_code, after.status_code) == (503, 200, 200)


async def test_a_hang_outlasts_the_client_timeout(upstream: str) -> None:
    proxy = FaultProxy(upstream, Faults(share=1.0, kinds=("hang",), hang_seconds=2.0))
    url = proxy.start(free_port())
    try:
        async with httpx.AsyncClient(timeout=0.5) as c:
            with pytest.raises(httpx.ReadTimeout):
                await c.get(f"{url}/p/carts/c-1")
    finally:
        proxy.stop()
