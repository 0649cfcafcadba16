"""Request/reply over Kafka: the asking side (the gateway's cart lookups) and the answering side's helpers.

Why our own code and not ``KafkaBroker.request()``: FastStream's request only works under
``TestKafkaBroker`` and raises on a real broker. The answering side stays plain FastStream:
a subscriber that receives a message with a ``reply_to`` header publishes its return value
to that topic with the same ``correlation_id`` (see :mod:`instore_shared.kafka.headers`).

Reply routing with several gateway replicas — the decision, and why:
every replica reads **all partitions of the one shared reply topic, without a consumer
group** (manual assignment, positioned at the end before the first request is sent), and
keeps only the replies whose correlation id it is waiting for. The alternatives were a
reply topic per replica (topics to create and garbage-collect as pods come and go, ACLs
per pod) or a reply partition per replica (needs a stable replica ordinal and as many
partitions as replicas, and a rebalance could steer replies away). Reading everything
costs each replica the replies of the others — a few hundred bytes each, so 10 replicas
at 1,000 lookups/s is ~10k small messages/s per replica, well within one consumer — and
buys zero coordination: a replica can start, die or scale without any topic or group
change, and a restart cannot strand a reply on a partition nobody reads.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError, MessageSizeTooLargeError
from faststream.kafka import KafkaBroker, KafkaMessage
from opentelemetry.trace import SpanKind

from instore_shared import metrics, telemetry
from instore_shared.kafka import headers as h
from instore_shared.kafka import producer_health
from instore_shared.logging import get_logger

log = get_logger(__name__)


# -- the answering side ----------------------------------------------------------------
def request_expired(headers: Mapping[str, str], now_ms: int | None = None) -> bool:
    """True when the request's ``deadline-ms`` header lies in the past: nobody waits for the reply."""
    deadline = headers.get(h.DEADLINE, "")
    now = int(time.time() * 1000) if now_ms is None else now_ms
    return deadline.isdigit() and int(deadline) < now


async def publish_reply(broker: KafkaBroker, request: KafkaMessage, value: bytes, message_type: str) -> bool:
    """Publish ``value`` to the request's ``reply_to`` topic, keyed like the request, with its ``correlation_id``.

    Returns False (and publishes nothing) when the request named no ``reply_to``. Raises
    what ``KafkaBroker.publish`` raises when Kafka does not take the reply.
    """
    if not request.reply_to:
        return False
    record: Any = request.raw_message  # one ConsumerRecord (not a batch)
    await broker.publish(
        value,
        request.reply_to,
        key=record.key or None,
        correlation_id=request.correlation_id,
        headers={h.MESSAGE_TYPE: message_type, h.CONTENT_TYPE: h.JSON},
    )
    return True


# -- the asking side -----------------------------------------------------------------
class BrokerUnavailable(Exception):
    """Kafka did not take the message: not connected, or Kafka refused it (it is not stored)."""


class NotAcknowledged(BrokerUnavailable):
    """Kafka did not acknowledge the message in time, or failed in a way that leaves it open.

    The message may have been stored (or may still be: the producer keeps retrying a batch it
    has sent until the broker answers). Only a resend makes sure; duplicates are the
    consumers' business (idempotent by webhook id / Order), so a resend is always safe.
    """


class MessageRejected(Exception):
    """Kafka refused this message for what it is (e.g. larger than the topic allows): retrying cannot help."""


class ReplyTimeout(Exception):
    """The request was published but no reply arrived before the deadline."""


@dataclass(frozen=True, slots=True)
class Reply:
    """A reply: its headers (decoded) and its raw value bytes."""

    headers: dict[str, str]
    value: bytes


