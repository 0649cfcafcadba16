"""The event publisher port of the consumers' service functions, and its Kafka adapter."""

from __future__ import annotations

import time
from typing import Any, Protocol

from aiokafka import AIOKafkaConsumer, TopicPartition
from faststream.kafka import KafkaBroker

from instore_shared.kafka.consumer import publish_event


class PublishFailed(Exception):
    """Kafka did not take the event (broker down, timeout…): the message must not be committed,
    so it comes again. Raised by :class:`KafkaEventPublisher` with the Kafka error as ``__cause__``."""


class EventPublisher(Protocol):
    """Publishes one downstream event and returns once Kafka acknowledged it."""

    async def publish(self, body: bytes, topic: str, *, key: bytes, correlation_id: str | None, headers: dict[str, str]) -> None:
        """Publish ``body`` to ``topic`` under ``key``.

        Raises :class:`~instore_shared.kafka.consumer.Unprocessable` (``event-too-large``) for an
        event Kafka can never take, :class:`PublishFailed` for any other failure.
        """
        ...

    async def published_since(self, topic: str, event_id: str, since: float) -> bool:
        """True when ``topic`` holds an event whose ``event-id`` header is ``event_id``, written at or
        after ``since`` (epoch seconds). Raises :class:`PublishFailed` when Kafka could not be read."""
        ...


class KafkaEventPublisher:
    """:class:`EventPublisher` on the service's FastStream broker (acks as the broker is configured:
    ``acks=all``, idempotent producer)."""

    def __init__(
        self,
        broker: KafkaBroker,
        bootstrap_servers: str = "",
        client_options: dict[str, Any] | None = None,
        read_timeout_s: float = 30.0,
    ) -> None:
        self._broker = broker
        self._bootstrap = bootstrap_servers
        self._options = client_options or {}
        self._read_timeout_s = read_timeout_s

    async def publish(self, body: bytes, topic: str, *, key: bytes, correlation_id: str | None, headers: dict[str, str]) -> None:
        """See :meth:`EventPublisher.publish`."""
        from instore_shared.kafka.consumer import Unprocessable

        try:
            await publish_event(self._broker, body, topic, key=key, correlation_id=correlation_id, headers=headers)
        except Unprocessable:
            raise
        except Exception as exc:
            raise PublishFailed(f"{topic}: {type(exc).__name__}: {exc}") from exc

    async def published_since(self, topic: str, event_id: str, since: float) -> bool:
        """See :meth:`EventPublisher.published_since`: every partition of ``topic`` is read from the first
        offset at ``since`` minus :data:`CLOCK_SKEW_SECONDS` to its end, by a consumer without a group
        (asked only after a crash between publishing and marking, so the cost is rare)."""
        consumer = AIOKafkaConsumer(bootstrap_servers=self._bootstrap, enable_auto_commit=False, **self._options)
        wanted = event_id.encode()
        try:
            await consumer.start()
            deadline = time.monotonic() + self._read_timeout_s
            # A consumer without a group learns a topic's partitions only through its client's metadata
            # (aiokafka's public topics() returns names and leaves the consumer's cluster view as it was).
            cluster = await consumer._client.fetch_all_metadata()
            partitions = cluster.partitions_for_topic(topic) or set()
            tps = [TopicPartition(topic, p) for p in sorted(partitions)]
            if not tps:
                return False
            consumer.assign(tps)
            starts = await consumer.offsets_for_times({tp: int((since - CLOCK_SKEW_SECONDS) * 1000) for tp in tps})
            ends = await consumer.end_offsets(tps)
            left = {}
            for tp in tps:
                start = starts.get(tp)
                if start is not None and start.offset < ends[tp]:
                    consumer.seek(tp, start.offset)
                    left[tp] = ends[tp]
            while left:
                if time.monotonic() > deadline:
                    raise PublishFailed(f"{topic}: could not read back to look for event {event_id} in time")
                batch = await consumer.getmany(*left, timeout_ms=500)
                for tp, records in batch.items():
                    for record in records:
                        if any(name == "event-id" and value == wanted for name, value in record.headers or ()):
                            return True
                        if record.offset + 1 >= left.get(tp, 0):
                            left.pop(tp, None)
            return False
        except PublishFailed:
            raise
        except Exception as exc:
            raise PublishFailed(f"{topic}: reading back failed: {type(exc).__name__}: {exc}") from exc
        finally:
            await consumer.stop()


CLOCK_SKEW_SECONDS = 60.0
"""Margin for clocks: an event is looked for from this long before the claim's time."""
