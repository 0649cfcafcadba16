"""cart-mapping's documentation routes: AsyncAPI (without try-it-out) and the message JSON Schemas."""

from __future__ import annotations

import httpx

from instore_cart_mapping.app import create_app
from tests.fakes.commerce import InMemoryCommerce


async def test_asyncapi_and_schemas_are_served_and_nothing_publishes_over_http() -> None:
    app = create_app(commerce=InMemoryCommerce())
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://cm") as client:
        doc = (await client.get("/asyncapi.json")).json()
        request_schema = (await client.get("/schemas/cart-lookup-request.json")).json()
        reply_schema = (await client.get("/schemas/cart-lookup-reply.json")).json()
        try_it = await client.post("/asyncapi/try", json={"channelName": "cart-lookup", "message": {}})
    assert doc["channels"]["cart-lookup"]["address"] == "instore.cart-requests.v1"
    assert "cartRef" in request_schema["$defs"]["CartLookupRequest"]["properties"]
    assert set(reply_schema["$defs"]["CartLookupReplySchema"]["properties"]) == {"status", "cart", "reason", "detail"}
    assert try_it.status_code == 404


def test_reply_schema_mirror_has_the_fields_of_the_reply() -> None:
    from instore_shared.contract.cart_lookup import (
        CartLookupReply,
        CartLookupReplySchema,
    )

    assert CartLookupReply.__struct_fields__ == CartLookupReplySchema.__struct_fields__


async def test_the_webhook_consumers_serve_asyncapi_and_their_event_schemas() -> None:
    from instore_order_finalization.app import create_app as order_finalization_app
    from instore_refund.app import create_app as refund_app

    for app, channel_topic, schemas in [
        (
            order_finalization_app(commerce=InMemoryCommerce()),
            "instore.webhooks.v1",
            {"/schemas/payments-completed.json": "PaymentsCompleted"},
        ),
        (
            refund_app(commerce=InMemoryCommerce()),
            "instore.webhooks.v1",
            {"/schemas/refunds-completed.json": "RefundsCompleted", "/schemas/refund-webhook.json": "RefundWebhook"},
        ),
    ]:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://svc") as client:
            doc = (await client.get("/asyncapi.json")).json()
            assert [c["address"] for c in doc["channels"].values() if not c["address"].startswith("/")] == [channel_topic]
            for path, name in schemas.items():
                assert name in (await client.get(path)).json()["$defs"]
