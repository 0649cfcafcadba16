"""``make events`` (``instore-integration events``): prints a topic's messages, one line each, without committing anything."""

from __future__ import annotations

import uuid

import pytest
from aiokafka import AIOKafkaProducer

from instore_shared.kafka.admin import ensure_topics
from instore_shared.kafka.events import show
from instore_shared.kafka.topics import Topic
from tests.support.processes import Kafka

pytestmark = pytest.mark.integration


async def test_events_prints_every_message_of_a_topic(kafka: Kafka, capsys: pytest.CaptureFixture[str]) -> None:
    topic = Topic(name=f"test.events-cli.{uuid.uuid4().hex[:8]}.v1", key="k", schema="s", description="d")
    await ensure_topics(kafka.bootstrap_servers, (topic,), 2, 1)
    capsys.readouterr()  # the log line of the topic creation
    producer = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap_servers)
    await producer.start()
    try:
        await producer.send_and_wait(topic.name, b'{"n":1}', key=b"order-1")
        await producer.send_and_wait(topic.name, b'{"n":2}', key=b"order-2")
    finally:
        await producer.stop()
    assert await show(kafka.bootstrap_servers, topic.name, 1.0, {}) == 2
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("p")]
    assert sorted(line.split(" ", 2)[2] for line in lines) == ['key=order-1 {"n":1}', 'key=order-2 {"n":2}']
    seen: list[int] = []
    assert await show(kafka.bootstrap_servers, topic.name, 5.0, {}, on_message=lambda: seen.append(1), max_messages=1) == 1
    assert seen == [1]
    with pytest.raises(LookupError):
        await show(kafka.bootstrap_servers, "no.such.topic.v1", 0.5, {})
