"""The gateway's AsyncAPI 3.0 document: the Kafka topics it writes, with their message schemas (``GET /asyncapi.json``).

Our own code, not FastStream's generator: the gateway publishes with its own producer (no
FastStream publishers to describe), and FastStream derives payload schemas from pydantic
models while our wire schemas are msgspec Structs (``msgspec.json.schema`` gives their JSON
Schema). Built once from the topic registry (:mod:`instore_shared.kafka.topics`), so a topic
or schema change shows here without a second place to edit.
"""

from __future__ import annotations

from typing import Any

import msgspec

from instore_shared.contract import host_events, payment_extensions, sessions
from instore_shared.contract.cart_lookup import CartLookupRequest
from instore_shared.kafka.topics import (
    CART_REQUESTS,
    HOST_EVENTS,
    PAYMENT_PROMPT_ANSWERS,
    PAYMENT_REQUESTS,
    SESSION_EVENTS,
    WEBHOOKS,
    Topic,
)

_PUBLISHED: list[tuple[Topic, Any, str]] = [
    (CART_REQUESTS, CartLookupRequest, "a cart lookup (request/reply; the reply comes on instore.cart-replies.v1)"),
    (
        WEBHOOKS,
        None,
        "an InStore webhook's raw bytes (schema: InStore's; the fields we read: see the refund and "
        "payment webhook schemas of the services)",
    ),
    (PAYMENT_REQUESTS, payment_extensions.PaymentExtensionRequest, "a payment-extension request's raw bytes"),
    (PAYMENT_PROMPT_ANSWERS, payment_extensions.PromptAnswer, "a colleague's answer to a payment prompt"),
    (SESSION_EVENTS, sessions.SessionStarted, "a colleague session the gateway opened (no secrets)"),
    (HOST_EVENTS, host_events.HostEvent, "a browser event of InStore's component, forwarded by the host app"),
]


def document() -> dict[str, Any]:
    """The AsyncAPI 3.0 document (a JSON-able dict)."""
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    schemas: dict[str, Any] = {}
    for topic, struct, summary in _PUBLISHED:
        name = topic.name.replace(".", "_")
        payload: dict[str, Any] = {"type": "string", "contentEncoding": "utf-8", "description": "raw bytes as received"}
        if struct is not None:
            schema = msgspec.json.schema(struct)
            schemas.update(schema.pop("$defs", {}))
            payload = schema
        channels[name] = {
            "address": topic.name,
            "description": topic.description,
            "messages": {
                "message": {
                    "summary": summary,
                    "contentType": "application/json",
                    "payload": payload,
                    "bindings": {"kafka": {"key": {"type": "string", "description": topic.key}}},
                }
            },
        }
        operations[f"send_{name}"] = {"action": "send", "channel": {"$ref": f"#/channels/{name}"}, "summary": summary}
    doc = {
        "asyncapi": "3.0.0",
        "info": {
            "title": "InStore integration gateway — Kafka",
            "version": "0.1.0",
            "description": "The topics the gateway writes (acks=all, idempotent producer).",
        },
        "channels": channels,
        "operations": operations,
        "components": {"schemas": schemas},
    }
    return msgspec.json.decode(msgspec.json.encode(doc).replace(b"#/$defs/", b"#/components/schemas/"), type=dict[str, Any])
