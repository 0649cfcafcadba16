"""The per-webhook service function of the refund service: decode → record (under the recording
locks) — or, with ``REFUND_MODE=instore-managed``, verify and write nothing — → per original
Order: claim → publish → mark.

- Recording (:func:`~instore_refund.record.record_refund`): return items, Refund
  transactions, then the return items ``Refunded`` — the contract's business effects
  (../shared/reference/instore-contract.md §5), each recognised by key when repeated. Within
  a process, refunds naming the same original Orders are recorded one after the other
  (``recording_locks``), so two returns overdrawing one Payment cannot both write their
  return items before one is refused.
- ``REFUND_MODE=instore-managed`` (:func:`~instore_refund.verify.verify_refund`): InStore wrote
  the return and the refunds itself (contract §5, §9); the same reads, then a check that they
  match the webhook — read again every second while they do not, for at most
  ``settings.refund_instore_managed_wait_seconds`` within the deadline (InStore's writes may
  come after its webhook); a :class:`~instore_refund.verify.Mismatch` left then is
  dead-lettered. No Order or Payment update — the announcement marker below is the only write.
- Announcing, per original Order: :func:`instore_shared.announcements.announce_once` with the
  marker ``instore-integration-announcements/refunds-completed.<order id>.<event id>`` (one
  per Order and refund event; the event id is deterministic from what this refund recorded
  there). Nothing on the Order says "announced": a replay finds the marker ``published`` and
  publishes nothing. Within a process, one announcer per Order (``order_locks``).

One deadline per webhook (``settings.refund_retry_seconds``) covers every retry — the
recording (or the wait for InStore's writes) and every Order's announcement — so the handler ends well within the consumer's
``max.poll.interval.ms`` (:func:`instore_shared.kafka.consumer.max_poll_interval_ms`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import Protocol

from instore_refund.events import refunds_completed
from instore_refund.record import LineFields, Outcome, Recorded, RefundCommerce, current_order, record_refund
from instore_refund.settings import RefundSettings
from instore_refund.verify import verify_refund
from instore_shared import announcements
from instore_shared.announcements import MarkerStore, Verdict
from instore_shared.clock import Clock
from instore_shared.commercetools.errors import TransientError
from instore_shared.contract import refunds_completed as event_contract
from instore_shared.kafka import headers as h
from instore_shared.kafka.consumer import HANDLER_GRACE_SECONDS, Deadline, KeyedLocks, max_poll_interval_ms, retry_transient
from instore_shared.kafka.publisher import EventPublisher
from instore_shared.kafka.topics import REFUNDS_COMPLETED
from instore_shared.logging import get_logger

log = get_logger(__name__)


class Commerce(RefundCommerce, MarkerStore, Protocol):
    """Composable Commerce as the service function needs it: Carts, Orders, Payments, Custom Objects."""


@dataclass(slots=True)
class Handled:
    """What one webhook led to: what was recorded, and per original Order id the announcement."""

    recorded: Recorded
    announcements: dict[str, Verdict] = field(default_factory=dict)


def marker_key(order_id: str, event_id: str) -> str:
    """The announcement marker's key of the refund event ``event_id`` on Order ``order_id``."""
    return announcements.marker_key("refunds-completed", order_id, event_id)


async def handle_refund_webhook(
    body: bytes,
    headers: Mapping[str, str],
    *,
    commerce: Commerce,
    publisher: EventPublisher,
    order_locks: KeyedLocks,
    recording_locks: KeyedLocks,
    clock: Clock,
    settings: RefundSettings,
    message_ref: str,
    after_returns: Callable[[], None] | None = None,
) -> Handled:
    """Process one webhook (raw ``body`` and its Kafka ``headers``); ``message_ref`` is
    ``"<topic>/<partition>/<offset>"`` of the message (it identifies a redelivery).

    Returns :class:`Handled` (``NOT_A_REFUND`` for other webhooks). Raises
    :class:`~instore_refund.plan.Refused` or another ``Unprocessable`` (dead-letter it),
    ``TransientError`` when Composable Commerce stayed unavailable until the deadline, and
    :class:`~instore_shared.kafka.publisher.PublishFailed` when Kafka did not take an event
    (do not commit: the webhook comes again; nothing is written twice, the event keeps its id).
    ``after_returns`` runs between the return items and the refunds (crash tests).
    """
    budget = settings.refund_retry_seconds
    try:
        async with asyncio.timeout(budget + HANDLER_GRACE_SECONDS):
            return await _handle(
                body,
                headers,
                commerce,
                publisher,
                order_locks,
                recording_locks,
                clock,
                settings,
                message_ref,
                after_returns,
                Deadline(budget, clock),
            )
    except TimeoutError as exc:
        raise TransientError(0, "HandlerTimeout", f"the webhook took longer than {budget:.0f} s + grace") from exc


