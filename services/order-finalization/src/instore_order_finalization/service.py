"""The per-webhook service function of order-finalization: decode → decide and apply → claim → publish → mark.

Exactly one Order and one ``commerce.payments.completed.v1`` event per Cart, however often
its webhook comes, in whatever state the Order is now:

- the Order, by ``settings.order_creation``: ``integration`` —
  :func:`~instore_order_finalization.finalize.finalize` (deterministic order number, looked
  up before it is created; Composable Commerce refuses a second Order); ``instore`` —
  :func:`~instore_order_finalization.finalize.await_instore_order` (InStore creates it: found
  by number or by cart, waited for at most
  ``settings.order_finalization_instore_order_wait_seconds``, never created here);
- the event: :func:`instore_shared.announcements.announce_once` with the marker
  ``instore-integration-announcements/payments-completed.<order id>`` — a Custom Object
  claimed with ``version: 0`` before publishing and set ``published`` after Kafka acked.
  The Order itself is never changed to say so (it stays as created, ``Open``, and whatever
  the retailer's OMS makes of it later — ``Complete``, ``Cancelled`` — is never touched): a
  replayed webhook finds the marker ``published`` and publishes nothing, changes nothing.

Within a process, announcing is serialised per cart (``locks``): a second webhook of the
cart (named by key instead of id, so on another partition) waits and finds the marker
published instead of racing for the claim. Across replicas, the claim decides.

One deadline per webhook (``settings.order_finalization_retry_seconds``) covers every retry
— reading, creating or waiting for InStore's Order, claiming — so the handler ends well within the consumer's
``max.poll.interval.ms`` (:func:`instore_shared.kafka.consumer.max_poll_interval_ms`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Protocol

from instore_order_finalization.events import payments_completed
from instore_order_finalization.finalize import OrderCommerce, Outcome, Result, await_instore_order, finalize
from instore_order_finalization.settings import OrderFinalizationSettings
from instore_shared import announcements
from instore_shared.announcements import MarkerStore, Verdict
from instore_shared.clock import Clock
from instore_shared.commercetools.errors import TransientError
from instore_shared.contract import payments_completed as event_contract
from instore_shared.kafka import headers as h
from instore_shared.kafka.consumer import HANDLER_GRACE_SECONDS, Deadline, KeyedLocks, max_poll_interval_ms, retry_transient
from instore_shared.kafka.publisher import EventPublisher
from instore_shared.kafka.topics import PAYMENTS_COMPLETED
from instore_shared.logging import get_logger

log = get_logger(__name__)


class Commerce(OrderCommerce, MarkerStore, Protocol):
    """Composable Commerce as the service function needs it: Carts, Orders, Custom Objects."""


@dataclass(frozen=True, slots=True)
class Handled:
    """What one webhook led to: the finalization result and, for an ordered cart, the announcement."""

    result: Result
    announcement: Verdict | None = None


def marker_key(order_id: str) -> str:
    """The announcement marker's key of Order ``order_id``."""
    return announcements.marker_key("payments-completed", order_id)


async def handle_payment_webhook(
    body: bytes,
    headers: Mapping[str, str],
    *,
    commerce: Commerce,
    publisher: EventPublisher,
    locks: KeyedLocks,
    clock: Clock,
    settings: OrderFinalizationSettings,
    message_ref: str,
    after_order_created: Callable[[], None] | None = None,
) -> Handled:
    """Process one webhook (raw ``body`` and its Kafka ``headers``); ``message_ref`` is
    ``"<topic>/<partition>/<offset>"`` of the message (it identifies a redelivery).

    Returns :class:`Handled`. Raises :class:`~instore_order_finalization.finalize.PermanentFailure`
    or another ``Unprocessable`` (dead-letter it), ``TransientError`` when Composable Commerce
    stayed unavailable until the deadline (or the handler ran out its grace), and
    :class:`~instore_shared.kafka.publisher.PublishFailed` when Kafka did not take the event
    (do not commit: the webhook comes again, and publishes then).
    """
    budget = settings.order_finalization_retry_seconds
    try:
        async with asyncio.timeout(budget + HANDLER_GRACE_SECONDS):
            return await _handle(
                body,
                headers,
                commerce,
                publisher,
                locks,
                clock,
                settings,
                message_ref,
                after_order_created,
                Deadline(budget, clock),
            )
    except TimeoutError as exc:
        raise TransientError(0, "HandlerTimeout", f"the webhook took longer than {budget:.0f} s + grace") from exc


async def _handle(
    body: bytes,
    headers: Mapping[str, str],
    commerce: Commerce,
    publisher: EventPublisher,
    locks: KeyedLocks,
    clock: Clock,
    settings: OrderFinalizationSettings,
    message_ref: str,
    after_order_created: Callable[[], None] | None,
    deadline: Deadline,
) -> Handled:
    field, currency = settings.instore_field_order_number, settings.instore_currency
    if settings.order_creation == "instore":
        wait = settings.order_finalization_instore_order_wait_seconds
        result = await await_instore_order(body, commerce, field, currency, clock=clock, wait_seconds=wait, deadline=deadline)
    else:
        result = await retry_transient(lambda: finalize(body, commerce, field, currency), deadline, "order")
    log.info(
        "webhook.processed",
        webhook_id=headers.get(h.WEBHOOK_ID),
        outcome=result.outcome.value,
        origin=headers.get(h.ORIGIN) or "instore",  # "reconciliation": the reconciler's trigger
    )
    if result.order is None or result.cart is None:
        return Handled(result)
    if result.outcome is Outcome.ORDER_CREATED and after_order_created is not None:
        after_order_created()
    cart, order = result.cart, result.order
    event = payments_completed(cart, order, headers.get(h.WEBHOOK_ID), settings)
    correlation_id = headers.get(h.CORRELATION_ID) or headers.get(h.WEBHOOK_ID) or None
    topic = settings.topic_names().name(PAYMENTS_COMPLETED)

    async def publish() -> None:
        await publisher.publish(
            event_contract.encode(event),
            topic,
            key=order.id.encode(),
            correlation_id=correlation_id,
            headers={h.MESSAGE_TYPE: event_contract.MESSAGE_TYPE, h.CONTENT_TYPE: h.JSON, "event-id": event.event_id},
        )
        log.info("payments_completed.published", order_id=order.id, event_id=event.event_id)

    # One announcer per cart in this process (module doc); across replicas the claim decides.
    async with locks.hold(cart.id):
        verdict = await announcements.announce_once(
            commerce,
            marker_key(order.id),
            event_id=event.event_id,
            claimed_by=message_ref,
            publish=publish,
            clock=clock,
            lease_seconds=max_poll_interval_ms(settings.order_finalization_retry_seconds) / 1000,
            claim_retry=lambda claim: retry_transient(claim, deadline, "payments-completed"),
            mark_budget_seconds=deadline.remaining() + HANDLER_GRACE_SECONDS / 2,
            find_published=partial(publisher.published_since, topic, event.event_id),
        )
    if verdict is not Verdict.PUBLISHED:
        log.info("payments_completed.not_published", order_id=order.id, verdict=verdict.value)
    return Handled(result, verdict)
