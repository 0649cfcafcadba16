"""Two fakes for payment extensions — development and tests only, no authentication:

**A simulated payment provider** (``/provider``), called by the payment-extension service's
``simulator`` adapter. The test chooses the outcome by the card token:

- ``tok_approve`` (or none) → approved; ``tok_decline`` → declined ``insufficient_funds``;
- ``tok_prompt`` → asks a prompt ("Signature OK?", options ``approve``/``cancel``); resuming
  with ``approve`` approves, anything else declines ``declined_by_colleague``;
- ``tok_slow`` → answers only after ``slowSeconds`` (control, default 30 s);
- ``tok_down`` → 503.

Every POST needs an ``Idempotency-Key``: the same key gets the stored answer and moves no money
again (as Stripe does). ``GET /provider/stats`` → ``{"moneyMovements": {key: count}, "calls": n}``;
``POST /provider/_control`` ``{"mode": "ok"|"down", "slowSeconds"?}`` (down: every call 503).

Routes: ``POST /provider/payments`` ``{"amount": {"centAmount", "currencyCode"}, "capture", "token"?}``
→ ``{"id", "status": "approved"|"declined"|"prompt", "approvalCode"?, "card"?, "reason"?, "prompt"?}``;
``POST /provider/payments/{id}/resume`` ``{"response"}``; ``POST /provider/payments/{id}/capture``
``{"amount"}``; ``POST /provider/payments/{id}/cancel``; ``POST /provider/refunds`` ``{"payment", "amount"}``;
``POST /provider/balance`` ``{"token", "currency"}``.

**InStore's side of a payment** (``/instore-sim``): hosts the ``statusUrl`` and ``callbackUrl``
InStore would pass — ``POST /instore-sim/status/{requestId}`` and ``POST /instore-sim/callback/{requestId}``
record what arrived (body and headers); ``GET /instore-sim/requests/{requestId}`` →
``{"statuses": [...], "callbacks": [{"body", "idempotencyKey", "signature", "receivedAt" (epoch s)}]}``;
``POST /instore-sim/_control`` ``{"callbackDown": bool}`` (true: the callback answers 503).
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from dataclasses import dataclass, field
from typing import Annotated, Any

from litestar import Request, Response, Router, get, post
from litestar.params import JSONBody, Parameter

PathId = Annotated[str, Parameter(description="an id")]

_PROMPT = {
    "message": "Signature OK?",
    "title": "Check the signature",
    "keepAlive": 60000,
    "options": [{"text": "Approve", "response": "approve", "primary": True}, {"text": "Cancel", "response": "cancel"}],
}


@dataclass
class ProviderState:
    """The simulated provider's memory: answers by idempotency key, payments by id, money movements by key."""

    answers: dict[str, dict[str, Any]] = field(default_factory=dict)
    payments: dict[str, dict[str, Any]] = field(default_factory=dict)
    movements: dict[str, int] = field(default_factory=dict)
    calls: int = 0
    down: bool = False
    slow_seconds: float = 30.0


@dataclass
class InStoreSideState:
    """What reached the fake statusUrl and callbackUrl, by request id."""

    statuses: dict[str, list[Any]] = field(default_factory=dict)
    callbacks: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    callback_down: bool = False


def _ref(key: str, kind: str) -> str:
    return f"sim_{kind}_{hashlib.sha256(key.encode()).hexdigest()[:16]}"


