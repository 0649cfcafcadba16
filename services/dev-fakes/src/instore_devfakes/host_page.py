"""The reference host page (``GET /host``) and the server half of its stand-in InStore component — development only.

The page (``host_page.html``) plays the retailer's host app with our browser helper
(``host/instore-host.js``, served at ``/host/instore-host.js``): sign in at the local IMS, open a
session at the gateway, and render "InStore" for a cart. Without ``INSTORE_REMOTE_ENTRY_URL``
the component is a stand-in of ours that plays InStore's checkout in the page and dispatches the
documented window events. What InStore itself would do server-side — create the cart in
Composable Commerce, take the payment, send the signed payment webhook — the stand-in asks
this module for (``/host/api/*``), so **the browser holds no secret**: the Composable
Commerce credentials and the webhook secret stay in this process (the dev fakes play InStore).

Routes: ``POST /host/api/carts`` → ``{"cartId", "total": {"centAmount", "currencyCode"}}`` (a new
sale cart for the session's location and workstation: body ``{"locationId", "workstationId",
"userId"}``); ``POST /host/api/carts/{id}/pay`` ``{"outcome": "approve" | "decline"}`` → 200
``{"webhookId"}`` (a charged card Payment on the cart and the signed payment webhook to the
gateway) or 402 ``{"message"}`` (declined, nothing charged); ``GET /host/api/carts/{id}/order`` →
``{"orderNumber"}`` once order-finalization created the Order, else 404.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import uuid
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

import httpx
from litestar import Response, Router, get, post
from litestar.exceptions import HTTPException
from litestar.params import JSONBody, Parameter

from instore_devfakes.instore_samples import payment_webhook
from instore_devfakes.settings import DevFakesSettings
from instore_shared.commercetools import CommercetoolsClient
from instore_shared.settings import CommercetoolsSettings

HERE = Path(__file__).resolve().parent
HELPER = HERE.parents[3] / "host" / "instore-host.js"
"""The browser helper in the repository (not in a container image: the page is for `make run`)."""

CartId = Annotated[str, Parameter(description="a Cart id", pattern=r"^[A-Za-z0-9_-]{2,256}$")]


def host_router(settings: DevFakesSettings) -> Router:
    """``/host`` and ``/host/api`` (needs ``CTP_*`` for the mock and ``DEVFAKES_GATEWAY_URL``; the page says so
    when they are missing)."""

    def commerce() -> CommercetoolsClient:
        ctp = CommercetoolsSettings()
        if urlsplit(ctp.api_url).hostname not in ("127.0.0.1", "localhost", "::1"):
            # it creates carts and charged Payments: never in a real project
            raise HTTPException(
                status_code=403,
                detail="the reference page works only against the local commercetools mock (CTP_API_URL on 127.0.0.1)",
            )
        return CommercetoolsClient(ctp)

    @get("/", media_type="text/html", sync_to_thread=False)
    def page() -> Response[bytes]:
        html = (HERE / "host_page.html").read_text(encoding="utf-8")
        html = html.replace("__REMOTE_ENTRY_URL__", json.dumps(settings.remote_entry_url))
        html = html.replace("__GATEWAY_URL__", json.dumps(settings.gateway_url))
        return Response(html.encode(), media_type="text/html", headers={"Cache-Control": "no-store"})

    @get("/instore-host.js", sync_to_thread=False)
    def helper() -> Response[bytes]:
        if not HELPER.is_file():
            return Response(
                b"// host/instore-host.js is not here (a container image?)", status_code=404, media_type="text/javascript"
            )
        return Response(HELPER.read_bytes(), media_type="text/javascript")

    @post("/api/carts", status_code=201)
    async def new_cart(data: JSONBody[dict[str, Any]]) -> dict[str, Any]:
        location = str(data.get("locationId") or "store-berlin-01")
        async with commerce() as c:
            cart = (
                await c.request(
                    "POST",
                    "/carts",
                    json={
                        "key": f"host-sale-{uuid.uuid4().hex[:10]}",
                        "currency": "EUR",
                        "country": "DE",
                        "lineItems": [{"sku": "SKU-TSHIRT-M", "quantity": 1}, {"sku": "SKU-MUG", "quantity": 1}],
                        "custom": {
                            "type": {"typeId": "type", "key": "instore-order"},
                            "fields": {
                                "locationId": location,
                                "workstationId": str(data.get("workstationId") or "pos-3"),
                                "userId": str(data.get("userId") or "colleague-42"),
                                "orderType": "sale",
                                "orderNumber": f"{location}-{uuid.uuid4().int % 10**8:08d}",
                            },
                        },
                    },
                )
            ).json()
        return {"cartId": cart["id"], "total": {k: cart["totalPrice"][k] for k in ("centAmount", "currencyCode")}}

    @post("/api/carts/{cart_id:str}/pay", status_code=200)
    async def pay(cart_id: CartId, data: JSONBody[dict[str, Any]]) -> Response[Any]:
        if data.get("outcome") == "decline":
            return Response({"message": "Card declined (insufficient funds)"}, status_code=402)
        async with commerce() as c:
            cart = (await c.get_cart(cart_id)).json()
            money = {"currencyCode": cart["totalPrice"]["currencyCode"], "centAmount": cart["totalPrice"]["centAmount"]}
            payment = (
                await c.request(
                    "POST",
                    "/payments",
                    json={
                        "amountPlanned": money,
                        "paymentMethodInfo": {"method": "CREDIT_CARD", "paymentInterface": "host-page"},
                        "transactions": [
                            {
                                "type": "Charge",
                                "state": "Success",
                                "amount": money,
                                "interactionId": f"psp-{uuid.uuid4().hex[:8]}",
                            }
                        ],
                    },
                )
            ).json()
            await c.update(
                "carts",
                cart["id"],
                cart["version"],
                [{"action": "addPayment", "payment": {"typeId": "payment", "id": payment["id"]}}],
            )
        body = payment_webhook(cart_id, f"host-{uuid.uuid4().hex}")
        secret = settings.webhook_secret.get_secret_value().encode()
        async with httpx.AsyncClient(timeout=10) as http:
            answer = await http.post(
                f"{settings.gateway_url.rstrip('/')}/instore/webhooks",
                content=body,
                headers={"X-Signature": hmac.new(secret, body, hashlib.sha256).hexdigest(), "Content-Type": "application/json"},
            )
        if answer.status_code != 202:
            return Response({"message": f"the gateway answered the webhook {answer.status_code}"}, status_code=502)
        return Response({"webhookId": answer.json()["webhookId"]})

    @get("/api/carts/{cart_id:str}/order")
    async def order(cart_id: CartId) -> Response[Any]:
        async with commerce() as c:
            found = await c.find_order_by_cart(cart_id)
        if found is None:
            return Response({"message": "no Order yet"}, status_code=404)
        return Response({"orderNumber": found.json().get("orderNumber"), "orderId": found.json().get("id")})

    return Router("/host", route_handlers=[page, helper, new_cart, pay, order])
