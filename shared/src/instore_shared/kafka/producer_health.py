"""Telling an idempotent aiokafka producer that can no longer deliver from one that is only waiting.

Root cause (aiokafka 0.14, ``producer/message_accumulator.py`` ``drain_by_nodes``): when a
partition has no known leader — as while a restarted broker loads its partitions — and its
oldest batch is older than ``request_timeout_ms``, the accumulator pops the batch, which
*assigns it the partition's next sequence number*, and fails it with
``NotLeaderForPartitionError`` / ``LeaderNotAvailableError`` without ever sending it. The
broker never sees that sequence number, so every later batch of this producer for that
partition is refused with ``OutOfOrderSequenceNumber`` (not retriable), for ever: aiokafka has
no recovery for it (the Java client bumps the epoch or resets sequences, KIP-360). Any outage
longer than the request timeout with sends pending can leave such a gap.

With ``enable_idempotence`` these errors reach a send's future only that way (a batch that
was sent is retried for as long as it takes, ``Sender._can_retry``), so we read them as
"this producer is broken": the owner replaces it with a new one (a new producer id, its
sequences from 0) and reports not-ready meanwhile. Delivery guarantees stay the same:
``acks=all`` and idempotence per producer; a message the old producer may have written is
at worst written again by a resend (the consumers are idempotent).
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import (
    InvalidProducerEpoch,
    KafkaError,
    LeaderNotAvailableError,
    NotLeaderForPartitionError,
    OutOfOrderSequenceNumber,
    ProducerFenced,
    UnknownProducerId,
)

from instore_shared.logging import get_logger

START_TIMEOUT_SECONDS = 15.0
"""Longest wait for a new producer's ``start()``; past it the producer is stopped and a fresh one tried.

Seen in CI (issue 14): a producer started while the broker was shutting down got a metadata
answer listing no broker; aiokafka then forgets its bootstrap servers ("Unable to update
metadata from []") and waits for a producer id for ever, so ``start()`` never returns and the
replacement never finished — the gateway stayed not-ready after the broker was back. A fresh
producer bootstraps from the configured servers again."""


log = get_logger(__name__)

REFUSED: tuple[type[BaseException], ...] = (
    OutOfOrderSequenceNumber,
    UnknownProducerId,
    InvalidProducerEpoch,
    ProducerFenced,
)
"""The broker refused the batch for the producer's state (the message is not stored) — and will refuse the next."""

GAP: tuple[type[BaseException], ...] = (NotLeaderForPartitionError, LeaderNotAvailableError)
"""An idempotent producer's batch expired without a leader: its sequence number is lost (it may have
been stored by an earlier attempt)."""

FATAL: tuple[type[BaseException], ...] = REFUSED + GAP
"""Errors after which an idempotent producer must be replaced."""


def dead_reason(producer: AIOKafkaProducer) -> str | None:
    """Why a started ``producer`` cannot deliver any more (its sender task ended, or its
    transaction manager is in a fatal state), else None."""
    sender = getattr(producer, "_sender", None)
    task = getattr(sender, "sender_task", None)
    if task is not None and task.done():
        return "sender task ended"
    txn = getattr(producer, "_txn_manager", None)
    if txn is not None and txn.is_fatal_error():
        return "fatal producer state"
    return None


def watch(delivery: asyncio.Future[Any], on_fatal: Any) -> None:
    """Call ``on_fatal(exc)`` when ``delivery`` (a send's future) fails with one of :data:`FATAL`;
    also retrieves the exception, so a future nobody awaits any more logs nothing."""

    def done(fut: asyncio.Future[Any]) -> None:
        if fut.cancelled():
            return
        exc = fut.exception()
        if isinstance(exc, FATAL):
            on_fatal(exc)

    delivery.add_done_callback(done)


async def retire(producer: AIOKafkaProducer, grace: float = 10.0) -> None:
    """Stop a replaced ``producer``: its pending batches get ``grace`` seconds to be delivered
    (those of healthy partitions are), then the rest are failed and its connections closed."""
    stopping = asyncio.ensure_future(producer.stop())
    done, _ = await asyncio.wait([stopping], timeout=grace)
    if not done:
        accumulator = getattr(producer, "_message_accumulator", None)
        if accumulator is not None:
            accumulator.fail_all(KafkaError("producer replaced"))
        await asyncio.wait([stopping], timeout=grace)
    if stopping.done() and not stopping.cancelled() and stopping.exception() is not None:
        log.warning("kafka.producer_retire_failed", error=type(stopping.exception()).__name__)
    elif not stopping.done():
        stopping.cancel()
