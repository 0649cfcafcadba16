"""A producer whose start() never returns is given up on and a fresh one tried (seen in CI: issue 14).

aiokafka's start() waits for a producer id for ever once a bootstrap answer listed no broker
(a broker shutting down); without a bound the replacement never finished and the gateway
stayed not-ready after Kafka was back.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from instore_shared.kafka import producer_health
from instore_shared.kafka.rpc import RequestReplyClient


class FakeProducer:
    def __init__(self, hangs: bool) -> None:
        self.hangs = hangs
        self.started = False
        self.stopped = False

    async def start(self) -> None:
        if self.hangs:
            await asyncio.Event().wait()  # like aiokafka waiting for a producer id that never comes
        self.started = True

    async def stop(self) -> None:
        self.stopped = True


class Client(RequestReplyClient):
    def __init__(self, producers: list[FakeProducer]) -> None:
        super().__init__("127.0.0.1:1", "replies", "test", connect_backoff_max=0.05)
        self.made = producers

    def _new_producer(self) -> Any:
        return self.made.pop(0)


async def test_a_replacement_whose_start_hangs_is_given_up_and_a_fresh_one_used(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(producer_health, "START_TIMEOUT_SECONDS", 0.2)
    hanging, healthy, old = FakeProducer(hangs=True), FakeProducer(hangs=False), FakeProducer(hangs=False)
    client = Client([hanging, healthy])
    await asyncio.wait_for(client._replace_producer(old), 5)  # type: ignore[arg-type]
    assert hanging.stopped and not hanging.started
    assert client._producer is healthy and healthy.started  # type: ignore[comparison-overlap]
    assert client.producers_replaced == 1 and old.stopped
