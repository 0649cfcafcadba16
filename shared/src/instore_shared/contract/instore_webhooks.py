"""InStore's webhooks, inbound: the signature and the few fields we route by.

Documented (https://docs.commercetools.com/instore/integration/webhooks): InStore POSTs the
results of its processes as JSON to one URL and signs each; the newest page names the
header ``X-Signature`` with an HMAC-SHA256 of the body and a shared secret, older pages
``verification-signature``. Not documented — ASSUMED, see
../shared/reference/instore-contract.md §4: the encoding of the signature (we accept hex in
either case and standard or URL-safe base64, with or without a ``sha256=`` prefix) and the
payload fields. A webhook is a trigger: we read only what identifies the work — ``id``,
``type``, and one of ``cartId``, ``returnCartId``, ``orderNumber`` (top level or under
``data``) — and pass the raw bytes on untouched.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from collections.abc import Callable
from typing import Any, ClassVar, TypeVar

import msgspec

ROUTING_FIELDS = ("cartId", "returnCartId", "orderNumber")
"""Fields that name the entity a webhook is about, in order of preference (assumed)."""

_SAFE_ID = re.compile(r"[A-Za-z0-9._:-]{1,256}")  # commercetools ids and keys reach 256
_HEX = re.compile(r"[0-9a-fA-F]{64}")
_BASE64 = re.compile(r"[A-Za-z0-9+/_-]{43}={0,2}")


def _decode_signature(given: str) -> bytes | None:
    value = given.strip()
    if value[:7].lower() == "sha256=":
        value = value[7:]
    if _HEX.fullmatch(value):
        return bytes.fromhex(value)
    if not _BASE64.fullmatch(value):
        return None
    padded = value.rstrip("=") + "=" * (-len(value.rstrip("=")) % 4)
    decode = base64.urlsafe_b64decode if ("-" in value or "_" in value) else base64.b64decode
    try:
        raw = decode(padded)
    except (binascii.Error, ValueError):
        return None
    return raw if len(raw) == hashlib.sha256().digest_size else None


def signature_valid(body: bytes, given: str, secret: bytes) -> bool:
    """True when ``given`` is the HMAC-SHA256 of exactly ``body`` under ``secret``.

    ``given`` may be hex (any case) or base64 (standard or URL-safe, padding optional),
    with an optional ``sha256=`` prefix. The comparison is constant-time. An empty secret
    never validates.
    """
    if not secret:
        return False
    decoded = _decode_signature(given)
    expected = hmac.new(secret, body, hashlib.sha256).digest()
    return decoded is not None and hmac.compare_digest(decoded, expected)


def routing_key(payload: Any) -> str | None:
    """The cart id, return cart id or order number the webhook is about (the Kafka key), if any."""
    if not isinstance(payload, dict):
        return None
    for scope in (payload, payload.get("data")):
        if isinstance(scope, dict):
            for field in ROUTING_FIELDS:
                value = scope.get(field)
                if isinstance(value, str) and _SAFE_ID.fullmatch(value):
                    return value
    return None


def webhook_id(body: bytes, payload: Any) -> str:
    """A stable id for this webhook: InStore's ``id`` when it sends a sane one, else ``sha256:<hex of the body>``.

    Deterministic, so a redelivered webhook carries the same id downstream.
    """
    if isinstance(payload, dict):
        value = payload.get("id")
        if isinstance(value, str) and _SAFE_ID.fullmatch(value):
            return value
    return "sha256:" + hashlib.sha256(body).hexdigest()


PAYMENT_WEBHOOK_TYPES = frozenset({"payment.completed", "payment.succeeded", "payment.updated"})
"""Webhook ``type`` values that may complete a sale (assumed)."""


class PaymentWebhook(msgspec.Struct, frozen=True):
    """The fields of a payment webhook order-finalization acts on (assumed); unknown fields are ignored."""

    type: str
    id: str | None = None
    cartId: str | None = None
    data: dict[str, object] = {}
    lenient_fields: ClassVar[dict[str, Any]] = {"id": str, "data": dict}
    """Fields ignored when they have another type (:func:`decode_webhook`): none of them is needed to find the cart."""

    def cart_ref(self) -> str | None:
        """The cart id or key the webhook names, top level or under ``data``."""
        nested = self.data.get("cartId")
        return self.cartId or (nested if isinstance(nested, str) else None)


REFUND_WEBHOOK_TYPES = frozenset({"refund.completed", "refund.finalized"})
"""Webhook ``type`` values that report a finalized delegated refund (assumed — see
../shared/reference/instore-contract.md §5: InStore sends a finalize notification)."""


class RefundAmount(msgspec.Struct, frozen=True):
    """Money as commercetools writes it: ``centAmount`` minor units of ``currencyCode`` (ISO 4217)."""

    centAmount: int
    currencyCode: str


class TenderRefundPayload(msgspec.Struct, frozen=True):
    """One refunded tender (assumed): InStore's refund id for it, the original Payment, the amount."""

    refundId: str
    paymentId: str
    amount: RefundAmount
    tender: str | None = None


class RefundData(msgspec.Struct, frozen=True):
    """``data`` of a refund webhook (assumed): the tenders refunded and, optionally, which return-cart
    lines the refund covers (absent: every line of the return cart)."""

    refunds: list[TenderRefundPayload] = []
    returnCartId: str | None = None
    lineItemIds: list[str] | None = None


class RefundWebhook(msgspec.Struct, frozen=True):
    """A finalized delegated refund (assumed shape): ``{"id", "type": "refund.completed", "returnCartId",
    "data": {"refunds": [{"refundId", "paymentId", "amount": {"centAmount", "currencyCode"}, "tender"}],
    "lineItemIds"?}}``; unknown fields are ignored."""

    type: str
    id: str | None = None
    returnCartId: str | None = None
    data: RefundData = RefundData()
    lenient_fields: ClassVar[dict[str, Any]] = {"id": str}
    """Fields ignored when they have another type (:func:`decode_webhook`); ``data`` is needed, so it is checked."""

    def return_cart_ref(self) -> str | None:
        """The return cart id or key, top level or under ``data``."""
        return self.returnCartId or self.data.returnCartId


_W = TypeVar("_W")


def decode_webhook(body: bytes, types: frozenset[str], struct: type[_W], refuse: Callable[[str, str], Exception]) -> _W | None:
    """The fields of a webhook whose ``type`` is one of ``types``, as ``struct``; None for any other webhook.

    Raises ``refuse("bad-body", detail)`` for a body that is not a JSON object, or a webhook of
    one of ``types`` whose fields have the wrong types. A ``type`` that is not a string is
    another kind of webhook.
    """
    try:
        payload = msgspec.json.decode(body)
    except msgspec.DecodeError as exc:
        raise refuse("bad-body", "not JSON") from exc
    if not isinstance(payload, dict):
        raise refuse("bad-body", f"a JSON {type(payload).__name__}, not an object")
    kind = payload.get("type")
    if not isinstance(kind, str) or kind not in types:
        return None
    # Fields that only describe the webhook must not cost a paid sale its Order: an ``id`` the
    # gateway found unusable (it keyed the webhook by the body's hash instead, see webhook_id)
    # and, where the struct says so, a ``data`` that is not an object are ignored, not refused.
    for name, kinds in getattr(struct, "lenient_fields", {}).items():
        if name in payload and payload[name] is not None and not isinstance(payload[name], kinds):
            del payload[name]
    try:
        return msgspec.convert(payload, struct)
    except msgspec.ValidationError as exc:
        raise refuse("bad-body", str(exc)[:200]) from exc
