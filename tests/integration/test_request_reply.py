"""Request/reply over a real Kafka broker: cart-mapping's subscriber and the gateway's client.

cart-mapping runs in-process here (its FastStream broker on real Kafka); the gateway side
is the :class:`RequestReplyClient`, several instances standing for several replicas.
"""

from __future__ import annotations

import asyncio
import copy
import time
import uuid
from collections.abc import AsyncIterator

import msgspec
import pytest

from instore_cart_mapping.app import create_broker
from instore_cart_mapping.settings import CartMappingSettings
from instore_gateway.lookups import KafkaCartLookups
from instore_shared.contract.cart_lookup import CartKind, LookupStatus
from instore_shared.kafka.admin import ensure_topics
from instore_shared.kafka.rpc import BrokerUnavailable, ReplyTimeout, RequestReplyClient
from instore_shared.kafka.topics import ALL_TOPICS, CART_REPLIES, Topic
from tests.conftest import load_example
from tests.fakes.commerce import InMemoryCommerce
from tests.support.processes import Kafka, free_port

pytestmark = pytest.mark.integration

CARTS = 20


def _commerce() -> InMemoryCommerce:
    commerce = InMemoryCommerce()
    for i in range(CARTS):
        cart = copy.deepcopy(load_example("cart.example.json"))
        cart["id"] = str(uuid.UUID(int=i + 1))
        cart["key"] = f"cart-{i}"
        cart["lineItems"] = [{"id": f"l{i}", "quantity": 1, "variant": {"sku": "S"}}]
        commerce.add_cart(cart)
    return commerce


@pytest.fixture(scope="module")
async def responder(kafka: Kafka) -> AsyncIterator[None]:
    """cart-mapping's subscriber, in-process, on the real broker, with an in-memory commerce."""
    settings = CartMappingSettings(
        kafka_bootstrap_servers=kafka.bootstrap_servers, cart_mapping_consumer_group=f"test-{uuid.uuid4()}"
    )
    await ensure_topics(kafka.bootstrap_servers, ALL_TOPICS, 3, 1)
    broker = create_broker(settings, _commerce())
    await broker.start()
    try:
        yield
    finally:
        await broker.stop()


async def _client(kafka: Kafka, name: str) -> RequestReplyClient:
    client = RequestReplyClient(kafka.bootstrap_servers, CART_REPLIES.name, name)
    await client.start()
    assert await client.wait_connected(30), "request/reply client did not connect"
    return client


async def test_lookup_round_trip(kafka: Kafka, responder: None) -> None:
    client = await _client(kafka, "test-gw")
    try:
        lookups = KafkaCartLookups(client, timeout=10)
        found = await lookups.lookup(CartKind.SALE, "cart-3", str(uuid.uuid4()))
        missing = await lookups.lookup(CartKind.SALE, "no-such-cart", str(uuid.uuid4()))
        assert await lookups.ready()
    finally:
        await client.stop()
    assert found.status is LookupStatus.FOUND
    assert msgspec.json.decode(found.cart_json())["key"] == "cart-3"  # type: ignore[arg-type]
    assert missing.status is LookupStatus.NOT_FOUND


async def test_two_replicas_each_get_their_own_replies(kafka: Kafka, responder: None) -> None:
    """Two gateway replicas share the reply topic; every request is answered to the one that asked."""
    a, b = await _client(kafka, "replica-a"), await _client(kafka, "replica-b")
    try:
        la, lb = KafkaCartLookups(a, timeout=15), KafkaCartLookups(b, timeout=15)

        async def ask(lookups: KafkaCartLookups, i: int) -> tuple[str, str]:
            ref = f"cart-{i % CARTS}"
            reply = await lookups.lookup(CartKind.SALE, ref, str(uuid.uuid4()))
            return ref, msgspec.json.decode(reply.cart_json())["key"]  # type: ignore[arg-type]

        results = await asyncio.gather(*(ask(la if i % 2 else lb, i) for i in range(100)))
        assert a.pending == 0 and b.pending == 0
    finally:
        await a.stop()
        await b.stop()
    assert all(asked == got for asked, got in results)
    assert len(results) == 100


async def test_no_responder_means_reply_timeout(kafka: Kafka) -> None:
    silent = Topic(name=f"test.silent.{uuid.uuid4().hex}", key="-", schema="-", description="nobody reads it")
    await ensure_topics(kafka.bootstrap_servers, [silent, CART_REPLIES], 1, 1)
    client = await _client(kafka, "test-timeout")
    try:
        started = time.monotonic()
        with pytest.raises(ReplyTimeout):
            await KafkaCartLookups(client, timeout=0.5, topic=silent.name).lookup(CartKind.SALE, "cart-1", "cid")
        elapsed = time.monotonic() - started
    finally:
        await client.stop()
    assert 0.5 <= elapsed < 3


async def test_unreachable_broker_is_reported_not_awaited() -> None:
    client = RequestReplyClient(f"127.0.0.1:{free_port()}", CART_REPLIES.name, "test-down")
    await client.start()
    try:
        assert not await client.wait_connected(0.5)
        assert not await client.ready()
        started = time.monotonic()
        with pytest.raises(BrokerUnavailable):
            await KafkaCartLookups(client, timeout=3).lookup(CartKind.SALE, "cart-1", "cid")
        assert time.monotonic() - started < 0.5
    finally:
        await client.stop()


async def test_gateway_client_connects_and_creates_topics_when_kafka_comes_later() -> None:
    """The gateway may start before Kafka: it keeps trying, then sets up the topics and serves."""
    from aiokafka.admin import AIOKafkaAdminClient

    from tests.support.processes import start_kafka

    port = free_port()
    bootstrap = f"127.0.0.1:{port}"

    async def create_topics() -> None:
        await ensure_topics(bootstrap, ALL_TOPICS, 1, 1, timeout_s=2)

    client = RequestReplyClient(bootstrap, CART_REPLIES.name, "late-kafka", connect_backoff_max=0.5, prepare=create_topics)
    await client.start()
    late = None
    try:
        assert not await client.wait_connected(1.0)
        late = await asyncio.to_thread(start_kafka, port)
        assert await client.wait_connected(60), "did not connect once Kafka was up"
        assert await client.ready()
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()
        try:
            assert {t.name for t in ALL_TOPICS} <= set(await admin.list_topics())
        finally:
            await admin.close()
    finally:
        await client.stop()
        if late is not None:
            late.stop()
