"""The Kafka topic registry: every topic the services use, with a versioned name.

A topic name is ``<domain>.<name>.v<major>``; a breaking change of a message schema gets a
new major version and a new topic, so old and new consumers can run side by side.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Topic:
    """A Kafka topic: its versioned ``name``, who writes it and what its messages are.

    ``key`` says what the Kafka message key is (it decides the partition, and so the
    order in which one entity's messages are seen).
    """

    name: str
    key: str
    schema: str
    description: str
    compacted: bool = False


CART_REQUESTS = Topic(
    name="instore.cart-requests.v1",
    key="the cart id or key InStore asked for",
    schema="instore_shared.contract.cart_lookup.CartLookupRequest",
    description="Cart lookups published by the gateway, answered by cart-mapping.",
)

CART_REPLIES = Topic(
    name="instore.cart-replies.v1",
    key="the cart id or key of the request",
    schema="instore_shared.contract.cart_lookup.CartLookupReply",
    description=(
        "Replies to cart lookups. Every gateway replica reads all partitions without a "
        "consumer group and keeps only the correlation ids it is waiting for."
    ),
)

SESSION_EVENTS = Topic(
    name="instore.session-events.v1",
    key="the colleague's user id",
    schema="instore_shared.contract.sessions.SessionStarted",
    description="Audit trail of colleague sessions the gateway opened (no tokens, no keys).",
)

WEBHOOKS = Topic(
    name="instore.webhooks.v1",
    key="the cart id, return cart id or order number the webhook names (none when it names none)",
    schema="the webhook's raw bytes; headers webhook-id, received-at, content-type",
    description="Every signed InStore webhook the gateway accepted, as received (durable before acknowledged).",
)

PAYMENTS_COMPLETED = Topic(
    name="commerce.payments.completed.v1",
    key="the Order id",
    schema="instore_shared.contract.payments_completed.PaymentsCompleted",
    description="A sale is paid and its Order exists; eventId is derived from the Order id (deduplicate by it).",
)

REFUNDS_COMPLETED = Topic(
    name="commerce.refunds.completed.v1",
    key="the original Order id",
    schema="instore_shared.contract.refunds_completed.RefundsCompleted",
    description=(
        "A finalized refund's return and Refund transactions are recorded on an original Order and its "
        "Payments; one event per Order; eventId derived from the Order, return cart and refund ids."
    ),
)

WEBHOOKS_DLQ = Topic(
    name="instore.webhooks.v1.dlq",
    key="as the source message",
    schema="the source message's bytes; dlq-* headers name the error",
    description=(
        "Webhooks a consumer could not process after bounded retries, with their original bytes, key "
        "and headers (see instore_shared.kafka.dlq); `make replay-dlq` puts them back on instore.webhooks.v1."
    ),
)

ALL_TOPICS: tuple[Topic, ...] = (
    CART_REQUESTS, CART_REPLIES, SESSION_EVENTS, WEBHOOKS, WEBHOOKS_DLQ, PAYMENTS_COMPLETED, REFUNDS_COMPLETED,
)
"""Every topic of this release, in the order they are created."""
