"""Routing the colleague's answers to prompts back to the payment that waits for them.

The gateway publishes each answer to ``instore.payment-prompt-answers.v1`` keyed by the
prompt's ``requestId``. A payment waits in whichever replica consumes its request, so every
replica reads **all partitions of the answers topic without a consumer group** (positioned at
the end at start) and keeps only the answers one of its payments waits for — the decision the
gateway made for cart replies (:mod:`instore_shared.kafka.rpc`), for the same reasons: no
coordination, any replica may come and go. An answer for a payment whose replica died is lost
with it; the redelivered request asks again (same prompt id) and the colleague answers again.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from typing import Any, Protocol

import msgspec
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from instore_shared.contract.payment_extensions import PromptAnswer
from instore_shared.kafka.topics import PAYMENT_PROMPT_ANSWERS
from instore_shared.logging import get_logger

log = get_logger(__name__)


class PromptAnswers(Protocol):
    """Where a payment waits for the colleague's answer (tests pass a fake)."""

    def expect(self, prompt_id: str) -> asyncio.Future[str]:
        """Register interest in ``prompt_id`` *before* the prompt is posted; the future gets the ``response``."""
        ...

    def forget(self, prompt_id: str) -> None:
        """Stop waiting for ``prompt_id``."""
        ...


class KafkaPromptAnswers:
    """Reads the answers topic (group-less, every partition, from the end) and resolves registered futures.

    ``topic``: the answers topic's name in this deployment (``KAFKA_TOPIC_PREFIX`` applied).
    """

    def __init__(
        self,
        bootstrap_servers: str,
        client_id: str,
        client_options: dict[str, Any] | None = None,
        *,
        topic: str = PAYMENT_PROMPT_ANSWERS.name,
    ) -> None:
        self._topic = topic
        self._bootstrap = bootstrap_servers
        self._client_id = client_id
        self._options = client_options or {}
        self._waiting: dict[str, asyncio.Future[str]] = {}
        self._task: asyncio.Task[None] | None = None
        self.running = False

    def expect(self, prompt_id: str) -> asyncio.Future[str]:
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._waiting[prompt_id] = future
        return future

    def forget(self, prompt_id: str) -> None:
        future = self._waiting.pop(prompt_id, None)
        if future is not None and not future.done():
            future.cancel()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._supervise(), name="prompt-answers-reader")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _supervise(self) -> None:
        delay = 0.5
        while True:
            consumer = AIOKafkaConsumer(
                bootstrap_servers=self._bootstrap,
                client_id=f"{self._client_id}-prompt-answers",
                group_id=None,
                enable_auto_commit=False,
                auto_offset_reset="latest",
                fetch_max_wait_ms=100,
                **self._options,
            )
            try:
                await consumer.start()
                partitions = await self._partitions(consumer)
                tps = [TopicPartition(self._topic, p) for p in sorted(partitions)]
                consumer.assign(tps)
                await consumer.seek_to_end(*tps)
                for tp in tps:
                    await consumer.position(tp)
                self.running, delay = True, 0.5
                await self._read(consumer)
            except asyncio.CancelledError:
                raise
            except (KafkaError, OSError, RuntimeError, TimeoutError) as exc:
                log.warning("payment_extension.prompt_reader_restart", error=type(exc).__name__)
            finally:
                self.running = False
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(consumer.stop(), 10)
            await asyncio.sleep(random.uniform(delay / 2, delay))
            delay = min(delay * 2, 10.0)

    async def _partitions(self, consumer: AIOKafkaConsumer) -> set[int]:
        for _ in range(50):
            await consumer._client.force_metadata_update()
            partitions = consumer.partitions_for_topic(self._topic)
            if partitions:
                return set(partitions)
            await asyncio.sleep(0.2)
        raise RuntimeError(f"topic {self._topic} does not exist")

    async def _read(self, consumer: AIOKafkaConsumer) -> None:
        while True:
            batches = await consumer.getmany(timeout_ms=1000)
            for records in batches.values():
                for record in records:
                    try:
                        answer = msgspec.json.decode(record.value or b"", type=PromptAnswer)
                    except (msgspec.DecodeError, msgspec.ValidationError):
                        continue
                    future = self._waiting.get(answer.requestId)
                    if future is not None and not future.done():
                        future.set_result(answer.response)
