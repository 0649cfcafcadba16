"""KAFKA_TOPIC_PREFIX: what it may hold, what it prefixes (topics, dead-letter topics, default groups), what it leaves."""

from __future__ import annotations

import re

import pytest
from pydantic import ValidationError

from instore_cart_mapping.settings import CartMappingSettings
from instore_order_finalization.settings import OrderFinalizationSettings
from instore_payment_extension.settings import PaymentExtensionSettings
from instore_refund.settings import RefundSettings
from instore_shared.kafka.dlq import dlq_topic
from instore_shared.kafka.topics import (
    ALL_TOPICS,
    KAFKA_MAX_TOPIC_NAME,
    MAX_PREFIX_LENGTH,
    WEBHOOKS,
    WEBHOOKS_DLQ,
    TopicNames,
    check_prefix,
)
from instore_shared.settings import BaseServiceSettings

LEGAL = "abcXYZ019._-"


def test_the_prefix_goes_in_front_of_every_registry_name_and_nothing_else_changes() -> None:
    names = TopicNames("dev.")
    assert names.name(WEBHOOKS) == "dev.instore.webhooks.v1"
    assert [t.name for t in names.all()] == ["dev." + t.name for t in ALL_TOPICS]
    assert [(t.key, t.schema, t.description, t.compacted) for t in names.all()] == [
        (t.key, t.schema, t.description, t.compacted) for t in ALL_TOPICS
    ]
    assert names.topic(WEBHOOKS) == WEBHOOKS.named("dev.")
    assert WEBHOOKS.name == "instore.webhooks.v1"  # the registry itself never changes
    assert TopicNames().all() == ALL_TOPICS and TopicNames().name(WEBHOOKS) == WEBHOOKS.name
    # a prefixed topic's dead-letter topic is the prefixed dead-letter topic of the registry
    assert dlq_topic(names.name(WEBHOOKS)) == names.name(WEBHOOKS_DLQ)
    assert names.group("order-finalization") == "dev.order-finalization"


def test_registry_names_resolve_under_the_prefix_and_anything_else_is_refused_with_the_list() -> None:
    names = TopicNames("dev.")
    assert names.resolve("instore.webhooks.v1.dlq") == "dev.instore.webhooks.v1.dlq"
    with pytest.raises(LookupError, match=re.escape("commerce.payments.completed.v1")):
        names.resolve("instore.nothing.v1")
    # the deployment's own name (as metrics labels and alerts show it) means the same topic
    assert names.resolve("dev.instore.webhooks.v1") == "dev.instore.webhooks.v1"
    assert names.registry_topic("dev.instore.webhooks.v1.dlq").name == "instore.webhooks.v1.dlq"
    # another deployment's prefix is refused, naming this one's
    with pytest.raises(LookupError, match=re.escape("KAFKA_TOPIC_PREFIX is 'dev.'")):
        names.resolve("prod.instore.webhooks.v1")
    with pytest.raises(LookupError):
        TopicNames().resolve("dev.instore.webhooks.v1")


@pytest.mark.parametrize("prefix", ["", "dev.", "tenant-42_eu.", LEGAL, "x" * MAX_PREFIX_LENGTH])
def test_legal_prefixes(prefix: str) -> None:
    assert check_prefix(prefix) == prefix
    longest = max(len(n.name) + len(".dlq") for n in TopicNames(prefix).all() if not n.name.endswith(".dlq"))
    assert longest <= KAFKA_MAX_TOPIC_NAME


@pytest.mark.parametrize(
    ("prefix", "why"),
    [
        ("dev/", "may only hold"),
        ("dév.", "may only hold"),
        ("a b.", "may only hold"),
        ("dev:", "may only hold"),
        ("x" * (MAX_PREFIX_LENGTH + 1), f"at most {MAX_PREFIX_LENGTH} characters"),
    ],
)
def test_illegal_prefixes_are_refused_saying_why(prefix: str, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        TopicNames(prefix)
    with pytest.raises(ValidationError, match=why):
        BaseServiceSettings(kafka_topic_prefix=prefix)


def test_the_longest_prefix_still_fits_kafka_with_the_dead_letter_suffix() -> None:
    # Kafka's limit 249 minus the longest registry name with .dlq: commerce.payment-extension-results.v1.dlq (41)
    assert len("commerce.payment-extension-results.v1.dlq") == 41
    assert MAX_PREFIX_LENGTH == 208


@pytest.mark.parametrize(
    ("cls", "field", "default"),
    [
        (CartMappingSettings, "cart_mapping_consumer_group", "cart-mapping"),
        (OrderFinalizationSettings, "order_finalization_consumer_group", "order-finalization"),
        (RefundSettings, "refund_consumer_group", "refund"),
        (PaymentExtensionSettings, "payment_extension_consumer_group", "payment-extension"),
    ],
)
def test_default_consumer_groups_get_the_prefix_explicit_ones_stay_as_given(
    cls: type[BaseServiceSettings], field: str, default: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("KAFKA_TOPIC_PREFIX", field.upper()):
        monkeypatch.delenv(name, raising=False)
    assert getattr(cls(), field) == default
    monkeypatch.setenv("KAFKA_TOPIC_PREFIX", "dev.")
    assert getattr(cls(), field) == "dev." + default
    assert cls().topic_names() == TopicNames("dev.")
    monkeypatch.setenv(field.upper(), "shared-group")
    assert getattr(cls(), field) == "shared-group"
    monkeypatch.delenv(field.upper())
    assert getattr(cls(**{field: "given"}), field) == "given"