class RequestReplyClient:
    """Publishes requests and awaits their replies from a shared reply topic.

    Args:
        bootstrap_servers: Kafka bootstrap servers, comma-separated.
        reply_topic: the topic replies come back on (every replica reads all of it).
        client_id: Kafka client id of this process.
        connect_backoff_max: longest pause, in seconds, between attempts to connect (also
            between restarts of the reply reader and attempts to replace a broken producer).
        prepare: awaited before each connection attempt (e.g. create missing topics), so a
            broker that comes up after this process is set up too.
        client_options: more aiokafka keyword arguments, e.g. security
            (``BaseServiceSettings.kafka_client_options()``).
        producer_options: aiokafka keyword arguments for the producer only (e.g. ``request_timeout_ms``).
        restart_backoff: first pause, in seconds, before restarting a reply reader that ended
            (doubling, jittered, up to ``connect_backoff_max``).
        app_name: the ``app_name`` label of ``instore_published_messages_total`` and
            ``instore_published_messages_duration_seconds`` (the families FastStream's middleware
            writes in the other services).

    Every publish is a ``<topic> publish`` PRODUCER span (when tracing is on) whose context goes
    into the message's ``traceparent`` header, so the consumer's span continues the trace.

    Usage: ``await client.start()`` (returns at once; connects in the background, see
    :meth:`ready`), ``await client.request(...)``, ``await client.stop()``.

    Self-healing: the reply reader runs under a supervisor that logs its end and restarts it
    with backoff (:meth:`ready` is false meanwhile); a producer that hit a fatal error
    (:mod:`instore_shared.kafka.producer_health`) is replaced by a new one in the background
    (:meth:`ready` false, publishes refused as not stored meanwhile).
    """

    def __init__(
        self,
        bootstrap_servers: str,
        reply_topic: str,
        client_id: str,
        connect_backoff_max: float = 5.0,
        prepare: Callable[[], Awaitable[object]] | None = None,
        client_options: Mapping[str, Any] | None = None,
        producer_options: Mapping[str, Any] | None = None,
        restart_backoff: float = 0.5,
        app_name: str = "gateway",
    ) -> None:
        self._app_name = app_name
        self._options = dict(client_options or {})
        self._producer_options = dict(producer_options or {})
        self._prepare = prepare
        self._bootstrap = bootstrap_servers
        self._reply_topic = reply_topic
        self._client_id = client_id
        self._backoff_max = connect_backoff_max
        self._restart_backoff = restart_backoff
        self._producer: AIOKafkaProducer | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._pending: dict[str, asyncio.Future[Reply]] = {}
        self._connected = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False
        self._reader_running = False
        self._replacing: asyncio.Task[None] | None = None
        self._positions: dict[TopicPartition, int] = {}
        self.producers_replaced = 0
        """How many times a broken producer was replaced (for tests and metrics)."""
        self.reader_restarts = 0
        """How many times the reply reader was restarted after it ended."""

    # -- lifecycle -------------------------------------------------------------------
    async def start(self) -> None:
        """Start connecting in the background; never raises for an unreachable broker."""
        self._stopping = False
        self._tasks.append(asyncio.create_task(self._connect_loop(), name="rpc-connect"))

    async def wait_connected(self, timeout_s: float) -> bool:
        """Wait up to ``timeout_s`` seconds for the connection; true when connected."""
        try:
            await asyncio.wait_for(self._connected.wait(), timeout_s)
        except TimeoutError:
            return False
        return True

    @property
    def connected(self) -> bool:
        """True once producer and reply consumer are connected and positioned."""
        return self._connected.is_set()

    def unready_reason(self) -> str | None:
        """Why a request could not succeed now (not connected, no reply reader, producer
        being replaced), else None. Does not ask Kafka (see :meth:`ready`); a producer found
        dead here is put up for replacement."""
        if not self._connected.is_set() or self._producer is None:
            return "not connected to Kafka"
        if not self._reader_running:
            return "the reply reader is not running"
        if self._replacing is not None:
            return "the Kafka producer failed and is being replaced"
        dead = producer_health.dead_reason(self._producer)
        if dead is not None:
            self._producer_failed(self._producer, KafkaError(dead))
            return f"the Kafka producer failed ({dead}) and is being replaced"
        return None

    async def ready(self, timeout_s: float = 1.0) -> bool:
        """True when a request could succeed now: connected, reply reader running, producer
        healthy, and a metadata request succeeds in ``timeout_s`` s."""
        if self.unready_reason() is not None or self._producer is None:
            return False
        try:
            await asyncio.wait_for(self._producer.client.fetch_all_metadata(), timeout_s)
        except (TimeoutError, KafkaError, OSError):
            return False
        return True

    async def stop(self) -> None:
        """Fail every pending request with :class:`BrokerUnavailable` and close the clients."""
        self._stopping = True
        tasks = [*self._tasks, *([self._replacing] if self._replacing else [])]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.clear()
        self._replacing = None
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(BrokerUnavailable("shutting down"))
        self._connected.clear()
        self._reader_running = False
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None

    async def _connect_loop(self) -> None:
        delay = 0.2
        while not self._stopping:
            try:
                await self._connect()
                log.info("kafka.connected", bootstrap_servers=self._bootstrap, reply_topic=self._reply_topic)
                return
            except (KafkaError, OSError, RuntimeError, TimeoutError) as exc:
                log.warning("kafka.connect_failed", error=type(exc).__name__, retry_in_s=round(delay, 2))
                await self._close_quietly()
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._backoff_max)

    def _new_producer(self) -> AIOKafkaProducer:
        return AIOKafkaProducer(
            bootstrap_servers=self._bootstrap,
            client_id=f"{self._client_id}-producer",
            acks="all",
            enable_idempotence=True,
            linger_ms=0,
            **{**self._options, **self._producer_options},
        )

    async def _connect(self) -> None:
        if self._prepare is not None:
            await self._prepare()
        producer = self._new_producer()
        self._producer = producer
        async with asyncio.timeout(producer_health.START_TIMEOUT_SECONDS):
            await producer.start()
        self._consumer = await self._start_reader_consumer()
        self._tasks.append(asyncio.create_task(self._supervise_reader(), name="rpc-replies"))
        self._connected.set()

    async def _start_reader_consumer(self) -> AIOKafkaConsumer:
        """A started group-less consumer assigned every reply partition, positioned where the
        last reader stopped (replies that came meanwhile are read), else at the end."""
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self._bootstrap,
            client_id=f"{self._client_id}-replies",
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="latest",
            fetch_max_wait_ms=100,
            **self._options,
        )
        try:
            await consumer.start()
            partitions = await self._reply_partitions(consumer)
            tps = [TopicPartition(self._reply_topic, p) for p in sorted(partitions)]
            consumer.assign(tps)
            await consumer.seek_to_end(*tps)
            for tp in tps:
                if tp in self._positions:
                    consumer.seek(tp, self._positions[tp])
                # resolve the positions now: a reply published after this is seen
                self._positions[tp] = await consumer.position(tp)
        except BaseException:
            await _stop_quietly(consumer)
            raise
        return consumer

    async def _supervise_reader(self) -> None:
        """Run the reply reader; whenever it ends — an exception, its partitions changed, a
        cancellation that was not :meth:`stop` — log it and start a new one after a jittered,
        doubling, capped pause. :meth:`ready` is false while no reader runs."""
        delay = self._restart_backoff
        while not self._stopping:
            consumer = self._consumer
            if consumer is None:
                try:
                    consumer = self._consumer = await self._start_reader_consumer()
                except (KafkaError, OSError, RuntimeError, TimeoutError) as exc:
                    pause = random.uniform(delay / 2, delay)
                    log.warning("kafka.reply_reader_start_failed", error=type(exc).__name__, retry_in_s=round(pause, 2))
                    await asyncio.sleep(pause)
                    delay = min(delay * 2, self._backoff_max)
                    continue
                self.reader_restarts += 1
                log.info("kafka.reply_reader_restarted", restarts=self.reader_restarts)
            reader = asyncio.create_task(self._read_replies(consumer), name="rpc-reply-reader")
            self._reader_running = True
            started = time.monotonic()
            try:
                await asyncio.wait([reader])
            finally:
                self._reader_running = False
                if not reader.done():  # the supervisor itself is cancelled (stop)
                    reader.cancel()
                    await asyncio.gather(reader, return_exceptions=True)
            if self._stopping:
                return
            error = "cancelled" if reader.cancelled() else type(reader.exception()).__name__ if reader.exception() else "returned"
            if time.monotonic() - started > 60:
                delay = self._restart_backoff  # it had run well: start over from the shortest pause
            pause = random.uniform(delay / 2, delay)
            log.error(
                "kafka.reply_reader_stopped",
                error=error,
                detail=str(reader.exception())[:200] if not reader.cancelled() and reader.exception() else None,
                restart_in_s=round(pause, 2),
            )
            self._consumer = None
            await _stop_quietly(consumer)
            await asyncio.sleep(pause)
            delay = min(delay * 2, self._backoff_max)

    async def _reply_partitions(self, consumer: AIOKafkaConsumer) -> set[int]:
        deadline = time.monotonic() + 10
        while True:
            await consumer._client.force_metadata_update()
            partitions = consumer.partitions_for_topic(self._reply_topic)
            if partitions:
                return set(partitions)
            if time.monotonic() > deadline:
                raise RuntimeError(f"reply topic {self._reply_topic!r} does not exist")
            await asyncio.sleep(0.2)

    async def _close_quietly(self) -> None:
        for client in (self._consumer, self._producer):
            if client is not None:
                await _stop_quietly(client)
        self._consumer = None
        self._producer = None

    async def _read_replies(self, consumer: AIOKafkaConsumer) -> None:
        assigned = consumer.assignment()
        while True:
            batches = await consumer.getmany(timeout_ms=1000)
            for tp, records in batches.items():
                for record in records:
                    headers = h.decode_headers(record.headers)
                    fut = self._pending.get(headers.get(h.CORRELATION_ID, ""))
                    if fut is not None and not fut.done():
                        fut.set_result(Reply(headers=headers, value=record.value or b""))
                    self._positions[tp] = record.offset + 1
            partitions = consumer.partitions_for_topic(self._reply_topic)
            if consumer.assignment() != assigned or (partitions is not None and len(partitions) != len(assigned)):
                raise RuntimeError(f"the partitions of {self._reply_topic} changed")

    # -- the producer ----------------------------------------------------------------
    def _producer_failed(self, producer: AIOKafkaProducer, exc: BaseException) -> None:
        """``producer`` hit a fatal error: replace it in the background (once)."""
        if self._stopping or producer is not self._producer or self._replacing is not None:
            return
        log.error("kafka.producer_failed", error=type(exc).__name__, action="replacing the producer")
        self._replacing = asyncio.create_task(self._replace_producer(producer), name="rpc-replace-producer")

    async def _replace_producer(self, old: AIOKafkaProducer) -> None:
        delay = 0.2
        while not self._stopping:
            new = self._new_producer()
            try:
                async with asyncio.timeout(producer_health.START_TIMEOUT_SECONDS):
                    await new.start()
            except (KafkaError, OSError, TimeoutError) as exc:
                await _stop_quietly(new)
                pause = random.uniform(delay / 2, delay)
                # the first failure is worth a line; the broker's state is logged by kafka.reconnect
                (log.warning if delay == 0.2 else log.debug)(
                    "kafka.producer_replace_failed", error=type(exc).__name__, retry_in_s=round(pause, 2)
                )
                await asyncio.sleep(pause)
                delay = min(delay * 2, self._backoff_max)
                continue
            self._producer = new
            self._replacing = None
            self.producers_replaced += 1
            log.info("kafka.producer_replaced", replaced=self.producers_replaced)
            await producer_health.retire(old)
            return

    async def _send(self, topic: str, key: bytes | None, value: bytes, headers: Mapping[str, str], limit_s: float) -> None:
        """Publish and wait for Kafka's acknowledgement, at most ``limit_s`` s, in a PRODUCER span
        whose context is written into the headers; counted in ``instore_published_messages_*``.

        Raises :class:`MessageRejected` (too large), :class:`NotAcknowledged` (timed out, or
        failed in a way that may have stored it), :class:`BrokerUnavailable` (not stored).
        """
        started = time.perf_counter()
        status = "error"
        # No span, no header copy when tracing is off (the no-op span still cost ~3 % of a webhook's CPU).
        span = (
            telemetry.tracer().start_as_current_span(
                f"{topic} publish",
                kind=SpanKind.PRODUCER,
                attributes={"messaging.system": "kafka", "messaging.destination.name": topic, "messaging.operation": "publish"},
            )
            if telemetry.active()
            else contextlib.nullcontext()
        )
        with span:
            if telemetry.active():
                headers = dict(headers)
                telemetry.inject(headers)
            try:
                await self._send_now(topic, key, value, headers, limit_s)
                status = "success"
            finally:
                metrics.published(self._app_name, topic, status, time.perf_counter() - started)

    async def _send_now(self, topic: str, key: bytes | None, value: bytes, headers: Mapping[str, str], limit_s: float) -> None:
        producer = self._producer
        if not self._connected.is_set() or producer is None:
            raise BrokerUnavailable("not connected to Kafka")
        if self._replacing is not None:
            raise BrokerUnavailable("the Kafka producer failed and is being replaced")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + limit_s
        # asyncio.timeout, not wait_for: wait_for wraps the coroutine in a task of its own (measurable per webhook)
        try:  # enqueue: until this returns, nothing was handed to Kafka
            async with asyncio.timeout_at(deadline):
                delivery = await producer.send(topic, value, key=key, headers=h.encode_headers(headers))
        except MessageSizeTooLargeError as exc:
            raise MessageRejected(f"{topic}: message of {len(value)} bytes is too large") from exc
        except (TimeoutError, KafkaError) as exc:
            if (dead := producer_health.dead_reason(producer)) is not None:  # e.g. its sender task ended
                self._producer_failed(producer, KafkaError(dead))
            raise BrokerUnavailable(f"publish to {topic} failed: {type(exc).__name__}") from exc
        producer_health.watch(delivery, lambda exc: self._producer_failed(producer, exc))
        try:  # shielded: on a timeout the producer keeps delivering the batch
            async with asyncio.timeout_at(deadline):
                await asyncio.shield(delivery)
        except TimeoutError as exc:
            raise NotAcknowledged(f"publish to {topic} not acknowledged within {limit_s} s") from exc
        except MessageSizeTooLargeError as exc:
            raise MessageRejected(f"{topic}: message of {len(value)} bytes is too large") from exc
        except producer_health.REFUSED as exc:
            raise BrokerUnavailable(f"publish to {topic} refused: {type(exc).__name__}") from exc
        except KafkaError as exc:
            raise NotAcknowledged(f"publish to {topic} failed: {type(exc).__name__}") from exc

    # -- requests --------------------------------------------------------------------
    async def request(
        self,
        topic: str,
        key: str,
        value: bytes,
        *,
        timeout_s: float,
        message_type: str,
        correlation_id: str | None = None,
    ) -> Reply:
        """Publish ``value`` to ``topic`` keyed by ``key`` and wait for its reply.

        Args:
            topic: the request topic.
            key: the Kafka message key (decides the partition).
            value: the request body (JSON bytes).
            timeout_s: seconds to wait in all, publish included.
            message_type: written to the ``message-type`` header.
            correlation_id: ties the reply to the request; a UUID4 when omitted.

        Raises:
            BrokerUnavailable: not connected, no reply reader, or Kafka did not acknowledge
                the publish in time (:class:`NotAcknowledged`, a subclass).
            ReplyTimeout: published, but no reply within ``timeout_s``.
        """
        if self._connected.is_set() and not self._reader_running:
            raise BrokerUnavailable("the reply reader is not running")
        cid = correlation_id or str(uuid.uuid4())
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        fut: asyncio.Future[Reply] = loop.create_future()
        self._pending[cid] = fut
        try:
            headers = {
                h.CORRELATION_ID: cid,
                h.REPLY_TO: self._reply_topic,
                h.CONTENT_TYPE: h.JSON,
                h.MESSAGE_TYPE: message_type,
                h.DEADLINE: str(int((time.time() + timeout_s) * 1000)),
            }
            await self._send(topic, key.encode(), value, headers, timeout_s)
            try:
                return await asyncio.wait_for(fut, max(0.0, deadline - loop.time()))
            except TimeoutError as exc:
                raise ReplyTimeout(f"no reply on {self._reply_topic} within {timeout_s} s") from exc
        finally:
            self._pending.pop(cid, None)

    async def publish(
        self,
        topic: str,
        key: str | None,
        value: bytes,
        *,
        message_type: str,
        timeout_s: float,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        """Publish one message (acks=all, idempotent) on this client's connection; returns once Kafka acknowledged it.

        ``key`` None lets the producer pick the partition; ``headers`` are added to
        ``content-type`` (JSON) and ``message-type``. Raises :class:`MessageRejected` when
        the message is too large for Kafka; :class:`NotAcknowledged` when Kafka did not
        acknowledge it within ``timeout_s`` s (or failed so that it may be stored: resend);
        :class:`BrokerUnavailable` when it is certainly not stored (not connected, producer
        being replaced, refused).
        """
        all_headers = {h.CONTENT_TYPE: h.JSON, h.MESSAGE_TYPE: message_type, **(headers or {})}
        await self._send(topic, key.encode() if key is not None else None, value, all_headers, timeout_s)

    @property
    def pending(self) -> int:
        """Requests waiting for a reply now."""
        return len(self._pending)


async def _stop_quietly(client: AIOKafkaConsumer | AIOKafkaProducer, grace: float = 10.0) -> None:
    """Stop ``client``, ignoring its errors and giving up after ``grace`` s (its broker may be gone)."""
    with contextlib.suppress(Exception):
        await asyncio.wait_for(client.stop(), grace)
