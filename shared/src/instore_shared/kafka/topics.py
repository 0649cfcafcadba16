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

PAYMENT_REQUESTS = Topic(
    name="instore.payment-requests.v1",
    key="the Payment id InStore created (else the cart id, else the request id)",
    schema="the request's raw bytes (instore_shared.contract.payment_extensions.PaymentExtensionRequest); "
    "headers request-id, tender, action, received-at",
    description="Signed payment-extension requests from InStore, as received, durable before InStore gets its 200.",
)

PAYMENT_PROMPT_ANSWERS = Topic(
    name="instore.payment-prompt-answers.v1",
    key="the prompt's requestId",
    schema="instore_shared.contract.payment_extensions.PromptAnswer",
    description=(
        "The colleague's answers to payment prompts. Every payment-extension replica reads all partitions "
        "without a consumer group and keeps only the answers its waiting payments asked for."
    ),
)

PAYMENT_EXTENSION_RESULTS = Topic(
    name="commerce.payment-extension-results.v1",
    key="the Payment id (else the request id)",
    schema="instore_shared.contract.payment_extensions.PaymentExtensionResultEvent",
    description="The final result of each payment-extension request; eventId derived from InStore's request id.",
)

PAYMENT_REQUESTS_DLQ = Topic(
    name="instore.payment-requests.v1.dlq",
    key="as the source message",
    schema="the source message's bytes; dlq-* headers name the error",
    description="Payment-extension requests that could not be processed, with their bytes and a reason.",
)

HOST_EVENTS = Topic(
    name="instore.host-events.v1",
    key="the cart id the event names, else the workstation id",
    schema="instore_shared.contract.host_events.HostEvent",
    description="InStore's browser events (mistStatus, inStoreCore-Alert, inStoreCore-receiptChoice, …) forwarded "
    "by the host app, with the colleague, location and workstation of the session.",
)

ALL_TOPICS: tuple[Topic, ...] = (
    CART_REQUESTS,
    CART_REPLIES,
    SESSION_EVENTS,
    WEBHOOKS,
    WEBHOOKS_DLQ,
    PAYMENTS_COMPLETED,
    REFUNDS_COMPLETED,
    PAYMENT_REQUESTS,
    PAYMENT_PROMPT_ANSWERS,
    PAYMENT_EXTENSION_RESULTS,
    PAYMENT_REQUESTS_DLQ,
    HOST_EVENTS,
)
"""Every topic of this release, in the order they are created."""