def provider_router(state: ProviderState | None = None) -> Router:
    """The ``/provider`` routes."""
    st = state or ProviderState()

    async def once(request: Request[Any, Any, Any], work: Any) -> Response[Any]:
        st.calls += 1
        if st.down:
            return Response({"error": "provider down"}, status_code=503)
        key = request.headers.get("idempotency-key", "")
        if not key:
            return Response({"error": "Idempotency-Key required"}, status_code=400)
        if key in st.answers:
            return Response(st.answers[key])
        answer = await work(key)
        if answer is None:
            return Response({"error": "provider down"}, status_code=503)
        st.answers[key] = answer
        return Response(answer)

    def moved(key: str) -> None:
        st.movements[key] = st.movements.get(key, 0) + 1

    @post("/payments", status_code=200)
    async def pay(request: Request[Any, Any, Any], data: JSONBody[dict[str, Any]]) -> Response[Any]:
        token = str(data.get("token") or "tok_approve")

        async def work(key: str) -> dict[str, Any] | None:
            if token == "tok_down":
                return None
            if token == "tok_slow":
                await asyncio.sleep(st.slow_seconds)
            pid = _ref(key, "pay")
            st.payments[pid] = {"amount": data.get("amount"), "capture": bool(data.get("capture", True))}
            if token == "tok_decline":
                return {"id": pid, "status": "declined", "reason": "insufficient_funds", "message": "Insufficient funds"}
            if token == "tok_prompt":
                return {"id": pid, "status": "prompt", "prompt": _PROMPT}
            moved(key)
            return {"id": pid, "status": "approved", "approvalCode": pid[-6:].upper(), "card": {"last4": "4242", "brand": "visa"}}

        return await once(request, work)

    @post("/payments/{pid:str}/resume", status_code=200)
    async def resume(request: Request[Any, Any, Any], pid: PathId, data: JSONBody[dict[str, Any]]) -> Response[Any]:
        async def work(key: str) -> dict[str, Any] | None:
            if pid not in st.payments:
                return {"id": pid, "status": "declined", "reason": "unknown_payment"}
            if data.get("response") == "approve":
                moved(key)
                return {
                    "id": pid,
                    "status": "approved",
                    "approvalCode": pid[-6:].upper(),
                    "card": {"last4": "4242", "brand": "visa"},
                }
            return {"id": pid, "status": "declined", "reason": "declined_by_colleague"}

        return await once(request, work)

    @post("/payments/{pid:str}/{op:str}", status_code=200)
    async def capture_or_cancel(request: Request[Any, Any, Any], pid: PathId, op: PathId) -> Response[Any]:
        async def work(key: str) -> dict[str, Any] | None:
            if pid not in st.payments or op not in ("capture", "cancel"):
                return {"id": pid, "status": "declined", "reason": "unknown_payment"}
            moved(key)
            return {"id": pid, "status": "approved"}

        return await once(request, work)

    @post("/refunds", status_code=200)
    async def refund(request: Request[Any, Any, Any], data: JSONBody[dict[str, Any]]) -> Response[Any]:
        async def work(key: str) -> dict[str, Any] | None:
            if data.get("payment") not in st.payments:
                return {"id": None, "status": "declined", "reason": "unknown_payment"}
            moved(key)
            return {"id": _ref(key, "refund"), "status": "approved"}

        return await once(request, work)

    @post("/balance", status_code=200)
    async def balance(request: Request[Any, Any, Any], data: JSONBody[dict[str, Any]]) -> Response[Any]:
        async def work(key: str) -> dict[str, Any] | None:
            return {
                "id": _ref(key, "balance"),
                "status": "approved",
                "balance": {"centAmount": 5000, "currencyCode": str(data.get("currency") or "EUR")},
            }

        return await once(request, work)

    @get("/stats", sync_to_thread=False)
    def stats() -> dict[str, Any]:
        return {"moneyMovements": st.movements, "calls": st.calls}

    @post("/_control", status_code=200, sync_to_thread=False)
    def control(data: JSONBody[dict[str, Any]]) -> dict[str, Any]:
        st.down = data.get("mode") == "down"
        if "slowSeconds" in data:
            st.slow_seconds = float(data["slowSeconds"])
        return {"mode": "down" if st.down else "ok", "slowSeconds": st.slow_seconds}

    return Router("/provider", route_handlers=[pay, resume, capture_or_cancel, refund, balance, stats, control])


def instore_side_router(state: InStoreSideState | None = None) -> Router:
    """The ``/instore-sim`` routes (InStore's statusUrl and callbackUrl)."""
    st = state or InStoreSideState()

    @post("/status/{request_id:str}", status_code=200)
    async def status(request_id: PathId, data: JSONBody[dict[str, Any]]) -> dict[str, str]:
        st.statuses.setdefault(request_id, []).append(data)
        return {"status": "ok"}

    @post("/callback/{request_id:str}", status_code=200)
    async def callback(request: Request[Any, Any, Any], request_id: PathId) -> Response[Any]:
        if st.callback_down:
            return Response({"error": "down"}, status_code=503)
        body = await request.json()
        st.callbacks.setdefault(request_id, []).append(
            {
                "body": body,
                "idempotencyKey": request.headers.get("idempotency-key"),
                "signature": request.headers.get("x-signature"),
                "receivedAt": time.time(),
            }
        )
        return Response({"status": "ok"})

    @get("/requests/{request_id:str}", sync_to_thread=False)
    def seen(request_id: PathId) -> dict[str, Any]:
        return {"statuses": st.statuses.get(request_id, []), "callbacks": st.callbacks.get(request_id, [])}

    @post("/_control", status_code=200, sync_to_thread=False)
    def control(data: JSONBody[dict[str, Any]]) -> dict[str, Any]:
        st.callback_down = bool(data.get("callbackDown"))
        return {"callbackDown": st.callback_down}

    return Router("/instore-sim", route_handlers=[status, callback, seen, control])
