"""The event publisher port of the consumers' service functions, and its Kafka adapter."""

from __future__ import annotations

from typing import Protocol

from faststream.kafka import KafkaBroker

from instore_shared.kafka.consumer import publish_event


class PublishFailed(Exception):
    """Kafka did not take the event (broker down, timeout…): the message must not be committed,
    so it comes again. Raised by :class:`KafkaEventPublisher` with the Kafka error as ``__cause__``."""


class EventPublisher(Protocol):
    """Publishes one downstream event and returns once Kafka acknowledged it."""

    async def publish(self, body: bytes, topic: str, *, key: bytes, correlation_id: str | None,
                      headers: dict[str, str]) -> None:
        """Publish ``body`` to ``topic`` under ``key``.

        Raises :class:`~instore_shared.kafka.consumer.Unprocessable` (``event-too-large``) for an
        event Kafka can never take, :class:`PublishFailed` for any other failure.
        """
        ...


class KafkaEventPublisher:
    """:class:`EventPublisher` on the service's FastStream broker (acks as the broker is configured:
    ``acks=all``, idempotent producer)."""

    def __init__(self, broker: KafkaBroker) -> None:
        self._broker = broker

    async def publish(self, body: bytes, topic: str, *, key: bytes, correlation_id: str | None,
                      headers: dict[str, str]) -> None:
        """See :meth:`EventPublisher.publish`."""
        from instore_shared.kafka.consumer import Unprocessable

        try:
            await publish_event(self._broker, body, topic, key=key, correlation_id=correlation_id, headers=headers)
        except Unprocessable:
            raise
        except Exception as exc:
            raise PublishFailed(f"{topic}: {type(exc).__name__}: {exc}") from exc
