"""What the webhook consumers share: per-key locks and parking a message on its dead-letter topic."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from typing import TYPE_CHECKING, Any, TypeVar

from aiokafka.errors import MessageSizeTooLargeError
from faststream import AckPolicy
from faststream.kafka import KafkaBroker, KafkaMessage
from faststream.message import StreamMessage
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    wait_random_exponential,
)

from instore_shared import metrics
from instore_shared.clock import Clock, SystemClock
from instore_shared.commercetools.errors import TransientError
from instore_shared.kafka import headers as h
from instore_shared.kafka.dlq import dead_letter_headers, dlq_topic
from instore_shared.kafka.topics import WEBHOOKS, TopicNames
from instore_shared.logging import get_logger
from instore_shared.metrics import kafka_middlewares
from instore_shared.settings import BaseServiceSettings

if TYPE_CHECKING:
    from faststream.kafka.subscriber.usecase import ConcurrentBetweenPartitionsSubscriber

log = get_logger(__name__)


class Unprocessable(Exception):
    """This message can never be processed as it is: dead-letter it. ``reason`` is a machine-readable slug."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


async def the_message(message: StreamMessage[Any]) -> StreamMessage[Any]:
    """FastStream decoder that hands the handler the message itself (raw bytes, key, headers)."""
    return message


def webhook_broker(settings: BaseServiceSettings, name: str) -> KafkaBroker:
    """The Kafka broker of a webhook consumer ``name``: idempotent ``acks=all`` producer (its events
    and dead letters must not be lost or doubled by a retry), our logger, no dependency injection
    (FastStream's DI resolved a parameter in a worker thread per message), the Prometheus and
    (when tracing is on) OpenTelemetry middlewares (:func:`instore_shared.metrics.kafka_middlewares`)."""
    return KafkaBroker(
        settings.kafka_bootstrap_servers,
        client_id=f"{settings.kafka_client_id_prefix}-{name}",
        security=settings.kafka_security(),
        acks="all",
        enable_idempotence=True,
        logger=get_logger(f"instore_{name.replace('-', '_')}.kafka"),
        apply_types=False,
        log_level=logging.DEBUG,
        middlewares=kafka_middlewares(name),
    )


def webhook_subscriber(
    broker: KafkaBroker,
    group: str,
    concurrency: int,
    title: str,
    description: str,
    budget_seconds: float | None = None,
    *,
    topics: TopicNames,
) -> ConcurrentBetweenPartitionsSubscriber:
    """The subscriber decorator for ``instore.webhooks.v1`` (named by ``topics``: the deployment's prefix) in
    consumer group ``group``.

    Offsets are committed after the handler returned; an exception (Kafka could not take an
    event or a dead letter) leaves the offset where it was and the webhook comes again.
    ``concurrency`` consumers in the group, each with its own partitions: partitions are
    processed side by side, one partition's webhooks (one cart's) strictly in order.
    With ``budget_seconds`` (one message's retry budget) the consumer's ``max.poll.interval.ms``
    is :func:`max_poll_interval_ms` of it, so a handler within its deadline is never evicted.
    """
    return broker.subscriber(
        topics.name(WEBHOOKS),
        group_id=group,
        ack_policy=AckPolicy.NACK_ON_ERROR,
        max_workers=concurrency,
        auto_offset_reset="earliest",
        decoder=the_message,
        title=title,
        description=description,
        max_poll_interval_ms=300_000 if budget_seconds is None else max_poll_interval_ms(budget_seconds),
    )


HANDLER_GRACE_SECONDS = 60.0
"""How long a message's service function may run past its retry deadline — the last Composable
Commerce attempt (each call is bounded by the client's timeout × attempts), publishing the event
(the producer's request timeout is 40 s) and the marker write — before it is cancelled and the
message dead-lettered as ``commerce-unavailable``."""

POLL_MARGIN_SECONDS = 60.0
"""Beyond the grace: dead-lettering (one Kafka publish) and the offset commit."""

KAFKA_DEFAULT_POLL_SECONDS = 300.0
"""Kafka's default ``max.poll.interval.ms`` (in seconds): the derived interval is never shorter."""


def max_poll_interval_ms(budget_seconds: float) -> int:
    """The consumer's ``max.poll.interval.ms`` for a per-message retry budget of ``budget_seconds``:
    budget + :data:`HANDLER_GRACE_SECONDS` + :data:`POLL_MARGIN_SECONDS`, never below Kafka's
    default (300 s). Kafka evicts a member that does not poll within it — another member would
    then process the same webhook while this one still works on it.
    """
    return int(max(budget_seconds + HANDLER_GRACE_SECONDS + POLL_MARGIN_SECONDS, KAFKA_DEFAULT_POLL_SECONDS) * 1000)


class Deadline:
    """One message's retry deadline: ``budget_seconds`` from its creation, on ``clock``'s monotonic time.

    Every retry for that message — reading, writing, announcing, for every Order it touches —
    draws on this one budget, so a message never outlives :func:`max_poll_interval_ms`.
    """

    def __init__(self, budget_seconds: float, clock: Clock | None = None) -> None:
        self.clock: Clock = clock or SystemClock()
        self.budget_seconds = budget_seconds
        self._at = self.clock.monotonic() + budget_seconds

    def remaining(self) -> float:
        """Seconds left (0 when spent)."""
        return max(0.0, self._at - self.clock.monotonic())


