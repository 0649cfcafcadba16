"""Assembly of the cart-mapping service: the FastStream broker, its subscriber, health routes."""

from __future__ import annotations

import logging
from typing import Any

import msgspec
from faststream import AckPolicy
from faststream.asgi import AsgiFastStream
from faststream.kafka import KafkaBroker, KafkaMessage
from faststream.message import StreamMessage

from instore_cart_mapping.handler import CommerceReader, handle_cart_lookup
from instore_cart_mapping.settings import CartMappingSettings
from instore_shared.commercetools import CommercetoolsClient
from instore_shared.contract import cart_lookup as contract
from instore_shared.kafka.rpc import publish_reply, request_expired
from instore_shared.kafka.topics import CART_REQUESTS
from instore_shared.logging import correlation_scope, get_logger
from instore_shared.metrics import kafka_middlewares
from instore_shared.service import commerce_service_app
from instore_shared.settings import CommercetoolsSettings, load_settings

log = get_logger(__name__)


def create_broker(settings: CartMappingSettings, commerce: CommerceReader) -> KafkaBroker:
    """The Kafka broker with the cart lookup subscriber.

    The subscriber answers on the request's ``reply_to`` topic with the request's
    ``correlation_id`` (published explicitly, so an expired request gets no reply). Offsets
    are committed as messages are taken (at-most-once, see below). A request whose
    ``deadline-ms`` has passed is not answered: nobody waits for it any more.
    """
    broker = KafkaBroker(
        settings.kafka_bootstrap_servers,
        client_id=f"{settings.kafka_client_id_prefix}-cart-mapping",
        security=settings.kafka_security(),
        acks="all",
        enable_idempotence=True,
        linger_ms=0,
        # Not "faststream": FastStream gives that stdlib logger a coloured handler of its own.
        logger=get_logger("instore_cart_mapping.kafka"),
        # No dependency injection: the handler takes the message itself. FastStream's DI
        # resolves a Context parameter in a worker thread per message (a third of this
        # service's CPU under load, measured with py-spy); msgspec does the decoding.
        apply_types=False,
        log_level=logging.DEBUG,  # "Received"/"Processed" per message; our handler logs the outcome at INFO
        middlewares=kafka_middlewares("cart-mapping"),
    )

    requests_topic = settings.topic_names().name(CART_REQUESTS)

    @broker.subscriber(
        requests_topic,
        group_id=settings.cart_mapping_consumer_group,
        # At-most-once on purpose: a lookup is a read with a deadline. The offset is committed
        # as the message is taken, so a crash loses at most an in-flight lookup, which the
        # gateway answers 504 and InStore asks again. In exchange one consumer runs
        # `max_workers` lookups at once (with ACK, FastStream would start one consumer per worker).
        ack_policy=AckPolicy.ACK_FIRST,
        no_reply=True,  # we publish the reply ourselves: an expired request gets none
        max_workers=settings.cart_mapping_max_concurrent_lookups,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=50,
        decoder=_the_message,
        title="cart-lookup",
        description=(
            "Answers cart lookups from the gateway on the request's reply_to topic "
            "(instore.cart-replies.v1). Payloads are msgspec Structs: CartLookupRequest in "
            "(JSON Schema: GET /schemas/cart-lookup-request.json), CartLookupReply out "
            "(GET /schemas/cart-lookup-reply.json). Headers: correlation_id, reply_to, deadline-ms."
        ),
    )
    async def on_cart_request(message: KafkaMessage) -> None:
        with correlation_scope(message.correlation_id or ""):
            if request_expired(message.headers):
                log.info("cart_lookup.expired", topic=requests_topic)
                return
            try:
                request = contract.decode_request(message.body)
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                log.warning("cart_lookup.bad_request", error=str(exc))
                reply = contract.CartLookupReply(
                    status=contract.LookupStatus.UPSTREAM_ERROR, reason="bad-request", detail=str(exc)
                )
            else:
                try:
                    reply = await handle_cart_lookup(request, commerce, settings)
                except Exception:  # a bug must cost one 502, not a 504 after the gateway's timeout
                    log.exception("cart_lookup.failed", cart_ref=request.cart_ref)
                    reply = contract.CartLookupReply(
                        status=contract.LookupStatus.UPSTREAM_ERROR,
                        reason="lookup-failed",
                        detail="the cart service failed on this cart; it was logged under the correlation id",
                    )
                log.info("cart_lookup.answered", cart_ref=request.cart_ref, kind=request.kind.value, status=reply.status.value)
            if not await publish_reply(broker, message, contract.encode(reply), contract.REPLY_TYPE):
                log.warning("cart_lookup.no_reply_to")

    return broker


async def _the_message(message: StreamMessage[Any]) -> StreamMessage[Any]:
    """Hand the handler the message itself (headers, key, raw bytes); msgspec decodes the body."""
    return message


def create_app(
    settings: CartMappingSettings | None = None,
    commerce_settings: CommercetoolsSettings | None = None,
    commerce: CommerceReader | None = None,
) -> AsgiFastStream:
    """The cart-mapping application: broker + ``/healthz`` and ``/readyz`` (Kafka ping) routes."""
    settings = settings or CartMappingSettings()
    commerce_settings = commerce_settings or load_settings(CommercetoolsSettings, "instore-cart-mapping")
    client = commerce or CommercetoolsClient(commerce_settings)
    broker = create_broker(settings, client)

    return commerce_service_app(
        "cart-mapping",
        broker,
        settings,
        client,
        "Answers InStore cart lookups from the gateway over Kafka request/reply.",
        {
            "/schemas/cart-lookup-request.json": contract.CartLookupRequest,
            "/schemas/cart-lookup-reply.json": contract.CartLookupReplySchema,
        },
    )
