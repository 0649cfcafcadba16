"""Assembly of order-finalization: the FastStream subscriber on ``instore.webhooks.v1``, health routes.

The transport only decodes and calls: per webhook,
:func:`~instore_order_finalization.service.handle_payment_webhook` decides and applies,
claims the announcement, publishes ``commerce.payments.completed.v1`` and marks it (see
that module and :mod:`instore_shared.announcements` for why exactly one event goes out per
Order across replicas); then the offset is committed (architecture principle 1: a consumer
commits only after its effects are done). A webhook that can never be processed, or whose
Composable Commerce calls still fail at its deadline, goes to ``instore.webhooks.v1.dlq``
with its original bytes, key and headers plus ``dlq-*`` headers naming the error, and its
offset is committed. When Kafka cannot take the event or the dead letter, nothing is
committed and the webhook is processed again — the Order is found, not created twice, the
claim is recognised as this message's own, and the event keeps its id.

The consumer's ``max.poll.interval.ms`` is derived from the per-webhook retry budget
(:func:`instore_shared.kafka.consumer.max_poll_interval_ms`), so a handler within its
deadline is never evicted from the group.
"""

from __future__ import annotations

import os
from typing import Any

from faststream.asgi import AsgiFastStream
from faststream.kafka import KafkaBroker, KafkaMessage

from instore_order_finalization.service import Commerce, handle_payment_webhook
from instore_order_finalization.settings import OrderFinalizationSettings
from instore_shared import metrics
from instore_shared.clock import SystemClock
from instore_shared.commercetools import CommercetoolsClient
from instore_shared.contract import payments_completed as event_contract
from instore_shared.kafka import headers as h
from instore_shared.kafka.consumer import (
    KeyedLocks,
    correlation_of,
    park,
    webhook_broker,
    webhook_subscriber,
)
from instore_shared.kafka.publisher import KafkaEventPublisher, PublishFailed
from instore_shared.kafka.topics import PAYMENTS_COMPLETED
from instore_shared.logging import correlation_scope, get_logger
from instore_shared.service import commerce_service_app, with_scopes
from instore_shared.settings import CommercetoolsSettings, load_settings

log = get_logger(__name__)

SCOPES = ("manage_orders", "view_orders", "view_payments", "manage_key_value_documents")
"""Composable Commerce scopes: Carts and Orders (``manage_orders``), Payments (``view_payments``), the
announcement markers (Custom Objects: ``manage_key_value_documents``)."""


def _crash_for_test() -> None:
    log.warning("order_finalization.crash_for_test")
    os._exit(3)  # crash-recovery tests: the Order exists, the event and the commit do not


def _publisher(broker: KafkaBroker, settings: Any) -> KafkaEventPublisher:
    return KafkaEventPublisher(broker, settings.kafka_bootstrap_servers, settings.kafka_client_options())


def create_broker(settings: OrderFinalizationSettings, commerce: Commerce, attempts: int = 1) -> KafkaBroker:
    """The broker with the webhook subscriber. ``attempts`` is what the Composable Commerce client
    tries per call (reported in the dead letter)."""
    broker = webhook_broker(settings, "order-finalization")
    group = settings.order_finalization_consumer_group
    publisher, cart_locks, clock = _publisher(broker, settings), KeyedLocks(), SystemClock()
    crash = _crash_for_test if settings.order_finalization_crash_after_order_created else None

    @webhook_subscriber(
        broker,
        group,
        settings.order_finalization_concurrency,
        "order-finalization",
        "Payment webhooks → exactly one Order per Cart → commerce.payments.completed.v1.",
        budget_seconds=settings.order_finalization_retry_seconds,
        topics=settings.topic_names(),
    )
    async def on_webhook(message: KafkaMessage) -> None:
        record: Any = message.raw_message  # one ConsumerRecord (not a batch)
        with correlation_scope(correlation_of(message)):
            try:
                handled = await handle_payment_webhook(
                    message.body,
                    message.headers,
                    commerce=commerce,
                    publisher=publisher,
                    locks=cart_locks,
                    clock=clock,
                    settings=settings,
                    message_ref=f"{record.topic}/{record.partition}/{record.offset}",
                    after_order_created=crash,
                )
            except PublishFailed:
                raise  # Kafka did not take the event: no commit, the webhook comes again
            except Exception as exc:
                # If Kafka cannot take the dead letter this raises: no commit, the webhook comes again.
                await park(broker, message, group, exc, attempts)
            else:
                verdicts = [handled.announcement.value] if handled.announcement else []
                metrics.webhook_handled(
                    handled.result.outcome.value,
                    settings.topic_names().name(PAYMENTS_COMPLETED),
                    verdicts,
                    message.headers.get(h.RECEIVED_AT),
                )

    return broker


def create_app(
    settings: OrderFinalizationSettings | None = None,
    commerce_settings: CommercetoolsSettings | None = None,
    commerce: Commerce | None = None,
) -> AsgiFastStream:
    """The order-finalization application: broker + ``/healthz`` and ``/readyz`` (Kafka ping)."""
    settings = settings or OrderFinalizationSettings()
    commerce_settings = with_scopes(
        commerce_settings or load_settings(CommercetoolsSettings, "instore-order-finalization"), *SCOPES
    )
    client = commerce or CommercetoolsClient(commerce_settings)
    broker = create_broker(settings, client, attempts=commerce_settings.max_attempts)
    return commerce_service_app(
        "order-finalization",
        broker,
        settings,
        client,
        "Payment webhooks on instore.webhooks.v1 → exactly one Order per Cart → commerce.payments.completed.v1 "
        "(JSON Schema: GET /schemas/payments-completed.json).",
        {"/schemas/payments-completed.json": event_contract.PaymentsCompleted},
    )
