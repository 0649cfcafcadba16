"""Assembly of order-finalization: the FastStream subscriber on ``instore.webhooks.v1``, health routes.

Per webhook, in order: decide and apply (:func:`finalize`), publish
``commerce.payments.completed.v1`` when an Order exists, then commit the offset
(architecture principle 1: a consumer commits only after its effects are done). A webhook
that can never be processed, or still fails after the client's bounded retries, goes to
``instore.webhooks.v1.dlq`` with its original bytes, key and headers plus ``dlq-*`` headers
naming the error, and its offset is committed. When Kafka cannot take the event or the
dead letter, nothing is committed and the webhook is processed again — the Order is found,
not created twice, and the event keeps its id.

Exactly one event per Order, however often the webhook comes: the Order is created
``Open`` and set ``Confirmed`` once its event is published; a redelivered or duplicate
webhook finds it ``Confirmed`` and publishes nothing, one that finds it ``Open`` (a crash
after creating it) publishes the event then. Announcing is serialised per cart within a
process. A crash between publishing and confirming, or two replicas handling two webhooks
that name the same cart differently (id and key) at the same moment, can repeat the
event — with the same deterministic ``eventId``.
"""

from __future__ import annotations

import os

from faststream.asgi import AsgiFastStream
from faststream.kafka import KafkaBroker, KafkaMessage

from instore_order_finalization.events import payments_completed
from instore_order_finalization.finalize import (
    OrderCommerce,
    Outcome,
    current_order,
    finalize,
    mark_announced,
    needs_announcement,
)
from instore_order_finalization.model import Cart, OrderRef
from instore_order_finalization.settings import OrderFinalizationSettings
from instore_shared.commercetools import CommercetoolsClient, TransientError
from instore_shared.contract import payments_completed as event_contract
from instore_shared.kafka import headers as h
from instore_shared.kafka.consumer import (
    KeyedLocks,
    Unprocessable,
    correlation_of,
    park,
    publish_event,
    retry_transient,
    webhook_broker,
    webhook_subscriber,
)
from instore_shared.kafka.consumer import the_message as _the_message  # noqa: F401 - the tests' collector uses it
from instore_shared.kafka.topics import PAYMENTS_COMPLETED
from instore_shared.logging import correlation_scope, get_logger
from instore_shared.service import commerce_service_app, with_scopes
from instore_shared.settings import CommercetoolsSettings, load_settings

log = get_logger(__name__)


def create_broker(settings: OrderFinalizationSettings, commerce: OrderCommerce, attempts: int = 1) -> KafkaBroker:
    """The broker with the webhook subscriber. ``attempts`` is what the Composable Commerce client
    tries per call (reported in the dead letter)."""
    broker = webhook_broker(settings, "order-finalization")
    group = settings.order_finalization_consumer_group
    cart_locks = KeyedLocks()

    @webhook_subscriber(broker, group, settings.order_finalization_concurrency, "order-finalization",
                        "Payment webhooks → exactly one Order per Cart → commerce.payments.completed.v1.")
    async def on_webhook(message: KafkaMessage) -> None:
        webhook_id = message.headers.get(h.WEBHOOK_ID)
        correlation_id = correlation_of(message)
        with correlation_scope(correlation_id):
            try:
                result = await retry_transient(
                    lambda: finalize(message.body, commerce, settings.instore_field_order_number,
                                     settings.instore_currency),
                    settings.order_finalization_retry_seconds, "order")
            except Exception as exc:
                # If Kafka cannot take the dead letter this raises: no commit, the webhook comes again.
                await park(broker, message, group, exc, attempts)
                return
            log.info("webhook.processed", webhook_id=webhook_id, outcome=result.outcome.value)
            if result.order is None or result.cart is None:
                return
            if result.outcome is Outcome.ORDER_CREATED and settings.order_finalization_crash_after_order_created:
                log.warning("order_finalization.crash_for_test")
                os._exit(3)  # crash-recovery tests: the Order exists, the event and the commit do not
            try:
                cart, created = result.cart, result.order
                await retry_transient(lambda: announce(cart, created, webhook_id, correlation_id),
                                      settings.order_finalization_retry_seconds, "payments-completed")
            except (Unprocessable, TransientError) as exc:
                # Composable Commerce refused or is down, or Kafka can never take the event: the
                # Order exists; a replay of the dead letter announces it (same event id).
                await park(broker, message, group, exc, attempts)

    async def announce(cart: Cart, created: OrderRef, webhook_id: str | None, correlation_id: str) -> None:
        # One announcer per cart in this process: two webhooks naming the same cart (by id and
        # by key, so on different partitions) wait for each other, and the second re-reads the
        # Order and finds it Confirmed. Across replicas the window stays (README).
        async with cart_locks.hold(cart.id):
            order = await current_order(commerce, created)
            if not needs_announcement(order):
                log.info("payments_completed.already_announced", order_id=order.id)
                return
            event = payments_completed(cart, order, webhook_id, settings)
            # Kafka failing to take the event raises out of the handler: no commit, it comes again.
            await publish_event(
                broker, event_contract.encode(event), PAYMENTS_COMPLETED.name, key=order.id.encode(),
                correlation_id=correlation_id or None,
                headers={h.MESSAGE_TYPE: event_contract.MESSAGE_TYPE, h.CONTENT_TYPE: h.JSON,
                         "event-id": event.event_id},
            )
            log.info("payments_completed.published", order_id=order.id, event_id=event.event_id)
            await mark_announced(commerce, order)

    return broker


def create_app(
    settings: OrderFinalizationSettings | None = None,
    commerce_settings: CommercetoolsSettings | None = None,
    commerce: OrderCommerce | None = None,
) -> AsgiFastStream:
    """The order-finalization application: broker + ``/healthz`` and ``/readyz`` (Kafka ping)."""
    settings = settings or OrderFinalizationSettings()
    commerce_settings = with_scopes(commerce_settings or load_settings(CommercetoolsSettings, "instore-order-finalization"),
                                    "manage_orders", "view_orders", "view_payments")
    client = commerce or CommercetoolsClient(commerce_settings)
    broker = create_broker(settings, client, attempts=commerce_settings.max_attempts)
    return commerce_service_app(
        "order-finalization", broker, settings, client,
        "Payment webhooks on instore.webhooks.v1 → exactly one Order per Cart → commerce.payments.completed.v1 "
        "(JSON Schema: GET /schemas/payments-completed.json).",
        {"/schemas/payments-completed.json": event_contract.PaymentsCompleted},
    )
