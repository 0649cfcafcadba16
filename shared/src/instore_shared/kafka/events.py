"""Print the messages of a topic: ``instore-integration events --topic T`` (:mod:`instore_shared.cli`, ``make events``).

For looking at what the services published, e.g. ``commerce.payments.completed.v1``: one
line per message — partition, offset, key, the value as received (JSON on our topics). It
reads every partition from the beginning without a consumer group (nothing is committed,
nobody else's offsets move) and stops when no message came for ``--idle-timeout`` seconds.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition


async def show(
    bootstrap: str,
    topic: str,
    idle_timeout: float,
    client_options: dict[str, Any],
    *,
    on_message: Callable[[], None] | None = None,
    max_messages: int | None = None,
) -> int:
    """Print ``topic``'s messages until it is quiet for ``idle_timeout`` s (or ``max_messages`` were printed);
    returns how many were printed. ``on_message`` is called after each (progress).

    Raises ``LookupError`` when the topic does not exist.
    """
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False, **client_options)
    try:
        await consumer.start()
        partitions = consumer.partitions_for_topic(topic)
        if not partitions:
            await consumer._client.force_metadata_update()
            partitions = consumer.partitions_for_topic(topic)
        if not partitions:
            raise LookupError(f"topic {topic} does not exist")
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        printed, quiet_since = 0, time.monotonic()
        while time.monotonic() - quiet_since < idle_timeout:
            for records in (await consumer.getmany(timeout_ms=200)).values():
                for r in records:
                    if max_messages is not None and printed >= max_messages:
                        return printed
                    key = r.key.decode(errors="replace") if r.key else "-"
                    value = r.value.decode(errors="replace") if r.value else ""
                    print(f"p{r.partition} @{r.offset} key={key} {value}", flush=True)
                    printed += 1
                    quiet_since = time.monotonic()
                    if on_message is not None:
                        on_message()
            if max_messages is not None and printed >= max_messages:
                return printed
        return printed
    finally:
        await consumer.stop()
