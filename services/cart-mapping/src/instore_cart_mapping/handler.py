"""Answer one cart lookup: read, check, reply. Transport-free: the commerce port is passed in."""

from __future__ import annotations

import asyncio
from typing import Protocol

import msgspec

from instore_cart_mapping import rules
from instore_cart_mapping.model import Order, cart_decoder, order_decoder
from instore_cart_mapping.settings import CartMappingSettings
from instore_shared.commercetools.client import ApiResponse
from instore_shared.commercetools.errors import CommercetoolsError, NotFound
from instore_shared.contract.cart_lookup import (
    CartKind,
    CartLookupReply,
    CartLookupRequest,
    LookupStatus,
)
from instore_shared.logging import get_logger

log = get_logger(__name__)


class CommerceReader(Protocol):
    """What the handler needs from Composable Commerce (``CommercetoolsClient`` implements it)."""

    async def find_cart(self, ref: str, expand: tuple[str, ...] = ()) -> ApiResponse:
        """The cart by id, else by key. Raises ``NotFound``."""
        ...

    async def find_order(self, ref: str) -> ApiResponse:
        """The order by id, else by order number. Raises ``NotFound``."""
        ...


def _refused(refusal: rules.Refusal) -> CartLookupReply:
    return CartLookupReply(status=refusal.status, reason=refusal.reason, detail=refusal.detail)


async def handle_cart_lookup(
    request: CartLookupRequest,
    commerce: CommerceReader,
    settings: CartMappingSettings,
) -> CartLookupReply:
    """Look up ``request.cart_ref`` and decide whether InStore may take it.

    Returns ``found`` with the Cart bytes exactly as Composable Commerce sent them, or a
    refusal (``not_found``, ``conflict``, ``invalid`` — also when Composable Commerce refuses
    the read with a 4xx), or ``upstream_error`` when it could not be read after the client's
    bounded retries or refuses this service's credentials (see :func:`_upstream_error`).
    Never raises for Composable Commerce errors.
    """
    try:
        response = await commerce.find_cart(request.cart_ref)
    except NotFound:
        return CartLookupReply(
            status=LookupStatus.NOT_FOUND, reason="cart-not-found", detail=f"no cart with id or key {request.cart_ref!r}"
        )
    except CommercetoolsError as exc:
        return _upstream_error(exc)
    try:
        cart = cart_decoder.decode(response.content)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        log.error("cart_lookup.unexpected_cart_shape", error=str(exc))
        return CartLookupReply(
            status=LookupStatus.UPSTREAM_ERROR,
            reason="unexpected-cart-shape",
            detail="Composable Commerce returned a cart this service cannot read",
        )

    if request.kind is CartKind.SALE:
        refusal = rules.check_sale_cart(cart, settings.instore_currency, settings.instore_field_purchase_order_id)
    else:
        refs, refusal = rules.purchase_refs(
            cart, settings.instore_field_purchase_order_id, settings.instore_field_purchase_line_item_id
        )
        if refusal is None:
            try:
                orders = await _load_orders({r.order_ref for r in refs}, commerce)
            except (CommercetoolsError, msgspec.ValidationError, msgspec.DecodeError) as exc:
                return _upstream_error(exc)
            refusal = rules.check_return_cart(cart, refs, orders, settings.instore_currency)
    if refusal is not None:
        log.info("cart_lookup.refused", cart_id=cart.id, kind=request.kind.value, reason=refusal.reason)
        return _refused(refusal)
    return CartLookupReply(status=LookupStatus.FOUND, cart=msgspec.Raw(response.content))


def _upstream_error(exc: Exception) -> CartLookupReply:
    """Composable Commerce did not give what the lookup needs: logged in full, answered without internals.

    A 4xx is a refusal, never an outage (a retry of the same lookup gets the same answer):
    401/403 → ``upstream_error`` ``commerce-access-denied`` (this service's credentials or
    scopes; 502 at the gateway), any other 4xx but 404 and 429 → ``invalid``
    ``commerce-refused`` with the status and error code (422 at the gateway). Only 429 and
    5xx after the client's retries, or no answer at all, are ``commerce-unavailable``.
    """
    if isinstance(exc, CommercetoolsError):
        log.warning("cart_lookup.upstream_error", status=exc.status, code=exc.code, message=exc.message)
        if exc.status in (401, 403):
            return CartLookupReply(
                status=LookupStatus.UPSTREAM_ERROR,
                reason="commerce-access-denied",
                detail=f"Composable Commerce refused this service's credentials or scopes (answered {exc.status})",
            )
        if 400 <= exc.status < 500 and exc.status != 429:
            code = f" {exc.code}" if exc.code else ""
            return CartLookupReply(
                status=LookupStatus.INVALID,
                reason="commerce-refused",
                detail=f"Composable Commerce refused the lookup (answered {exc.status}{code})",
            )
        what = f"answered {exc.status}" if exc.status else "could not be reached"
    else:
        log.error("cart_lookup.unexpected_order_shape", error=str(exc))
        what = "returned an order this service cannot read"
    return CartLookupReply(
        status=LookupStatus.UPSTREAM_ERROR, reason="commerce-unavailable", detail=f"Composable Commerce {what}"
    )


async def _load_orders(refs: set[str], commerce: CommerceReader) -> dict[str, Order | None]:
    async def one(ref: str) -> tuple[str, Order | None]:
        try:
            return ref, order_decoder.decode((await commerce.find_order(ref)).content)
        except NotFound:
            return ref, None

    return dict(await asyncio.gather(*(one(r) for r in sorted(refs))))
