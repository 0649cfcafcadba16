"""Contract: every request the Composable Commerce client sends validates against the official OpenAPI.

The client runs against the commercetools mock; an httpx request hook records each
request, and each is checked against ``../shared/commercetools/openapi.yaml`` (path,
method, query parameters, body).
"""

from __future__ import annotations

import pytest

from instore_cart_mapping.handler import handle_cart_lookup
from instore_cart_mapping.settings import CartMappingSettings
from instore_shared.commercetools import CommercetoolsClient, NotFound
from instore_shared.contract.cart_lookup import (
    CartKind,
    CartLookupRequest,
    LookupStatus,
)
from instore_shared.settings import CommercetoolsSettings
from tests.contract.openapi_contract import RequestRecorder, validate_request
from tests.support.processes import CtMock

pytestmark = pytest.mark.integration


def _settings(mock: CtMock) -> CommercetoolsSettings:
    return CommercetoolsSettings(**{k.removeprefix("CTP_").lower(): v for k, v in mock.settings_env().items()})


async def test_cart_lookups_send_only_valid_requests(ct_mock: CtMock) -> None:
    recorder = RequestRecorder()
    seed = ct_mock.seed
    async with CommercetoolsClient(_settings(ct_mock), request_hooks=[recorder]) as client:
        settings = CartMappingSettings()
        for ref, kind in [
            (seed["saleCartKey"], CartKind.SALE),
            (seed["saleCartId"], CartKind.SALE),
            (seed["returnCartKey"], CartKind.RETURN),
            ("no-such-cart", CartKind.SALE),
        ]:
            await handle_cart_lookup(CartLookupRequest(cart_ref=ref, kind=kind, requested_at="t"), client, settings)
        await client.get_cart(seed["saleCartId"], expand=("paymentInfo.payments[*]",))
        await client.find_order(seed["orderNumber"])
        with pytest.raises(NotFound):
            await client.get_order_by_order_number("no-such-order")
    methods_paths = {(r.method, r.url.split("?")[0].split("/instore-demo")[-1]) for r in recorder.requests}
    assert ("GET", f"/carts/key={seed['saleCartKey']}") in methods_paths
    assert any(p.startswith("/orders/") for _, p in methods_paths)
    assert len(recorder.requests) >= 8
    recorder.assert_all_valid()


def test_the_validator_rejects_what_we_must_not_send() -> None:
    """Guard against a validator that accepts everything: a wrong path and a bad body fail."""
    with pytest.raises(AssertionError):
        validate_request("GET", "http://x/instore-demo/cart/abc", None)
    with pytest.raises(AssertionError):
        validate_request(
            "POST",
            "http://x/instore-demo/orders",
            {"version": 1, "cart": {"typeId": "cart", "id": "c"}, "paymentState": "Settled"},
        )


async def test_lookup_of_seeded_carts_against_the_mock(ct_mock: CtMock) -> None:
    async with CommercetoolsClient(_settings(ct_mock)) as client:
        settings = CartMappingSettings()
        sale = await handle_cart_lookup(
            CartLookupRequest(cart_ref=ct_mock.seed["saleCartKey"], kind=CartKind.SALE, requested_at="t"), client, settings
        )
        ret = await handle_cart_lookup(
            CartLookupRequest(cart_ref=ct_mock.seed["returnCartKey"], kind=CartKind.RETURN, requested_at="t"), client, settings
        )
    assert sale.status is LookupStatus.FOUND, sale
    assert ret.status is LookupStatus.FOUND, ret


async def test_order_finalization_sends_only_valid_requests(ct_mock: CtMock) -> None:
    recorder = RequestRecorder()
    async with CommercetoolsClient(_settings(ct_mock), request_hooks=[recorder]) as client:
        cart = (
            await client.request(
                "POST",
                "/carts",
                json={
                    "currency": "EUR",
                    "country": "DE",
                    "lineItems": [{"sku": "SKU-MUG", "quantity": 1}],
                },
            )
        ).json()
        await client.find_cart(cart["id"], expand=("paymentInfo.payments[*]",))
        assert await client.find_order_by_cart(cart["id"]) is None
        order = (await client.create_order_from_cart(cart["id"], cart["version"], f"contract-{cart['id']}", "Paid")).json()
        found = await client.find_order_by_cart(cart["id"])
        assert found is not None and found.json()["id"] == order["id"]
    assert any(r.method == "POST" and r.url.endswith("/orders") for r in recorder.requests)
    recorder.assert_all_valid()


