"""Routing of the cart-mapping subscriber with FastStream's in-memory TestKafkaBroker."""

from __future__ import annotations

import copy
import time

from faststream.kafka import KafkaMessage, TestKafkaBroker

from instore_cart_mapping.app import _the_message, create_broker
from instore_cart_mapping.settings import CartMappingSettings
from instore_shared.contract import cart_lookup as c
from instore_shared.kafka import headers as h
from instore_shared.kafka.topics import CART_REPLIES, CART_REQUESTS
from tests.conftest import load_example
from tests.fakes.commerce import InMemoryCommerce


def _commerce() -> InMemoryCommerce:
    commerce = InMemoryCommerce()
    cart = copy.deepcopy(load_example("cart.example.json"))
    cart["key"] = "sale-1"
    cart["lineItems"] = [{"id": "l1", "quantity": 1, "variant": {"sku": "S"}}]
    commerce.add_cart(cart)
    return commerce


def _request(ref: str) -> bytes:
    return c.encode(c.CartLookupRequest(cart_ref=ref, kind=c.CartKind.SALE, requested_at="2026-11-30T00:00:00Z"))


async def test_request_is_answered_on_reply_to_with_the_correlation_id() -> None:
    broker = create_broker(CartMappingSettings(), _commerce())
    replies: list[tuple[str | None, bytes]] = []

    @broker.subscriber(CART_REPLIES.name, decoder=_the_message)
    async def collect(message: KafkaMessage) -> None:
        replies.append((message.correlation_id, message.body))

    async with TestKafkaBroker(broker) as br:
        await br.publish(
            _request("sale-1"),
            CART_REQUESTS.name,
            key=b"sale-1",
            correlation_id="cid-1",
            reply_to=CART_REPLIES.name,
            headers={h.DEADLINE: str(int(time.time() * 1000) + 5000)},
        )
    assert len(replies) == 1
    cid, body = replies[0]
    assert cid == "cid-1"
    assert c.decode_reply(body).status is c.LookupStatus.FOUND


async def test_expired_request_is_not_answered_and_bad_body_gets_a_reply() -> None:
    broker = create_broker(CartMappingSettings(), _commerce())
    replies: list[bytes] = []

    @broker.subscriber(CART_REPLIES.name, decoder=_the_message)
    async def collect(message: KafkaMessage) -> None:
        replies.append(message.body)

    async with TestKafkaBroker(broker) as br:
        await br.publish(
            _request("sale-1"),
            CART_REQUESTS.name,
            correlation_id="old",
            reply_to=CART_REPLIES.name,
            headers={h.DEADLINE: str(int(time.time() * 1000) - 1)},
        )
        assert replies == []
        await br.publish(b"{not json", CART_REQUESTS.name, correlation_id="bad", reply_to=CART_REPLIES.name)
    assert len(replies) == 1 and c.decode_reply(replies[0]).reason == "bad-request"


async def test_a_failing_lookup_is_answered_at_once_not_left_to_time_out() -> None:
    class Broken(InMemoryCommerce):
        async def find_cart(self, ref: str, expand: tuple[str, ...] = ()) -> object:
            raise RuntimeError("bug")

    broker = create_broker(CartMappingSettings(), Broken())
    replies: list[bytes] = []

    @broker.subscriber(CART_REPLIES.name, decoder=_the_message)
    async def collect(message: KafkaMessage) -> None:
        replies.append(message.body)

    async with TestKafkaBroker(broker) as br:
        await br.publish(_request("sale-1"), CART_REQUESTS.name, correlation_id="c", reply_to=CART_REPLIES.name)
    reply = c.decode_reply(replies[0])
    assert (reply.status, reply.reason) == (c.LookupStatus.UPSTREAM_ERROR, "lookup-failed")
    assert "bug" not in (reply.detail or "")
