"""The ``simulator`` provider adapter: the dev fakes' simulated payment provider over HTTP (development and tests).

The outcome is chosen by the card token (``tok_approve``, ``tok_decline``, ``tok_prompt``,
``tok_slow``, ``tok_down`` — see :mod:`instore_devfakes.payments`). It keeps its answers by
idempotency key in its own process, so a payment-extension service killed and restarted
mid-payment meets the same answers — what a real provider does, and what the crash tests need.
"""

from __future__ import annotations

from typing import Any

import httpx
import msgspec

from instore_payment_extension.providers.base import (
    Approved,
    Declined,
    NeedsPrompt,
    PaymentInput,
    ProviderDown,
)
from instore_shared.contract.payment_extensions import CardDetails, Money, PromptOption


class SimulatorProvider:
    """Calls ``{base_url}/payments`` etc. with an ``Idempotency-Key`` header. Raises :class:`ProviderDown` on
    a network error, a timeout, 429 or 5xx; any other 4xx is a refusal (:class:`Declined` ``provider-refused``)."""

    name = "simulator"

    def __init__(self, base_url: str, timeout_s: float = 10.0, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self._http = httpx.AsyncClient(
            base_url=base_url.rstrip("/"), timeout=timeout_s, transport=transport, follow_redirects=False
        )

    async def _post(self, path: str, body: dict[str, Any], key: str) -> dict[str, Any]:
        try:
            response = await self._http.post(path, json=body, headers={"Idempotency-Key": key})
        except httpx.HTTPError as exc:
            raise ProviderDown(f"{type(exc).__name__} calling the simulator provider") from exc
        if response.status_code == 429 or response.status_code >= 500:
            raise ProviderDown(f"simulator provider answered {response.status_code}")
        if response.status_code >= 400:
            return {"status": "declined", "reason": "provider-refused", "message": f"HTTP {response.status_code}"}
        try:
            answer = response.json()
        except ValueError as exc:
            raise ProviderDown("simulator provider answered no JSON") from exc
        if not isinstance(answer, dict):
            raise ProviderDown("simulator provider answered no JSON object")
        return answer

    @staticmethod
    def _result(answer: dict[str, Any]) -> Approved | Declined | NeedsPrompt:
        status, ref = answer.get("status"), answer.get("id")
        if status == "approved" and isinstance(ref, str):
            card = answer.get("card") if isinstance(answer.get("card"), dict) else None
            balance = answer.get("balance")
            return Approved(
                reference=ref,
                approval_code=answer.get("approvalCode"),
                card=CardDetails(last4=card.get("last4"), brand=card.get("brand")) if card else None,
                balance=msgspec.convert(balance, Money) if isinstance(balance, dict) else None,
            )
        if status == "prompt" and isinstance(ref, str) and isinstance(answer.get("prompt"), dict):
            prompt = answer["prompt"]
            return NeedsPrompt(
                reference=ref,
                message=str(prompt.get("message", "")),
                title=prompt.get("title"),
                options=msgspec.convert(prompt.get("options", []), list[PromptOption]),
                keep_alive_ms=int(prompt.get("keepAlive", 60000)),
            )
        return Declined(
            reason=str(answer.get("reason") or "declined"),
            message=str(answer.get("message") or ""),
            reference=ref if isinstance(ref, str) else None,
        )

    async def pay(self, payment: PaymentInput, idempotency_key: str) -> Approved | Declined | NeedsPrompt:
        """``POST /payments``."""
        return self._result(
            await self._post(
                "/payments",
                {
                    "amount": msgspec.to_builtins(payment.amount),
                    "capture": payment.capture,
                    "token": payment.card_token,
                    "metadata": {"requestId": payment.request_id, "paymentId": payment.payment_id},
                },
                idempotency_key,
            )
        )

    async def resume(self, reference: str, response: str, idempotency_key: str) -> Approved | Declined | NeedsPrompt:
        """``POST /payments/{reference}/resume``."""
        return self._result(await self._post(f"/payments/{reference}/resume", {"response": response}, idempotency_key))

    async def _final(self, path: str, body: dict[str, Any], key: str) -> Approved | Declined:
        result = self._result(await self._post(path, body, key))
        if isinstance(result, NeedsPrompt):
            return Declined(reason="unexpected-prompt", reference=result.reference)
        return result

    async def capture(self, reference: str, amount: Money, idempotency_key: str) -> Approved | Declined:
        """``POST /payments/{reference}/capture``."""
        return await self._final(f"/payments/{reference}/capture", {"amount": msgspec.to_builtins(amount)}, idempotency_key)

    async def cancel(self, reference: str, idempotency_key: str) -> Approved | Declined:
        """``POST /payments/{reference}/cancel``."""
        return await self._final(f"/payments/{reference}/cancel", {}, idempotency_key)

    async def refund(self, reference: str, amount: Money, idempotency_key: str) -> Approved | Declined:
        """``POST /refunds``."""
        return await self._final("/refunds", {"payment": reference, "amount": msgspec.to_builtins(amount)}, idempotency_key)

    async def balance(self, card_token: str | None, currency: str, idempotency_key: str) -> Approved | Declined:
        """``POST /balance``."""
        return await self._final("/balance", {"token": card_token, "currency": currency}, idempotency_key)

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._http.aclose()