async def test_the_refund_service_sends_only_valid_requests(ct_mock: CtMock) -> None:
    """Record a return and its refund on a fresh Order through the real client; every request validates."""
    from instore_devfakes.instore_samples import refund_webhook
    from instore_refund.record import (
        LineFields,
        current_order,
        mark_refunded,
        record_refund,
    )

    recorder = RequestRecorder()
    async with CommercetoolsClient(_settings(ct_mock), request_hooks=[recorder]) as client:
        eur = {"currencyCode": "EUR", "centAmount": 1250}
        payment = (
            await client.request(
                "POST",
                "/payments",
                json={"amountPlanned": eur, "transactions": [{"type": "Charge", "state": "Success", "amount": eur}]},
            )
        ).json()
        cart = (
            await client.request(
                "POST", "/carts", json={"currency": "EUR", "country": "DE", "lineItems": [{"sku": "SKU-MUG", "quantity": 1}]}
            )
        ).json()
        cart = (
            await client.update(
                "carts",
                cart["id"],
                cart["version"],
                [{"action": "addPayment", "payment": {"typeId": "payment", "id": payment["id"]}}],
            )
        ).json()
        order = (await client.create_order_from_cart(cart["id"], cart["version"], f"contract-r-{cart['id']}", "Paid")).json()
        line = {
            "type": {"typeId": "type", "key": "instore-line-item"},
            "fields": {"purchaseOrderId": order["orderNumber"], "purchaseLineItemId": order["lineItems"][0]["id"]},
        }
        ret = (
            await client.request(
                "POST",
                "/carts",
                json={"currency": "EUR", "country": "DE", "lineItems": [{"sku": "SKU-MUG", "quantity": 1, "custom": line}]},
            )
        ).json()
        recorder.requests.clear()
        recorded = await record_refund(
            refund_webhook(ret["id"], [("rf-contract", payment["id"], 1250, "EUR")]),
            client,
            LineFields("purchaseOrderId", "purchaseLineItemId", "returnComment"),
        )
        await mark_refunded(client, recorded, await current_order(client, order["id"]))
    sent = [(r.method, r.url.split("?")[0].split("/instore-demo")[-1]) for r in recorder.requests]
    assert ("POST", f"/orders/{order['id']}") in sent and ("POST", f"/payments/{payment['id']}") in sent
    recorder.assert_all_valid()


async def test_custom_object_markers_are_compare_and_set_on_the_mock(ct_mock: CtMock) -> None:
    """The announcement markers: ``version: 0`` creates only once (409 after), a stale version is
    refused, the right one replaces — and every request validates against the OpenAPI."""
    import asyncio

    from instore_shared.commercetools import ConcurrentModification

    recorder = RequestRecorder()
    async with CommercetoolsClient(_settings(ct_mock), request_hooks=[recorder]) as client:
        container, key = "instore-integration-announcements", "contract-test.marker-1"
        with pytest.raises(NotFound):
            await client.get_custom_object(container, key)
        results = await asyncio.gather(
            *(client.put_custom_object(container, key, {"state": "claimed", "n": n}, version=0) for n in range(5)),
            return_exceptions=True,
        )
        assert sum(not isinstance(r, BaseException) for r in results) == 1
        assert all(isinstance(r, ConcurrentModification) for r in results if isinstance(r, BaseException))
        stored = (await client.get_custom_object(container, key)).json()
        with pytest.raises(ConcurrentModification):
            await client.put_custom_object(container, key, {"state": "published"}, version=stored["version"] + 1)
        updated = (await client.put_custom_object(container, key, {"state": "published"}, version=stored["version"])).json()
        assert updated["version"] == stored["version"] + 1 and updated["value"] == {"state": "published"}
    recorder.assert_all_valid()


async def test_the_payment_extension_sends_only_valid_requests(ct_mock: CtMock) -> None:
    """Charge, decline, refund, prompt → cancel and a balance inquiry, with the dev fakes' provider in-process:
    every Payment update and Custom Object write validates against the OpenAPI."""
    import httpx
    from litestar import Litestar

    from instore_devfakes.instore_samples import payment_request
    from instore_devfakes.payments import instore_side_router, provider_router
    from instore_payment_extension.instore import InStoreClient
    from instore_payment_extension.providers.simulator import SimulatorProvider
    from instore_payment_extension.service import handle_payment_request
    from instore_payment_extension.settings import PaymentExtensionSettings
    from instore_shared.url_allowlist import UrlAllowList
    from tests.unit.test_payment_extension_service import Clock, Prompts, Publisher

    base = "http://instore.test"
    transport = httpx.ASGITransport(app=Litestar(route_handlers=[provider_router(), instore_side_router()]))
    provider = SimulatorProvider(f"{base}/provider", transport=transport)
    instore = InStoreClient(UrlAllowList(base), b"secret", transport=transport)
    settings = PaymentExtensionSettings(payment_extension_allowed_urls=base, payment_extension_retry_seconds=1)
    recorder = RequestRecorder()
    async with CommercetoolsClient(_settings(ct_mock), request_hooks=[recorder]) as client:

        async def run(
            rid: str, action: str, token: str, prompts: Prompts | None = None, payment_id: str | None = None, **extra: object
        ) -> str:
            payment_id = (
                payment_id
                or (
                    await client.request("POST", "/payments", json={"amountPlanned": {"centAmount": 1000, "currencyCode": "EUR"}})
                ).json()["id"]
            )
            state["payment"] = payment_id
            body = payment_request(
                rid,
                status_url=f"{base}/instore-sim/status/{rid}",
                callback_url=f"{base}/instore-sim/callback/{rid}",
                payment_id=payment_id,
                cent_amount=1000,
                card={"token": token},
                **extra,
            )
            handled = await handle_payment_request(
                body,
                {"tender": "gift-card", "action": action},
                provider=provider,
                commerce=client,
                instore=instore,
                prompts=prompts or Prompts(None),
                publisher=Publisher(),
                clock=Clock(),
                settings=settings,
            )
            return handled.result.reference or ""

        state: dict[str, str] = {}
        reference = await run("ct-charge", "payment", "tok_approve")
        charged = state["payment"]
        await run("ct-decline", "payment", "tok_decline")
        await run("ct-refund", "refund", "tok_approve", payment_id=charged, reference=reference)
        await run("ct-prompt", "payment", "tok_prompt", Prompts("cancel"))
        await run("ct-balance", "balance", "tok_approve")
    await provider.aclose()
    await instore.aclose()
    kinds = {(r.method, r.url.split("?")[0].split("/instore-demo")[-1].split("/")[1]) for r in recorder.requests}
    assert {("POST", "payments"), ("GET", "payments"), ("POST", "custom-objects")} <= kinds
    recorder.assert_all_valid()
