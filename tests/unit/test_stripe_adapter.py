"""The Stripe adapter's mapping of Stripe's answers (httpx MockTransport): approvals, declines, refusals, outages."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest

from instore_payment_extension.providers.base import Approved, Declined, PaymentInput, ProviderDown
from instore_payment_extension.providers.stripe import StripeProvider
from instore_shared.contract.payment_extensions import Money, Tender

KEY = "sk_test_" + "s3cr3t" * 4
PAYMENT = PaymentInput(
    tender=Tender.BANK_CARD,
    amount=Money(centAmount=1949, currencyCode="EUR"),
    capture=True,
    card_token="pm_card_visa",
    request_id="r-1",
    payment_id="pay-1",
)


def _provider(answer: Callable[[httpx.Request], httpx.Response], seen: list[httpx.Request] | None = None) -> StripeProvider:
    def handler(request: httpx.Request) -> httpx.Response:
        if seen is not None:
            seen.append(request)
        return answer(request)

    return StripeProvider(KEY, "https://stripe.test", transport=httpx.MockTransport(handler))


def _intent(status: str, **extra: Any) -> httpx.Response:
    return httpx.Response(200, json={"id": "pi_123", "object": "payment_intent", "status": status, **extra})


async def test_a_succeeded_intent_is_approved_with_the_card_and_the_request_is_well_formed() -> None:
    seen: list[httpx.Request] = []
    provider = _provider(
        lambda r: _intent(
            "succeeded", latest_charge={"id": "ch_9", "payment_method_details": {"card": {"last4": "4242", "brand": "visa"}}}
        ),
        seen,
    )
    result = await provider.pay(PAYMENT, "instore-payment-r-1")
    assert result == Approved(reference="pi_123", approval_code="ch_9", card=result.card)  # type: ignore[union-attr]
    assert isinstance(result, Approved) and result.card is not None and result.card.last4 == "4242"
    (request,) = seen
    assert request.url.path == "/v1/payment_intents" and request.headers["idempotency-key"] == "instore-payment-r-1"
    assert request.headers["authorization"] == f"Bearer {KEY}"
    form = dict(httpx.QueryParams(request.content.decode()))
    assert form["amount"] == "1949" and form["currency"] == "eur" and form["capture_method"] == "automatic"
    assert form["confirm"] == "true" and form["metadata[instore_payment_id]"] == "pay-1"


async def test_authorize_asks_for_manual_capture_and_requires_capture_is_approved() -> None:
    seen: list[httpx.Request] = []
    provider = _provider(lambda r: _intent("requires_capture"), seen)
    payment = PaymentInput(**{**PAYMENT.__dict__, "capture": False})
    assert isinstance(await provider.pay(payment, "k"), Approved)
    assert dict(httpx.QueryParams(seen[0].content.decode()))["capture_method"] == "manual"


async def test_a_card_error_is_a_decline_with_its_decline_code() -> None:
    provider = _provider(
        lambda r: httpx.Response(
            402,
            json={
                "error": {
                    "type": "card_error",
                    "code": "card_declined",
                    "decline_code": "insufficient_funds",
                    "message": "no",
                    "payment_intent": {"id": "pi_7"},
                }
            },
        )
    )
    assert await provider.pay(PAYMENT, "k") == Declined(reason="insufficient_funds", message="no", reference="pi_7")


@pytest.mark.parametrize("status", [400, 401, 403, 404])
async def test_other_4xx_are_refusals_not_outages(status: int) -> None:
    provider = _provider(
        lambda r: httpx.Response(status, json={"error": {"type": "invalid_request_error", "code": "parameter_invalid"}})
    )
    result = await provider.pay(PAYMENT, "k")
    assert isinstance(result, Declined) and result.reason == "provider-refused"


async def test_an_intent_needing_a_payment_method_is_declined_with_the_last_error() -> None:
    provider = _provider(lambda r: _intent("requires_payment_method", last_payment_error={"code": "expired_card"}))
    assert await provider.pay(PAYMENT, "k") == Declined(reason="expired_card", message="", reference="pi_123")


def _raise(exc: Exception) -> Callable[[httpx.Request], httpx.Response]:
    def answer(request: httpx.Request) -> httpx.Response:
        raise exc

    return answer


@pytest.mark.parametrize(
    "answer",
    [
        lambda r: httpx.Response(500, json={}),
        lambda r: httpx.Response(503, text="down"),
        lambda r: httpx.Response(429, json={}),
        _raise(httpx.ConnectError("refused")),
        _raise(httpx.ReadTimeout("slow")),
        lambda r: httpx.Response(200, text="<html>"),
    ],
)
async def test_outages_are_provider_down_and_never_show_the_key(answer: Callable[[httpx.Request], httpx.Response]) -> None:
    provider = _provider(answer)
    with pytest.raises(ProviderDown) as down:
        await provider.pay(PAYMENT, "k")
    assert KEY not in str(down.value) and KEY not in repr(down.value.__cause__)
    assert KEY not in repr(provider)


async def test_refund_cancel_capture_and_the_unsupported() -> None:
    provider = _provider(
        lambda r: httpx.Response(
            200,
            json={"id": "re_1", "status": "succeeded"}
            if r.url.path == "/v1/refunds"
            else {"id": "pi_123", "status": "succeeded"},
        )
    )
    money = Money(centAmount=500, currencyCode="EUR")
    assert await provider.refund("pi_123", money, "k1") == Approved(reference="re_1")
    assert await provider.cancel("pi_123", "k2") == Approved(reference="pi_123")
    assert isinstance(await provider.capture("pi_123", money, "k3"), Approved)
    assert (await provider.balance(None, "EUR", "k4")).reason == "unsupported"  # type: ignore[union-attr]
