"""An event publisher for unit tests: records what was published; can be told to fail."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Published:
    """One published event."""

    body: bytes
    topic: str
    key: bytes
    correlation_id: str | None
    headers: dict[str, str]


class RecordingPublisher:
    """:class:`instore_shared.kafka.publisher.EventPublisher` that keeps the events in ``events``;
    ``fail_with`` is raised (instead of publishing) by the next ``fail_times`` calls; each call
    lets other tasks run ``yields`` times first (a slow broker acknowledgement)."""

    def __init__(self, yields: int = 1) -> None:
        self.yields = yields
        self.events: list[Published] = []
        self.fail_with: Exception | None = None
        self.fail_times = 0

    async def publish(self, body: bytes, topic: str, *, key: bytes, correlation_id: str | None, headers: dict[str, str]) -> None:
        for _ in range(self.yields):
            await asyncio.sleep(0)  # like a network call: other tasks run in between
        if self.fail_with is not None and self.fail_times > 0:
            self.fail_times -= 1
            raise self.fail_with
        self.events.append(Published(body, topic, key, correlation_id, dict(headers)))

    async def published_since(self, topic: str, event_id: str, since: float) -> bool:
        """True when an event with ``event_id`` was published to ``topic`` (the fake keeps no times)."""
        for _ in range(self.yields):
            await asyncio.sleep(0)
        return any(e.topic == topic and e.headers.get("event-id") == event_id for e in self.events)
