"""SASL/SCRAM-SHA-512 against a real broker: our request/reply client, topic admin and FastStream subscriber."""

from __future__ import annotations

import copy
import uuid
from collections.abc import Iterator

import msgspec
import pytest

from instore_cart_mapping.app import create_broker
from instore_cart_mapping.settings import CartMappingSettings
from instore_gateway.lookups import KafkaCartLookups
from instore_shared.contract.cart_lookup import CartKind, LookupStatus
from instore_shared.kafka.admin import ensure_topics
from instore_shared.kafka.rpc import RequestReplyClient
from instore_shared.kafka.topics import ALL_TOPICS, CART_REPLIES
from tests.conftest import load_example
from tests.fakes.commerce import InMemoryCommerce
from tests.support.processes import Kafka, free_port, start_kafka

pytestmark = pytest.mark.integration

USER, PASSWORD = "instore-svc", "scram-password-" + uuid.uuid4().hex


@pytest.fixture(scope="module")
def scram_kafka(monkeypatch_module: pytest.MonkeyPatch) -> Iterator[Kafka]:
    """A broker whose only client listener is SASL_PLAINTEXT with SCRAM-SHA-512."""
    port, controller = free_port(), free_port()
    jaas = f'org.apache.kafka.common.security.scram.ScramLoginModule required username="{USER}" password="{PASSWORD}";'
    monkeypatch_module.setenv("KAFKA_FORMAT_ARGS", f"--add-scram 'SCRAM-SHA-512=[name={USER},password={PASSWORD}]'")
    monkeypatch_module.setenv(
        "KAFKA_EXTRA_PROPERTIES",
        "\n".join(
            [
                f"listeners=SASL_PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller}",
                f"advertised.listeners=SASL_PLAINTEXT://127.0.0.1:{port}",
                "listener.security.protocol.map=CONTROLLER:PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT",
                "inter.broker.listener.name=SASL_PLAINTEXT",
                "sasl.enabled.mechanisms=SCRAM-SHA-512",
                "sasl.mechanism.inter.broker.protocol=SCRAM-SHA-512",
                f"listener.name.sasl_plaintext.scram-sha-512.sasl.jaas.config={jaas}",
            ]
        ),
    )
    broker = start_kafka(port, controller)
    yield broker
    broker.stop()


@pytest.fixture(scope="module")
def monkeypatch_module() -> Iterator[pytest.MonkeyPatch]:
    with pytest.MonkeyPatch.context() as mp:
        yield mp


def _settings(kafka: Kafka, password: str = PASSWORD) -> CartMappingSettings:
    return CartMappingSettings(
        kafka_bootstrap_servers=kafka.bootstrap_servers,
        kafka_security_protocol="SASL_PLAINTEXT",
        kafka_sasl_mechanism="SCRAM-SHA-512",
        kafka_sasl_username=USER,
        kafka_sasl_password=password,
        cart_mapping_consumer_group=f"scram-{uuid.uuid4().hex[:6]}",
    )


async def test_lookup_round_trip_over_sasl_scram(scram_kafka: Kafka) -> None:
    settings = _settings(scram_kafka)
    options = settings.kafka_client_options()
    await ensure_topics(scram_kafka.bootstrap_servers, ALL_TOPICS, 1, 1, client_options=options)
    commerce = InMemoryCommerce()
    cart = copy.deepcopy(load_example("cart.example.json"))
    cart.update(key="scram-cart", lineItems=[{"id": "l", "quantity": 1}])
    commerce.add_cart(cart)
    broker = create_broker(settings, commerce)
    await broker.start()
    client = RequestReplyClient(scram_kafka.bootstrap_servers, CART_REPLIES.name, "scram-gw", client_options=options)
    await client.start()
    try:
        assert await client.wait_connected(30)
        reply = await KafkaCartLookups(client, timeout=10).lookup(CartKind.SALE, "scram-cart", str(uuid.uuid4()))
    finally:
        await client.stop()
        await broker.stop()
    assert reply.status is LookupStatus.FOUND
    assert msgspec.json.decode(reply.cart_json())["key"] == "scram-cart"  # type: ignore[arg-type]


async def test_wrong_password_never_connects(scram_kafka: Kafka) -> None:
    options = _settings(scram_kafka, password="wrong").kafka_client_options()
    client = RequestReplyClient(scram_kafka.bootstrap_servers, CART_REPLIES.name, "scram-bad", client_options=options)
    await client.start()
    try:
        assert not await client.wait_connected(3)
        assert not await client.ready()
    finally:
        await client.stop()
