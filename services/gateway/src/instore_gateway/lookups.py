"""Cart lookups over Kafka request/reply, as the callback handlers see them (a port)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Protocol

from instore_shared.contract import cart_lookup as contract
from instore_shared.kafka.rpc import RequestReplyClient
from instore_shared.kafka.topics import CART_REQUESTS


class CartLookups(Protocol):
    """Ask cart-mapping for a cart. Raises ``BrokerUnavailable`` or ``ReplyTimeout``."""

    async def lookup(self, kind: contract.CartKind, cart_ref: str, correlation_id: str) -> contract.CartLookupReply:
        """The reply to a lookup of ``cart_ref``."""
        ...

    async def ready(self) -> bool:
        """True when a lookup could be published now."""
        ...


class KafkaCartLookups:
    """:class:`CartLookups` over :class:`RequestReplyClient`, keyed by the cart reference.

    Args:
        client: the started request/reply client.
        timeout: seconds to wait for the reply, publish included.
        topic: the request topic (``instore.cart-requests.v1`` under ``KAFKA_TOPIC_PREFIX``).
    """

    def __init__(self, client: RequestReplyClient, timeout: float, topic: str = CART_REQUESTS.name) -> None:
        self._client = client
        self._timeout = timeout
        self._topic = topic

    async def lookup(self, kind: contract.CartKind, cart_ref: str, correlation_id: str) -> contract.CartLookupReply:
        """Publish a :class:`CartLookupRequest` to ``instore.cart-requests.v1`` and decode its reply.

        Raises ``BrokerUnavailable``, ``ReplyTimeout``, or ``msgspec.DecodeError`` /
        ``msgspec.ValidationError`` for a malformed reply.
        """
        request = contract.CartLookupRequest(
            cart_ref=cart_ref, kind=kind, requested_at=datetime.now(UTC).isoformat(timespec="milliseconds")
        )
        reply = await self._client.request(
            self._topic,
            key=cart_ref,
            value=contract.encode(request),
            timeout_s=self._timeout,
            message_type=contract.REQUEST_TYPE,
            correlation_id=correlation_id,
        )
        return contract.decode_reply(reply.value)

    async def ready(self) -> bool:
        """True when a lookup could succeed now: connected, reply reader running, producer healthy,
        and Kafka answers a metadata request."""
        return await self._client.ready()

    def unready_reason(self) -> str | None:
        """Why a lookup could not succeed now, else None (see ``RequestReplyClient.unready_reason``)."""
        return self._client.unready_reason()
