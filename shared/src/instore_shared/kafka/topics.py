"""The Kafka topic registry: every topic the services use, with a versioned name.

A topic name is ``<domain>.<name>.v<major>``; a breaking change of a message schema gets a
new major version and a new topic, so old and new consumers can run side by side.

The names here are the *registry* names. One deployment (one InStore tenant environment)
may share a Kafka cluster with others, so every process puts ``KAFKA_TOPIC_PREFIX`` in
front of every name and of its default consumer group ids: a :class:`TopicNames` built from
the settings (``BaseServiceSettings.topic_names()``) is what the services, the start-up
topic creation, the dead-letter topics and the ``instore-integration`` commands use. The
constants below never change at run time.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace


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

    def named(self, prefix: str) -> Topic:
        """This topic under ``prefix`` (a copy; ``""`` gives an equal topic). ``prefix`` is not checked here:
        :class:`TopicNames` checks it (:func:`check_prefix`)."""
        return replace(self, name=prefix + self.name) if prefix else self


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


KAFKA_MAX_TOPIC_NAME = 249
"""Kafka's longest legal topic name, in characters (``kafka.common.internals.Topic``)."""

DLQ_SUFFIX = ".dlq"
"""Appended to a topic's name to name its dead-letter topic (:func:`instore_shared.kafka.dlq.dlq_topic`)."""

MAX_PREFIX_LENGTH = KAFKA_MAX_TOPIC_NAME - max(
    len(t.name) + (0 if t.name.endswith(DLQ_SUFFIX) else len(DLQ_SUFFIX)) for t in ALL_TOPICS
)
"""The longest ``KAFKA_TOPIC_PREFIX``: the longest registry name plus ``.dlq`` (any consumed topic may
get a dead-letter topic) still fits Kafka's 249 characters."""

_PREFIX = re.compile(r"[a-zA-Z0-9._-]*")


def check_prefix(prefix: str) -> str:
    """``prefix`` when it is a legal topic-name prefix, else :class:`ValueError` saying why.

    Legal: only the characters Kafka allows in a topic name (``a-z A-Z 0-9 . _ -``) and at most
    :data:`MAX_PREFIX_LENGTH` of them; ``""`` (no prefix) is legal. A prefix should end with a
    separator (``dev.``), but that is a convention, not checked.
    """
    if not _PREFIX.fullmatch(prefix):
        raise ValueError(f"a topic prefix may only hold the characters a-z A-Z 0-9 . _ - (got {prefix!r})")
    if len(prefix) > MAX_PREFIX_LENGTH:
        raise ValueError(
            f"a topic prefix is at most {MAX_PREFIX_LENGTH} characters (the longest prefixed topic name, "
            f"with {DLQ_SUFFIX}, must stay within Kafka's {KAFKA_MAX_TOPIC_NAME}); got {len(prefix)}"
        )
    return prefix


@dataclass(frozen=True, slots=True)
class TopicNames:
    """The Kafka names of one deployment: the registry's topics and the default consumer groups under ``prefix``.

    Built from the settings (``BaseServiceSettings.topic_names()``) and passed to what publishes or
    subscribes; ``TopicNames()`` is the unprefixed registry. Raises :class:`ValueError` for an
    illegal prefix (:func:`check_prefix`).

    >>> TopicNames("dev.").name(WEBHOOKS)
    'dev.instore.webhooks.v1'
    """

    prefix: str = ""

    def __post_init__(self) -> None:
        check_prefix(self.prefix)

    def name(self, topic: Topic) -> str:
        """``topic``'s name in this deployment."""
        return self.prefix + topic.name

    def topic(self, topic: Topic) -> Topic:
        """``topic`` as it exists in this deployment (its name prefixed, the rest as registered)."""
        return topic.named(self.prefix)

    def all(self) -> tuple[Topic, ...]:
        """:data:`ALL_TOPICS` in this deployment, in creation order."""
        return tuple(t.named(self.prefix) for t in ALL_TOPICS)

    def group(self, group: str) -> str:
        """A default consumer group id in this deployment (an explicitly configured group stays as given:
        that is the caller's choice, see ``BaseServiceSettings``)."""
        return self.prefix + group

    def registry_topic(self, name: str) -> Topic:
        """The registry topic ``name`` means here: its registry name (``instore.webhooks.v1.dlq``) or its name
        in this deployment (``dev.instore.webhooks.v1.dlq`` under prefix ``dev.``, as metrics labels and alerts
        show it). The registry name wins when both readings exist.

        Raises :class:`LookupError` naming the registry's topics when there is none (a typo on the command
        line, or another deployment's prefix).
        """
        for topic in ALL_TOPICS:
            if topic.name == name:
                return topic
        if self.prefix and name.startswith(self.prefix):
            for topic in ALL_TOPICS:
                if self.prefix + topic.name == name:
                    return topic
        known = ", ".join(t.name for t in ALL_TOPICS)
        raise LookupError(
            f"no topic {name!r} in the registry (KAFKA_TOPIC_PREFIX is {self.prefix!r}); one of: {known}"
            + (f", each optionally with the prefix {self.prefix!r}" if self.prefix else "")
        )

    def resolve(self, name: str) -> str:
        """The name in this deployment of the registry topic ``name`` means (:meth:`registry_topic`).

        Raises :class:`LookupError` as :meth:`registry_topic`.
        """
        return self.name(self.registry_topic(name))
