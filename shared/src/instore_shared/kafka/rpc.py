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
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError, MessageSizeTooLargeError
from faststream.kafka import KafkaBroker, KafkaMessage

from instore_shared.kafka import headers as h
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
    await broker.publish(
        value,
        request.reply_to,
        key=request.raw_message.key or None,
        correlation_id=request.correlation_id,
        headers={h.MESSAGE_TYPE: message_type, h.CONTENT_TYPE: h.JSON},
    )
    return True


# -- the asking side -----------------------------------------------------------------
class BrokerUnavailable(Exception):
    """Kafka could not take the request (not connected, or the publish did not complete)."""


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
        connect_backoff_max: longest pause, in seconds, between attempts to connect.
        prepare: awaited before each connection attempt (e.g. create missing topics), so a
            broker that comes up after this process is set up too.
        client_options: more aiokafka keyword arguments, e.g. security
            (``BaseServiceSettings.kafka_client_options()``).

    Usage: ``await client.start()`` (returns at once; connects in the background, see
    :meth:`ready`), ``await client.request(...)``, ``await client.stop()``.
    """

    def __init__(
        self,
        bootstrap_servers: str,
        reply_topic: str,
        client_id: str,
        connect_backoff_max: float = 5.0,
        prepare: Callable[[], Awaitable[object]] | None = None,
        client_options: Mapping[str, Any] | None = None,
    ) -> None:
        self._options = dict(client_options or {})
        self._prepare = prepare
        self._bootstrap = bootstrap_servers
        self._reply_topic = reply_topic
        self._client_id = client_id
        self._backoff_max = connect_backoff_max
        self._producer: AIOKafkaProducer | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._pending: dict[str, asyncio.Future[Reply]] = {}
        self._connected = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False

    # -- lifecycle -------------------------------------------------------------------
    async def start(self) -> None:
        """Start connecting in the background; never raises for an unreachable broker."""
        self._stopping = False
        self._tasks.append(asyncio.create_task(self._connect_loop(), name="rpc-connect"))

    async def wait_connected(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for the connection; true when connected."""
        try:
            await asyncio.wait_for(self._connected.wait(), timeout)
        except TimeoutError:
            return False
        return True

    @property
    def connected(self) -> bool:
        """True once producer and reply consumer are connected and positioned."""
        return self._connected.is_set()

    async def ready(self, timeout: float = 1.0) -> bool:
        """True when Kafka answers now: connected, and a metadata request succeeds in ``timeout`` s."""
        if not self._connected.is_set() or self._producer is None:
            return False
        try:
            await asyncio.wait_for(self._producer.client.fetch_all_metadata(), timeout)
        except (TimeoutError, KafkaError, OSError):
            return False
        return True

    async def stop(self) -> None:
        """Fail every pending request with :class:`BrokerUnavailable` and close the clients."""
        self._stopping = True
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(BrokerUnavailable("shutting down"))
        self._connected.clear()
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

    async def _connect(self) -> None:
        if self._prepare is not None:
            await self._prepare()
        producer = AIOKafkaProducer(
            bootstrap_servers=self._bootstrap,
            client_id=f"{self._client_id}-producer",
            acks="all",
            enable_idempotence=True,
            linger_ms=0,
            **self._options,
        )
        self._producer = producer
        await producer.start()
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self._bootstrap,
            client_id=f"{self._client_id}-replies",
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="latest",
            fetch_max_wait_ms=100,
            **self._options,
        )
        self._consumer = consumer
        await consumer.start()
        partitions = await self._reply_partitions(consumer)
        tps = [TopicPartition(self._reply_topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_end(*tps)
        for tp in tps:  # resolve the positions now: a reply published after this is seen
            await consumer.position(tp)
        self._tasks.append(asyncio.create_task(self._read_replies(consumer), name="rpc-replies"))
        self._connected.set()

    async def _reply_partitions(self, consumer: AIOKafkaConsumer) -> set[int]:
        deadline = time.monotonic() + 10
        while True:
            await consumer._client.force_metadata_update()
            partitions = consumer.partitions_for_topic(self._reply_topic)
            if partitions:
                return partitions
            if time.monotonic() > deadline:
                raise RuntimeError(f"reply topic {self._reply_topic!r} does not exist")
            await asyncio.sleep(0.2)

    async def _close_quietly(self) -> None:
        for client in (self._consumer, self._producer):
            if client is not None:
                try:
                    await client.stop()
                except Exception:
                    pass
        self._consumer = None
        self._producer = None

    async def _read_replies(self, consumer: AIOKafkaConsumer) -> None:
        while True:
            batches = await consumer.getmany(timeout_ms=1000)
            for records in batches.values():
                for record in records:
                    headers = h.decode_headers(record.headers)
                    fut = self._pending.get(headers.get(h.CORRELATION_ID, ""))
                    if fut is not None and not fut.done():
                        fut.set_result(Reply(headers=headers, value=record.value or b""))

    # -- requests --------------------------------------------------------------------
    async def request(
        self,
        topic: str,
        key: str,
        value: bytes,
        *,
        timeout: float,
        message_type: str,
        correlation_id: str | None = None,
    ) -> Reply:
        """Publish ``value`` to ``topic`` keyed by ``key`` and wait for its reply.

        Args:
            topic: the request topic.
            key: the Kafka message key (decides the partition).
            value: the request body (JSON bytes).
            timeout: seconds to wait in all, publish included.
            message_type: written to the ``message-type`` header.
            correlation_id: ties the reply to the request; a UUID4 when omitted.

        Raises:
            BrokerUnavailable: not connected, or Kafka did not acknowledge the publish in time.
            ReplyTimeout: published, but no reply within ``timeout``.
        """
        if not self._connected.is_set() or self._producer is None:
            raise BrokerUnavailable("not connected to Kafka")
        cid = correlation_id or str(uuid.uuid4())
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        fut: asyncio.Future[Reply] = loop.create_future()
        self._pending[cid] = fut
        try:
            headers = {
                h.CORRELATION_ID: cid,
                h.REPLY_TO: self._reply_topic,
                h.CONTENT_TYPE: h.JSON,
                h.MESSAGE_TYPE: message_type,
                h.DEADLINE: str(int((time.time() + timeout) * 1000)),
            }
            try:
                await asyncio.wait_for(
                    self._producer.send_and_wait(
                        topic, value, key=key.encode(), headers=h.encode_headers(headers)
                    ),
                    timeout,
                )
            except (TimeoutError, KafkaError) as exc:
                raise BrokerUnavailable(f"publish to {topic} failed: {type(exc).__name__}") from exc
            try:
                return await asyncio.wait_for(fut, max(0.0, deadline - loop.time()))
            except TimeoutError as exc:
                raise ReplyTimeout(f"no reply on {self._reply_topic} within {timeout} s") from exc
        finally:
            self._pending.pop(cid, None)

    async def publish(
        self,
        topic: str,
        key: str | None,
        value: bytes,
        *,
        message_type: str,
        timeout: float,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        """Publish one message (acks=all, idempotent) on this client's connection; returns once Kafka acknowledged it.

        ``key`` None lets the producer pick the partition; ``headers`` are added to
        ``content-type`` (JSON) and ``message-type``. Raises :class:`BrokerUnavailable` when
        not connected or not acknowledged within ``timeout`` s, :class:`MessageRejected`
        when the message is too large for Kafka.
        """
        if not self._connected.is_set() or self._producer is None:
            raise BrokerUnavailable("not connected to Kafka")
        all_headers = {h.CONTENT_TYPE: h.JSON, h.MESSAGE_TYPE: message_type, **(headers or {})}
        try:
            await asyncio.wait_for(
                self._producer.send_and_wait(topic, value, key=key.encode() if key is not None else None,
                                             headers=h.encode_headers(all_headers)),
                timeout,
            )
        except MessageSizeTooLargeError as exc:
            raise MessageRejected(f"{topic}: message of {len(value)} bytes is too large") from exc
        except (TimeoutError, KafkaError) as exc:
            raise BrokerUnavailable(f"publish to {topic} failed: {type(exc).__name__}") from exc

    @property
    def pending(self) -> int:
        """Requests waiting for a reply now."""
        return len(self._pending)