class KeyedLocks:
    """One asyncio lock per key, dropped when nobody holds or waits for it (bounded memory)."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    @asynccontextmanager
    async def hold_all(self, keys: list[str]) -> AsyncIterator[None]:
        """Hold every one of ``keys``' locks, taken in sorted order (two holders cannot deadlock)."""
        async with AsyncExitStack() as stack:
            for key in sorted(set(keys)):
                await stack.enter_async_context(self.hold(key))
            yield

    @asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        """Hold ``key``'s lock for the ``async with`` block."""
        lock, users = self._locks.get(key, (asyncio.Lock(), 0))
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users <= 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)


def correlation_of(message: KafkaMessage) -> str:
    """The message's correlation id header, else its webhook id, else ``""``."""
    return message.headers.get(h.CORRELATION_ID) or message.headers.get(h.WEBHOOK_ID) or ""


async def dead_letter(
    broker: KafkaBroker, message: KafkaMessage, consumer_group: str, *, reason: str, detail: str, attempts: int
) -> None:
    """Publish ``message`` as received (bytes, key, headers) to its topic's dead-letter topic with ``dlq-*`` headers.

    Raises whatever the producer raises when Kafka cannot take it: the caller must then not
    commit the offset, so the message comes again.
    """
    record: Any = message.raw_message  # one ConsumerRecord (not a batch)
    await broker.publish(
        message.body,
        dlq_topic(record.topic),
        key=record.key,
        correlation_id=correlation_of(message) or None,
        headers=dead_letter_headers(
            dict(message.headers),
            reason=reason,
            detail=detail,
            attempts=attempts,
            source_topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            consumer_group=consumer_group,
        ),
    )
    metrics.DEAD_LETTERS.labels(record.topic, reason).inc()


async def park(broker: KafkaBroker, message: KafkaMessage, consumer_group: str, exc: Exception, attempts: int) -> None:
    """Dead-letter ``message`` for ``exc`` and log it: :class:`Unprocessable` gives its reason,
    ``TransientError`` (Composable Commerce still failing after ``attempts`` tries) is
    ``commerce-unavailable``, anything else is a bug — ``unexpected-error``, logged with its
    traceback, the bytes kept for a replay after the fix — so no message blocks its partition.

    Raises what :func:`dead_letter` raises (Kafka cannot take it): do not commit then.
    """
    webhook_id = message.headers.get(h.WEBHOOK_ID)
    if isinstance(exc, Unprocessable):
        reason, detail, tries = exc.reason, exc.detail, 1
    elif isinstance(exc, TransientError):
        reason, detail, tries = "commerce-unavailable", str(exc), attempts
    else:
        log.error("webhook.failed", webhook_id=webhook_id, exc_info=exc)
        reason, detail, tries = "unexpected-error", type(exc).__name__, 1
    record: Any = message.raw_message  # one ConsumerRecord (not a batch)
    log.warning("webhook.dead_lettered", webhook_id=webhook_id, reason=reason, detail=detail[:200], offset=record.offset)
    await dead_letter(broker, message, consumer_group, reason=reason, detail=detail, attempts=tries)


async def publish_event(
    broker: KafkaBroker, body: bytes, topic: str, *, key: bytes, correlation_id: str | None, headers: dict[str, str]
) -> None:
    """Publish one downstream event (acks as the broker is configured).

    Raises :class:`Unprocessable` (``event-too-large``) when Kafka can never take it — a
    retry would fail the same way forever and block the partition — and lets every other
    Kafka error through (transient: the caller does not commit, the message comes again).
    """
    try:
        await broker.publish(body, topic, key=key, correlation_id=correlation_id, headers=headers)
    except MessageSizeTooLargeError as exc:
        raise Unprocessable("event-too-large", f"a {len(body)}-byte event is more than Kafka takes on {topic}") from exc


_T = TypeVar("_T")


async def retry_transient(work: Callable[[], Awaitable[_T]], deadline: Deadline | float, what: str) -> _T:
    """``await work()``; while it raises ``TransientError`` (Composable Commerce down after the
    client's own quick retries) and ``deadline`` (a :class:`Deadline`, or a budget in seconds
    from now) is not reached, wait — jittered, doubling from 0.5 s up to 15 s, never past the
    deadline — and run it again. The partition waits meanwhile: an outage of a few minutes
    delays webhooks instead of dead-lettering every one. ``work`` must be safe to repeat (the
    handlers are idempotent). Raises the last ``TransientError`` when the deadline is reached,
    anything else at once.
    """
    if not isinstance(deadline, Deadline):
        deadline = Deadline(deadline)
    if deadline.remaining() <= 0:
        return await work()
    backoff = wait_random_exponential(multiplier=0.5, max=15)

    def before_sleep(state: RetryCallState) -> None:
        metrics.OUTAGE_RETRIES.labels(what).inc()
        metrics.OUTAGE_WAIT.labels(what).inc(state.upcoming_sleep)
        log.warning(
            "commerce.unavailable_retrying",
            what=what,
            attempt=state.attempt_number,
            wait_s=round(state.upcoming_sleep, 2),
            error=str(state.outcome.exception())[:200] if state.outcome else None,
        )

    async for attempt in AsyncRetrying(
        stop=lambda _state: deadline.remaining() <= 0,
        wait=lambda state: min(backoff(state), deadline.remaining()),
        sleep=deadline.clock.sleep,
        retry=retry_if_exception_type(TransientError),
        before_sleep=before_sleep,
        reraise=True,
    ):
        with attempt:
            return await work()
    raise AssertionError("unreachable")  # AsyncRetrying either returns or re-raises
