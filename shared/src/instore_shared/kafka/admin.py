"""Create the project's topics when they are missing (idempotent)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from instore_shared.kafka.topics import Topic
from instore_shared.logging import get_logger

log = get_logger(__name__)


async def ensure_topics(
    bootstrap_servers: str,
    topics: Iterable[Topic],
    partitions: int,
    replication_factor: int,
    timeout_s: float = 30.0,
    client_options: Mapping[str, Any] | None = None,
) -> list[str]:
    """Create each topic of ``topics`` that does not exist yet; return the names created.

    Retries the connection until ``timeout_s`` seconds have passed (Kafka may still be
    starting). ``client_options`` are more aiokafka keyword arguments (security). Raises
    :class:`TimeoutError` when Kafka never answered.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    delay = 0.2
    while True:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers, client_id="instore-admin", **dict(client_options or {}))
        try:
            await admin.start()
            existing = set(await admin.list_topics())
            wanted = [t for t in topics if t.name not in existing]
            created: list[str] = []
            for topic in wanted:
                config = {"cleanup.policy": "compact"} if topic.compacted else {}
                try:
                    await admin.create_topics([NewTopic(topic.name, partitions, replication_factor, topic_configs=config)])
                    created.append(topic.name)
                except TopicAlreadyExistsError:
                    pass  # another process created it meanwhile
            if created:
                log.info("kafka.topics_created", topics=created)
            return created
        except (OSError, Exception) as exc:
            if loop.time() + delay > deadline:
                raise TimeoutError(f"Kafka at {bootstrap_servers} did not answer: {exc!r}") from exc
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)
        finally:
            await admin.close()
