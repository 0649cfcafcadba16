"""Assembly of the refund service: the FastStream subscriber on ``instore.webhooks.v1``, health routes.

Where refund webhooks come from: the gateway publishes every signed webhook, as received, to
``instore.webhooks.v1`` keyed by the id it names (the return cart id for a refund). The refund
service reads that topic in its own consumer group and skips every webhook that is not a
refund; order-finalization does the same for payments. So the gateway stays thin (it never
parses a webhook's type), a new kind of webhook needs no gateway release, and the two
services fail, lag and scale independently. Cost: each reads all webhooks (a cheap type check).

Per refund webhook the transport only decodes and calls
:func:`~instore_refund.service.handle_refund_webhook`: record the return items, Refund
transactions and ``Refunded`` payment states, then for each original Order claim, publish
``commerce.refunds.completed.v1`` (keyed by the Order id) and mark the announcement in a
Custom Object (:mod:`instore_shared.announcements`; never a field of the Order); then the
offset is committed. With ``REFUND_MODE=instore-managed`` InStore wrote the return and the
refunds itself: the service function verifies them and writes nothing but the marker (a
mismatch is dead-lettered as ``instore-managed-mismatch``). A refused refund, or one whose Composable Commerce calls still fail at
its deadline, goes to ``instore.webhooks.v1.dlq`` with its bytes and a reason — nothing of
it is written when the refusal comes from the checks before the first write; a failure
after the return items were written leaves them, recognised by key when the dead letter is
replayed; when Kafka cannot take the event or the dead letter nothing is committed and the
webhook comes again (nothing is written twice, the claim is this message's own, the event
keeps its id). The consumer's ``max.poll.interval.ms`` is derived from the per-webhook
budget (:func:`instore_shared.kafka.consumer.max_poll_interval_ms`).
"""

from __future__ import annotations

import os
from typing import Any

from faststream.asgi import AsgiFastStream
from faststream.kafka import KafkaBroker, KafkaMessage

from instore_refund.service import Commerce, handle_refund_webhook
from instore_refund.settings import RefundSettings
from instore_shared import metrics
from instore_shared.clock import SystemClock
from instore_shared.commercetools import CommercetoolsClient
from instore_shared.contract import refunds_completed as event_contract
from instore_shared.contract.instore_webhooks import RefundWebhook
from instore_shared.kafka import headers as h
from instore_shared.kafka.consumer import (
    KeyedLocks,
    correlation_of,
    park,
    webhook_broker,
    webhook_subscriber,
)
from instore_shared.kafka.publisher import KafkaEventPublisher, PublishFailed
from instore_shared.kafka.topics import REFUNDS_COMPLETED
from instore_shared.logging import correlation_scope, get_logger
from instore_shared.service import commerce_service_app, with_scopes
from instore_shared.settings import CommercetoolsSettings, load_settings

log = get_logger(__name__)


SCOPES = ("manage_orders", "view_orders", "manage_payments", "manage_key_value_documents")
"""Composable Commerce scopes: Carts and Orders, Payments, the announcement markers (Custom Objects)."""


def _crash_for_test() -> None:
    log.warning("refund.crash_for_test")
    os._exit(3)  # crash-recovery tests: the return items exist, the refunds, event and commit do not


def _publisher(broker: KafkaBroker, settings: Any) -> KafkaEventPublisher:
    return KafkaEventPublisher(broker, settings.kafka_bootstrap_servers, settings.kafka_client_options())


def create_broker(settings: RefundSettings, commerce: Commerce, attempts: int = 1) -> KafkaBroker:
    """The broker with the refund webhook subscriber. ``attempts`` is what the Composable Commerce
    client tries per call (reported in the dead letter)."""
    broker = webhook_broker(settings, "refund")
    group = settings.refund_consumer_group
    publisher, clock = _publisher(broker, settings), SystemClock()
    order_locks = KeyedLocks()  # announcing, by Order id
    recording_locks = KeyedLocks()  # recording, by the Orders the return lines name
    crash = _crash_for_test if settings.refund_crash_after_returns_recorded else None

    @webhook_subscriber(
        broker,
        group,
        settings.refund_concurrency,
        "refund",
        "Refund webhooks → return items and Refund transactions, once → commerce.refunds.completed.v1.",
        budget_seconds=settings.refund_retry_seconds,
        topics=settings.topic_names(),
    )
    async def on_webhook(message: KafkaMessage) -> None:
        record: Any = message.raw_message  # one ConsumerRecord (not a batch)
        with correlation_scope(correlation_of(message)):
            try:
                handled = await handle_refund_webhook(
                    message.body,
                    message.headers,
                    commerce=commerce,
                    publisher=publisher,
                    order_locks=order_locks,
                    recording_locks=recording_locks,
                    clock=clock,
                    settings=settings,
                    message_ref=f"{record.topic}/{record.partition}/{record.offset}",
                    after_returns=crash,
                )
            except PublishFailed:
                raise  # Kafka did not take the event: no commit, the webhook comes again
            except Exception as exc:
                # If Kafka cannot take the dead letter this raises: no commit, the webhook comes again.
                await park(broker, message, group, exc, attempts)
            else:
                verdicts = [v.value for v in handled.announcements.values()]
                metrics.webhook_handled(
                    handled.recorded.outcome.value,
                    settings.topic_names().name(REFUNDS_COMPLETED),
                    verdicts,
                    message.headers.get(h.RECEIVED_AT),
                )

    return broker


def create_app(
    settings: RefundSettings | None = None,
    commerce_settings: CommercetoolsSettings | None = None,
    commerce: Commerce | None = None,
) -> AsgiFastStream:
    """The refund application: broker + ``/healthz`` and ``/readyz`` (Kafka ping)."""
    settings = settings or RefundSettings()
    commerce_settings = with_scopes(commerce_settings or load_settings(CommercetoolsSettings, "instore-refund"), *SCOPES)
    client = commerce or CommercetoolsClient(commerce_settings)
    broker = create_broker(settings, client, attempts=commerce_settings.max_attempts)
    return commerce_service_app(
        "refund",
        broker,
        settings,
        client,
        "Refund webhooks on instore.webhooks.v1 (assumed shape: GET /schemas/refund-webhook.json) → return items and "
        "Refund transactions on the original Orders and Payments, once → commerce.refunds.completed.v1 "
        "(JSON Schema: GET /schemas/refunds-completed.json).",
        {"/schemas/refunds-completed.json": event_contract.RefundsCompleted, "/schemas/refund-webhook.json": RefundWebhook},
    )
