"""The ``stripe`` provider adapter: a reference for plugging a real payment provider in (Stripe's REST API).

Calls, form-encoded with ``Authorization: Bearer <secret key>`` and an ``Idempotency-Key`` on
every POST (https://docs.stripe.com/api/idempotent_requests — the same key replays the first
answer, so a redelivered request never charges twice):

- pay: ``POST /v1/payment_intents`` with ``confirm=true``, ``capture_method`` ``automatic``
  (charge) or ``manual`` (authorize) (https://docs.stripe.com/api/payment_intents/create);
  ``succeeded`` / ``requires_capture`` → :class:`Approved` (reference = the PaymentIntent id);
  ``requires_payment_method`` / ``canceled`` / ``requires_action`` → :class:`Declined`;
- capture: ``POST /v1/payment_intents/{id}/capture`` (``amount_to_capture``);
- cancel: ``POST /v1/payment_intents/{id}/cancel``;
- refund: ``POST /v1/refunds`` (``payment_intent``, ``amount``; https://docs.stripe.com/api/refunds/create);
- balance: not a Stripe concept → :class:`Declined` ``unsupported``; resume: Stripe asks no
  prompts here → :class:`Declined` ``unsupported``.

Errors (https://docs.stripe.com/api/errors): 402 ``card_error`` → :class:`Declined` with its
``decline_code`` or ``code``; other 4xx → :class:`Declined` ``provider-refused`` (a refusal,
never an outage); 429, 5xx, network errors and timeouts → :class:`ProviderDown` (retried with
the same idempotency key). Money: ``amount`` in minor units, ``currency`` the ISO 4217 code in
lower case. The secret key is held only by the HTTP client's headers: never in a log, a repr
or an exception message.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

import httpx

from instore_payment_extension.providers.base import (
    Approved,
    Declined,
    NeedsPrompt,
    PaymentInput,
    ProviderDown,
)
from instore_shared.contract.payment_extensions import CardDetails, Money

_APPROVED = frozenset({"succeeded", "requires_capture"})


class StripeProvider:
    """Stripe PaymentIntents and Refunds over HTTP."""

    name = "stripe"

    def __init__(
        self,
        api_key: str,
        base_url: str = "https://api.stripe.com",
        timeout_s: float = 10.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._http = httpx.AsyncClient(
            base_url=base_url.rstrip("/"),
            timeout=timeout_s,
            transport=transport,
            follow_redirects=False,
            headers={"Authorization": f"Bearer {api_key}"},
        )
        self._base_url = base_url

    def __repr__(self) -> str:
        return f"StripeProvider(base_url={self._base_url!r})"

    async def _post(self, path: str, form: dict[str, str], key: str) -> tuple[int, dict[str, Any]]:
        try:
            # always a form body with its Content-Type, even empty (a cancel): Stripe's validator refuses a POST without it
            response = await self._http.post(
                path,
                content=urlencode(form),
                headers={"Idempotency-Key": key, "Content-Type": "application/x-www-form-urlencoded"},
            )
        except httpx.HTTPError as exc:
            raise ProviderDown(f"{type(exc).__name__} calling Stripe {path.split('/')[2]}") from None
        if response.status_code == 429 or response.status_code >= 500:
            raise ProviderDown(f"Stripe answered {response.status_code}")
        try:
            body = response.json()
        except ValueError:
            raise ProviderDown(f"Stripe answered {response.status_code} without JSON") from None
        return response.status_code, body if isinstance(body, dict) else {}

    @staticmethod
    def _refused(status: int, body: dict[str, Any]) -> Declined:
        error = body.get("error") if isinstance(body.get("error"), dict) else {}
        assert isinstance(error, dict)
        if status == 402 or error.get("type") == "card_error":
            reason = error.get("decline_code") or error.get("code") or "card_declined"
            intent = error.get("payment_intent") if isinstance(error.get("payment_intent"), dict) else {}
            assert isinstance(intent, dict)
            return Declined(
                reason=str(reason),
                message=str(error.get("message") or ""),
                reference=intent.get("id") if isinstance(intent.get("id"), str) else None,
            )
        return Declined(reason="provider-refused", message=f"Stripe answered {status}: {error.get('code') or ''}".strip())

    @staticmethod
    def _card(intent: dict[str, Any]) -> CardDetails | None:
        charge = intent.get("latest_charge")
        details = charge.get("payment_method_details") if isinstance(charge, dict) else None
        card = details.get("card") if isinstance(details, dict) else None
        if isinstance(card, dict):
            return CardDetails(last4=card.get("last4"), brand=card.get("brand"))
        return None

    def _intent_result(self, status: int, body: dict[str, Any]) -> Approved | Declined:
        if status >= 400:
            return self._refused(status, body)
        reference = body.get("id")
        if not isinstance(reference, str):
            raise ProviderDown("Stripe answered without an id")
        state = body.get("status")
        if state in _APPROVED:
            charge = body.get("latest_charge")
            approval = charge.get("id") if isinstance(charge, dict) else charge if isinstance(charge, str) else None
            return Approved(reference=reference, approval_code=approval, card=self._card(body))
        error = body.get("last_payment_error") if isinstance(body.get("last_payment_error"), dict) else {}
        assert isinstance(error, dict)
        reason = error.get("decline_code") or error.get("code") or str(state or "declined")
        return Declined(reason=str(reason), message=str(error.get("message") or ""), reference=reference)

    async def pay(self, payment: PaymentInput, idempotency_key: str) -> Approved | Declined | NeedsPrompt:
        """``POST /v1/payment_intents`` (confirm now; manual capture when ``payment.capture`` is False)."""
        form = {
            "amount": str(payment.amount.centAmount),
            "currency": payment.amount.currencyCode.lower(),
            "payment_method": payment.card_token or "pm_card_visa",
            "confirm": "true",
            "capture_method": "automatic" if payment.capture else "manual",
            "payment_method_types[]": "card",
            "metadata[instore_request_id]": payment.request_id,
        }
        if payment.payment_id:
            form["metadata[instore_payment_id]"] = payment.payment_id
        return self._intent_result(*await self._post("/v1/payment_intents", form, idempotency_key))

    async def resume(self, reference: str, response: str, idempotency_key: str) -> Approved | Declined | NeedsPrompt:
        """Stripe asks no prompts through this adapter."""
        return Declined(reason="unsupported", message="Stripe asks no prompts", reference=reference)

    async def capture(self, reference: str, amount: Money, idempotency_key: str) -> Approved | Declined:
        """``POST /v1/payment_intents/{id}/capture``."""
        return self._intent_result(
            *await self._post(
                f"/v1/payment_intents/{reference}/capture", {"amount_to_capture": str(amount.centAmount)}, idempotency_key
            )
        )

    async def cancel(self, reference: str, idempotency_key: str) -> Approved | Declined:
        """``POST /v1/payment_intents/{id}/cancel``: a canceled intent is the approved outcome of a cancel."""
        status, body = await self._post(f"/v1/payment_intents/{reference}/cancel", {}, idempotency_key)
        if status >= 400:
            return self._refused(status, body)
        return Approved(reference=str(body.get("id") or reference))

    async def refund(self, reference: str, amount: Money, idempotency_key: str) -> Approved | Declined:
        """``POST /v1/refunds``; the refund's id is the reference."""
        status, body = await self._post(
            "/v1/refunds", {"payment_intent": reference, "amount": str(amount.centAmount)}, idempotency_key
        )
        if status >= 400:
            return self._refused(status, body)
        if body.get("status") in ("failed", "canceled"):
            return Declined(
                reason=str(body.get("failure_reason") or body.get("status")),
                reference=body.get("id") if isinstance(body.get("id"), str) else None,
            )
        if not isinstance(body.get("id"), str):
            raise ProviderDown("Stripe answered a refund without an id")
        return Approved(reference=body["id"])

    async def balance(self, card_token: str | None, currency: str, idempotency_key: str) -> Approved | Declined:
        """Not a Stripe concept."""
        return Declined(reason="unsupported", message="Stripe has no gift-card balance")

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._http.aclose()