async def _handle(
    body: bytes,
    headers: Mapping[str, str],
    commerce: Commerce,
    publisher: EventPublisher,
    order_locks: KeyedLocks,
    recording_locks: KeyedLocks,
    clock: Clock,
    settings: RefundSettings,
    message_ref: str,
    after_returns: Callable[[], None] | None,
    deadline: Deadline,
) -> Handled:
    fields = LineFields(
        settings.instore_field_purchase_order_id,
        settings.instore_field_purchase_line_item_id,
        settings.instore_field_return_comment,
    )
    if settings.refund_mode == "instore-managed":  # InStore wrote the return and refunds: verify, write nothing
        wait = settings.refund_instore_managed_wait_seconds  # InStore's writes may come after its webhook
        recorded = await verify_refund(body, commerce, fields, clock=clock, wait_seconds=wait, deadline=deadline)
    else:
        recorded = await retry_transient(
            lambda: record_refund(body, commerce, fields, after_returns=after_returns, locks=recording_locks),
            deadline,
            "refund",
        )
    handled = Handled(recorded)
    if recorded.outcome is Outcome.NOT_A_REFUND:
        return handled
    webhook_id = headers.get(h.WEBHOOK_ID)
    log.info(
        "webhook.processed",
        webhook_id=webhook_id,
        outcome=recorded.outcome.value,
        return_cart_id=recorded.return_cart.get("id"),
        orders=recorded.order_ids,
    )
    correlation_id = headers.get(h.CORRELATION_ID) or webhook_id or None
    lease = max_poll_interval_ms(settings.refund_retry_seconds) / 1000
    topic = settings.topic_names().name(REFUNDS_COMPLETED)
    for order_id in recorded.order_ids:
        # One announcer per Order in this process: two refunds of one Order wait for each other.
        async with order_locks.hold(order_id):
            order = recorded.orders.get(order_id)  # as read after the writes; else read it now
            if order is None:
                order = await retry_transient(partial(current_order, commerce, order_id), deadline, "refunds-completed")
            event = refunds_completed(recorded, order, webhook_id, settings)

            async def publish(event: event_contract.RefundsCompleted = event, order_id: str = order_id) -> None:
                await publisher.publish(
                    event_contract.encode(event),
                    topic,
                    key=order_id.encode(),
                    correlation_id=correlation_id,
                    headers={h.MESSAGE_TYPE: event_contract.MESSAGE_TYPE, h.CONTENT_TYPE: h.JSON, "event-id": event.event_id},
                )
                log.info(
                    "refunds_completed.published",
                    order_id=order_id,
                    event_id=event.event_id,
                    refunded=event.total_refunded.cent_amount,
                    currency=event.total_refunded.currency_code,
                )

            handled.announcements[order_id] = await announcements.announce_once(
                commerce,
                marker_key(order_id, event.event_id),
                event_id=event.event_id,
                claimed_by=message_ref,
                publish=publish,
                clock=clock,
                lease_seconds=lease,
                claim_retry=lambda claim: retry_transient(claim, deadline, "refunds-completed"),
                mark_budget_seconds=deadline.remaining() + HANDLER_GRACE_SECONDS / 2,
                find_published=partial(publisher.published_since, topic, event.event_id),
            )
    return handled
