"""Keeping a FastStream ``KafkaBroker``'s producer able to deliver: detect a broken one, replace it in-process.

A consumer service publishes its events and dead letters through ``broker.publish``, i.e.
through one idempotent aiokafka producer created when the broker connects. After an outage
longer than the producer's request timeout that producer can be broken for good
(:mod:`instore_shared.kafka.producer_health` gives the aiokafka root cause): every publish to
the partition with the sequence gap fails, the handler fails, the message is redelivered and
fails again — a loop until the process restarts, while ``/readyz`` (a broker ping) says 200.

:class:`ProducerGuard` watches every publish of the broker (a FastStream middleware). On an
error after which the producer cannot recover it logs ``kafka.producer_failed`` and replaces
the aiokafka producer inside FastStream's producer wrapper by a new one built from the
broker's own connection settings (same ``acks=all``, idempotence, security), then retires the
old one. Meanwhile :meth:`ProducerGuard.unready_reason` makes ``/readyz`` answer 503, and
publishes wait for the new producer instead of failing in a tight redelivery loop. Nothing
else of the broker — its subscribers, their consumers and offsets — is touched.

The consuming side needs no such guard: FastStream's consume loop logs a ``KafkaError`` and
polls again after 5 s, and its task supervisor (``TaskCallbackSupervisor``) restarts a loop
that ended with any other exception; an aiokafka consumer itself reconnects after an outage.
"""

from __future__ import annotations

import asyncio
import random
import weakref
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaConnectionError, KafkaError
from faststream import BaseMiddleware
from faststream.kafka import KafkaBroker

from instore_shared.kafka import producer_health
from instore_shared.logging import get_logger

log = get_logger(__name__)

REPLACE_WAIT_SECONDS = 30.0
"""How long a publish waits for a producer being replaced before it fails (the message comes again)."""

_guards: weakref.WeakKeyDictionary[KafkaBroker, ProducerGuard] = weakref.WeakKeyDictionary()


def producer_guard(broker: KafkaBroker) -> ProducerGuard:
    """The :class:`ProducerGuard` of ``broker``, created (and its middleware added) on first call."""
    guard = _guards.get(broker)
    if guard is None:
        guard = _guards[broker] = ProducerGuard(broker)
    return guard


class ProducerGuard:
    """Detects a broken producer of ``broker`` and replaces it (see the module docstring).

    Args:
        broker: a FastStream ``KafkaBroker``; its middleware is added here.
        backoff_max: longest pause, in seconds, between attempts to start the new producer.
    """

    def __init__(self, broker: KafkaBroker, backoff_max: float = 5.0) -> None:
        self._broker = broker
        self._backoff_max = backoff_max
        self._replacing: asyncio.Task[None] | None = None
        self._replaced = asyncio.Event()
        self._replaced.set()
        self.replacements = 0
        """How many times the producer was replaced."""
        guard = self

        class _Middleware(BaseMiddleware):
            async def publish_scope(self, call_next: Any, cmd: Any) -> Any:
                return await guard._publish(call_next, cmd)

        broker.add_middleware(_Middleware)

    def _current(self) -> AIOKafkaProducer | None:
        state = getattr(self._broker.config.producer, "_producer", None)
        return state.producer if state else None  # an EmptyProducerState is falsy (not connected)

    def unready_reason(self) -> str | None:
        """Why the broker's producer cannot deliver now (being replaced, or dead), else None."""
        if self._replacing is not None:
            return "the Kafka producer failed and is being replaced"
        producer = self._current()
        if producer is not None and (dead := producer_health.dead_reason(producer)) is not None:
            self.failed(producer, KafkaError(dead))
            return f"the Kafka producer failed ({dead}) and is being replaced"
        return None

    async def _publish(self, call_next: Any, cmd: Any) -> Any:
        if not self._replaced.is_set():
            try:
                await asyncio.wait_for(self._replaced.wait(), REPLACE_WAIT_SECONDS)
            except TimeoutError as exc:
                raise KafkaConnectionError("the Kafka producer is being replaced") from exc
        producer = self._current()
        try:
            return await call_next(cmd)
        except producer_health.FATAL as exc:
            if producer is not None:
                self.failed(producer, exc)
            raise

    def failed(self, producer: AIOKafkaProducer, exc: BaseException) -> None:
        """``producer`` hit a fatal error: replace it in the background (once)."""
        if self._replacing is not None or producer is not self._current():
            return
        log.error("kafka.producer_failed", error=type(exc).__name__, action="replacing the producer")
        self._replaced.clear()
        self._replacing = asyncio.create_task(self._replace(producer), name="replace-kafka-producer")

    async def _replace(self, old: AIOKafkaProducer) -> None:
        fast = self._broker.config.producer
        delay = 0.2
        try:
            while True:
                new = AIOKafkaProducer(**self._broker._connection_kwargs)
                try:
                    # FastStream's own connect(): starts the producer and makes it the one publishes use.
                    async with asyncio.timeout(producer_health.START_TIMEOUT_SECONDS):
                        await fast.connect(new, serializer=fast.serializer, codec=fast.codec)  # type: ignore[attr-defined]
                except (KafkaError, OSError, TimeoutError) as exc:
                    try:
                        await asyncio.wait_for(new.stop(), 10)
                    except Exception as stop_exc:
                        log.debug("kafka.producer_stop_failed", error=type(stop_exc).__name__)
                    pause = random.uniform(delay / 2, delay)
                    # the first failure is worth a line; the broker's state is logged by kafka.reconnect
                    (log.warning if delay == 0.2 else log.debug)(
                        "kafka.producer_replace_failed", error=type(exc).__name__, retry_in_s=round(pause, 2)
                    )
                    await asyncio.sleep(pause)
                    delay = min(delay * 2, self._backoff_max)
                    continue
                break
            self.replacements += 1
            log.info("kafka.producer_replaced", replaced=self.replacements)
        finally:
            self._replacing = None
            self._replaced.set()
        await producer_health.retire(old)
