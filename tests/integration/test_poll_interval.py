"""With real Kafka: a Composable Commerce outage longer than a (deliberately small) poll interval
does not get the consumer evicted mid-work nor the webhook processed twice — the handler's one
deadline ends it (dead letter) within the ``max.poll.interval.ms`` derived from its budget.

Time is scaled down: budget 3 s, grace 1 s, margin 1.5 s → ``max.poll.interval.ms`` 5.5 s.
The outage first hits the cart reads (2.9 s), then the announcement marker (for good). A
handler that spent a fresh budget per step would run ≈ 6 s, past the interval: Kafka would
evict the member, the group's other member (two consumers: concurrency 2) would take the
partition over and process the webhook a second time while the first still works on it.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections import Counter
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

import instore_order_finalization.app as app_module
from instore_order_finalization.settings import OrderFinalizationSettings
from instore_shared.commercetools.errors import TransientError
from instore_shared.kafka import consumer as consumer_module
from instore_shared.kafka.admin import ensure_topics
from instore_shared.kafka.topics import ALL_TOPICS, WEBHOOKS, WEBHOOKS_DLQ
from tests.fakes.commerce import InMemoryCommerce
from tests.support.processes import Kafka
from tests.unit.test_order_finalization import _payment, _world

pytestmark = pytest.mark.integration

BUDGET, GRACE, MARGIN = 3.0, 1.0, 1.5
DOWN = TransientError(503, "ServiceUnavailable", "down")


class Outage(InMemoryCommerce):
    """Cart reads fail for the first 2.9 s after the first call; the markers fail throughout."""

    def __init__(self) -> None:
        super().__init__()
        self.first_call: float | None = None

    def _elapsed(self) -> float:
        self.first_call = self.first_call or time.monotonic()
        return time.monotonic() - self.first_call

    async def find_cart(self, ref: str, expand: tuple[str, ...] = ()) -> Any:
        if ref == "sale-1" and self._elapsed() < 2.9:
            raise DOWN
        return await super().find_cart(ref, expand)

    async def put_custom_object(self, container: str, key: str, value: Any, version: int | None = None) -> Any:
        raise DOWN


async def _skip_to_end(bootstrap: str, group: str) -> None:
    """Commit ``group``'s offsets at the end of the webhook topic (earlier tests' webhooks are not ours)."""
    c = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    await c.start()
    try:
        await c.topics()  # load the metadata of every topic
        tps = [TopicPartition(WEBHOOKS.name, p) for p in c.partitions_for_topic(WEBHOOKS.name) or set()]
        if not tps:
            return  # the topic was created just now: nothing earlier to skip
        c.assign(tps)
        await c.seek_to_end(*tps)
        await c.commit({tp: await c.position(tp) for tp in tps})
    finally:
        await c.stop()


async def _committed(bootstrap: str, group: str, partition: int) -> int:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(group)
    finally:
        await admin.close()
    meta = offsets.get(TopicPartition(WEBHOOKS.name, partition))
    return meta.offset if meta else -1


async def _dead_letters(bootstrap: str, webhook_id: str) -> int:
    c = AIOKafkaConsumer(WEBHOOKS_DLQ.name, bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="earliest")
    await c.start()
    found = 0
    try:
        while batches := await c.getmany(timeout_ms=1000):
            found += sum(
                1 for records in batches.values() for r in records if dict(r.headers).get("webhook-id") == webhook_id.encode()
            )
    finally:
        await c.stop()
    return found


async def test_an_outage_past_the_poll_interval_is_one_processing_and_one_dead_letter(
    kafka: Kafka, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(consumer_module, "HANDLER_GRACE_SECONDS", GRACE)
    monkeypatch.setattr(consumer_module, "POLL_MARGIN_SECONDS", MARGIN)
    monkeypatch.setattr(consumer_module, "KAFKA_DEFAULT_POLL_SECONDS", 0.0)
    assert consumer_module.max_poll_interval_ms(BUDGET) == 5_500
    await ensure_topics(kafka.bootstrap_servers, ALL_TOPICS, 3, 1)
    group = f"poll-interval-{uuid.uuid4().hex[:8]}"
    await _skip_to_end(kafka.bootstrap_servers, group)

    commerce = Outage()
    paid = _world(payments=[_payment("p1", 3499)])
    commerce.carts, commerce.payments = paid.carts, paid.payments
    invocations: Counter[str] = Counter()
    real_handle = app_module.handle_payment_webhook

    async def counting(body: bytes, headers: Any, **kwargs: Any) -> Any:
        invocations[headers.get("webhook-id", "")] += 1
        return await real_handle(body, headers, **kwargs)

    monkeypatch.setattr(app_module, "handle_payment_webhook", counting)
    settings = OrderFinalizationSettings(
        kafka_bootstrap_servers=kafka.bootstrap_servers,
        order_finalization_consumer_group=group,
        order_finalization_concurrency=2,
        order_finalization_retry_seconds=BUDGET,
    )
    broker = app_module.create_broker(settings, commerce)
    webhook_id, sentinel_id = f"w-{uuid.uuid4().hex}", f"s-{uuid.uuid4().hex}"
    await broker.start()
    try:
        (subscriber,) = broker.subscribers
        assert subscriber._connection_args["max_poll_interval_ms"] == 5_500
        body = json.dumps({"id": webhook_id, "type": "payment.completed", "cartId": "sale-1"}).encode()
        sent = await broker.publish(body, WEBHOOKS.name, key=b"sale-1", headers={"webhook-id": webhook_id})
        # behind it on the same partition: a webhook of another kind (skipped at once)
        after = await broker.publish(
            json.dumps({"id": sentinel_id, "type": "other"}).encode(),
            WEBHOOKS.name,
            key=b"sale-1",
            headers={"webhook-id": sentinel_id},
        )
        assert sent.partition == after.partition
        deadline = time.monotonic() + 60
        while await _committed(kafka.bootstrap_servers, group, after.partition) < after.offset + 1:
            assert time.monotonic() < deadline, f"not committed past the sentinel; invocations {dict(invocations)}"
            await asyncio.sleep(0.2)  # polling a condition with a deadline
    finally:
        await broker.stop()
    assert invocations[webhook_id] == 1, dict(invocations)  # not evicted, not processed twice
    assert invocations[sentinel_id] == 1
    assert commerce.orders_created == 1
    assert await _dead_letters(kafka.bootstrap_servers, webhook_id) == 1
