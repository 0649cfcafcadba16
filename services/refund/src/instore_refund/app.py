"""Assembly of the refund service: the FastStream subscriber on ``instore.webhooks.v1``, health routes.

Where refund webhooks come from: the gateway publishes every signed webhook, as received, to
``instore.webhooks.v1`` keyed by the id it names (the return cart id for a refund). The refund
service reads that topic in its own consumer group and skips every webhook that is not a
refund; order-finalization does the same for payments. So the gateway stays thin (it never
parses a webhook's type), a new kind of webhook needs no gateway release, and the two
services fail, lag and scale independently. Cost: each reads all webhooks (a cheap type check).

Per refund webhook, in order: record the return items and Refund transactions
(:func:`~instore_refund.record.record_refund`), then for each original Order still to
announce: publish ``commerce.refunds.completed.v1`` (keyed by the Order id), set its return
items ``Refunded``; then commit the offset. A refused refund, or one still failing after the
client's bounded retries, goes to ``instore.webhooks.v1.dlq`` with its bytes and a reason —
nothing of it is written when the refusal comes from the checks before the first write; a
failure after the return items were written leaves them, recognised by key when the dead
letter is replayed; when Kafka cannot take the event or the dead letter nothing is
committed and the webhook comes again (nothing is written twice, the event keeps its id).
A crash between publishing and marking, or two replicas announcing one Order at the same
moment, can repeat an event — with the same ``eventId``.
"""

from __future__ import annotations

import os

from faststream.asgi import AsgiFastStream
from faststream.kafka import KafkaBroker, KafkaMessage

from instore_refund.events import refunds_completed
from instore_refund.record import (
    LineFields,
    Outcome,
    Recorded,
    RefundCommerce,
    current_order,
    mark_refunded,
    needs_announcement,
    record_refund,
)
from instore_refund.settings import RefundSettings
from instore_shared.commercetools import CommercetoolsClient, TransientError
from instore_shared.contract import refunds_completed as event_contract
from instore_shared.contract.instore_webhooks import RefundWebhook
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
from instore_shared.kafka.topics import REFUNDS_COMPLETED
from instore_shared.logging import correlation_scope, get_logger
from instore_shared.service import commerce_service_app, with_scopes
from instore_shared.settings import CommercetoolsSettings, load_settings

log = get_logger(__name__)


def _crash_for_test() -> None:
    log.warning("refund.crash_for_test")
    os._exit(3)  # crash-recovery tests: the return items exist, the refunds, event and commit do not


def create_broker(settings: RefundSettings, commerce: RefundCommerce, attempts: int = 1) -> KafkaBroker:
    """The broker with the refund webhook subscriber. ``attempts`` is what the Composable Commerce
    client tries per call (reported in the dead letter)."""
    broker = webhook_broker(settings, "refund")
    group = settings.refund_consumer_group
    fields = LineFields(settings.instore_field_purchase_order_id, settings.instore_field_purchase_line_item_id,
                        settings.instore_field_return_comment)
    order_locks = KeyedLocks()  # announcing, by Order id
    recording_locks = KeyedLocks()  # recording, by the Orders the return lines name
    crash = _crash_for_test if settings.refund_crash_after_returns_recorded else None

    @webhook_subscriber(broker, group, settings.refund_concurrency, "refund",
                        "Refund webhooks → return items and Refund transactions, once → commerce.refunds.completed.v1.")
    async def on_webhook(message: KafkaMessage) -> None:
        webhook_id = message.headers.get(h.WEBHOOK_ID)
        correlation_id = correlation_of(message)
        with correlation_scope(correlation_id):
            try:
                recorded = await retry_transient(
                    lambda: record_refund(message.body, commerce, fields, after_returns=crash, locks=recording_locks),
                    settings.refund_retry_seconds, "refund")
            except Exception as exc:
                # If Kafka cannot take the dead letter this raises: no commit, the webhook comes again.
                await park(broker, message, group, exc, attempts)
                return
            if recorded.outcome is Outcome.NOT_A_REFUND:
                return
            log.info("webhook.processed", webhook_id=webhook_id, outcome=recorded.outcome.value,
                     return_cart_id=recorded.return_cart.get("id"), orders=recorded.order_ids)
            try:
                for order_id in recorded.order_ids:
                    await retry_transient(lambda order_id=order_id: announce(recorded, order_id, webhook_id, correlation_id),
                                          settings.refund_retry_seconds, "refunds-completed")
            except (Unprocessable, TransientError) as exc:
                # Composable Commerce refused or is down while announcing: the writes are done,
                # a replay of the dead letter announces what is left (same event ids).
                await park(broker, message, group, exc, attempts)

    async def announce(recorded: Recorded, order_id: str, webhook_id: str | None, correlation_id: str) -> None:
        # One announcer per Order in this process: two refunds of one Order wait for each other.
        async with order_locks.hold(order_id):
            order = await current_order(commerce, order_id)
            if not needs_announcement(recorded, order):
                log.info("refunds_completed.already_announced", order_id=order_id)
                return
            event = refunds_completed(recorded, order, webhook_id, settings)
            # Kafka failing to take the event raises out of the handler: no commit, the webhook comes
            # again; an event Kafka can never take (too large) is dead-lettered.
            await publish_event(
                broker, event_contract.encode(event), REFUNDS_COMPLETED.name, key=order_id.encode(),
                correlation_id=correlation_id or None,
                headers={h.MESSAGE_TYPE: event_contract.MESSAGE_TYPE, h.CONTENT_TYPE: h.JSON,
                         "event-id": event.event_id},
            )
            log.info("refunds_completed.published", order_id=order_id, event_id=event.event_id,
                     refunded=event.total_refunded.cent_amount, currency=event.total_refunded.currency_code)
            await mark_refunded(commerce, recorded, order)

    return broker


def create_app(
    settings: RefundSettings | None = None,
    commerce_settings: CommercetoolsSettings | None = None,
    commerce: RefundCommerce | None = None,
) -> AsgiFastStream:
    """The refund application: broker + ``/healthz`` and ``/readyz`` (Kafka ping)."""
    settings = settings or RefundSettings()
    commerce_settings = with_scopes(commerce_settings or load_settings(CommercetoolsSettings, "instore-refund"),
                                    "manage_orders", "view_orders", "manage_payments")
    client = commerce or CommercetoolsClient(commerce_settings)
    broker = create_broker(settings, client, attempts=commerce_settings.max_attempts)
    return commerce_service_app(
        "refund", broker, settings, client,
        "Refund webhooks on instore.webhooks.v1 (assumed shape: GET /schemas/refund-webhook.json) → return items and "
        "Refund transactions on the original Orders and Payments, once → commerce.refunds.completed.v1 "
        "(JSON Schema: GET /schemas/refunds-completed.json).",
        {"/schemas/refunds-completed.json": event_contract.RefundsCompleted,
         "/schemas/refund-webhook.json": RefundWebhook},
    )
