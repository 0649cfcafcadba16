"""Cart lookup request and reply, between the gateway and cart-mapping.

Our own contract (not InStore's): InStore calls the gateway over HTTP, the gateway asks
cart-mapping over Kafka with these messages. The reply carries the Cart exactly as
Composable Commerce returned it (raw JSON, never re-encoded), so InStore sees every
field, Custom Fields included.
"""

from __future__ import annotations

import enum
from typing import Any

import msgspec


class CartKind(enum.StrEnum):
    """Which callback asked: the sale (payment) cart or the return cart."""

    SALE = "sale"
    RETURN = "return"


class LookupStatus(enum.StrEnum):
    """Outcome of a lookup.

    - ``found``: the cart may be taken; ``cart`` holds it.
    - ``not_found``: no cart with that id or key.
    - ``conflict``: the cart exists but is in a state InStore must not take (HTTP 409).
    - ``invalid``: the cart's content is not acceptable (HTTP 422).
    - ``upstream_error``: Composable Commerce could not be read (HTTP 502).
    """

    FOUND = "found"
    NOT_FOUND = "not_found"
    CONFLICT = "conflict"
    INVALID = "invalid"
    UPSTREAM_ERROR = "upstream_error"


class CartLookupRequest(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """Ask for a cart by id or key.

    Attributes:
        cart_ref: the cart id (UUID) or key as InStore sent it, already validated by the gateway.
        kind: sale or return cart.
        requested_at: RFC 3339 UTC time the gateway received the callback.
    """

    cart_ref: str
    kind: CartKind
    requested_at: str


class CartLookupReply(msgspec.Struct, frozen=True, kw_only=True, rename="camel", omit_defaults=True):
    """The answer to a :class:`CartLookupRequest`.

    Attributes:
        status: the outcome.
        cart: the Cart JSON exactly as Composable Commerce returned it, when ``found``
            (``null`` otherwise; read it with :meth:`cart_json`).
        reason: machine-readable refusal code, e.g. ``cart-not-active`` (see
            ``instore_cart_mapping.rules``), when not ``found``.
        detail: a sentence for people, when not ``found``.
    """

    status: LookupStatus
    cart: msgspec.Raw = msgspec.Raw(b"null")
    reason: str | None = None
    detail: str | None = None

    def cart_json(self) -> bytes | None:
        """The Cart's JSON bytes, or None when the reply carries no cart."""
        raw = bytes(self.cart)
        return None if raw in (b"", b"null") else raw


class CartLookupReplySchema(msgspec.Struct, frozen=True, kw_only=True, rename="camel", omit_defaults=True):
    """:class:`CartLookupReply` for JSON Schema generation only (msgspec cannot describe ``Raw``)."""

    status: LookupStatus
    cart: dict[str, Any] | None = None
    reason: str | None = None
    detail: str | None = None


REQUEST_TYPE = "cart-lookup-request.v1"
REPLY_TYPE = "cart-lookup-reply.v1"

_request_decoder = msgspec.json.Decoder(CartLookupRequest)
_reply_decoder = msgspec.json.Decoder(CartLookupReply)
_encoder = msgspec.json.Encoder()


def encode(message: CartLookupRequest | CartLookupReply) -> bytes:
    """JSON bytes of a request or reply."""
    return _encoder.encode(message)


def decode_request(data: bytes) -> CartLookupRequest:
    """Parse a request. Raises :class:`msgspec.ValidationError` / :class:`msgspec.DecodeError`."""
    return _request_decoder.decode(data)


def decode_reply(data: bytes) -> CartLookupReply:
    """Parse a reply. Raises :class:`msgspec.ValidationError` / :class:`msgspec.DecodeError`."""
    return _reply_decoder.decode(data)
