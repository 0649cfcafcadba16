"""The Kafka adapter of the consumers' event publisher against a real broker: an event it published
is found again by its eventId (what a resumed announcement claim looks for before publishing again)."""

from __future__ import annotations

import time
import uuid

from faststream.kafka import KafkaBroker

from instore_shared.kafka.admin import ensure_topics
from instore_shared.kafka.publisher import KafkaEventPublisher
from instore_shared.kafka.topics import Topic
from tests.support.processes import Kafka


async def test_a_published_event_is_found_by_its_event_id_and_another_is_not(kafka: Kafka) -> None:
    # A topic of its own: the broker may be shared with other tests that read the real event topics.
    events = Topic(name=f"test.events-{uuid.uuid4().hex[:8]}.v1", key="an order id", schema="-", description="test")
    await ensure_topics(kafka.bootstrap_servers, [events], 6, 1)
    broker = KafkaBroker(kafka.bootstrap_servers, acks="all", enable_idempotence=True)
    await broker.start()
    try:
        publisher = KafkaEventPublisher(broker, kafka.bootstrap_servers, {})
        since = time.time()
        ours, other = str(uuid.uuid4()), str(uuid.uuid4())
        assert not await publisher.published_since(events.name, ours, since)
        for n in range(20):  # the event among others, on whichever partitions their keys choose
            event_id = ours if n == 13 else str(uuid.uuid4())
            await publisher.publish(
                b"{}", events.name, key=f"order-{n}".encode(), correlation_id=None, headers={"event-id": event_id}
            )
        assert await publisher.published_since(events.name, ours, since)
        assert not await publisher.published_since(events.name, other, since)
    finally:
        await broker.stop()
