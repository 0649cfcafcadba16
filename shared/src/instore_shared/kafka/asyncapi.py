"""The AsyncAPI 3.0 document of the whole integration: every Kafka topic, who writes and who reads it.

Built from the topic registry (:data:`instore_shared.kafka.topics.ALL_TOPICS`) — one channel per
topic, dead-letter topics included — and the table :data:`OPERATIONS` of what each process does
with each topic (``send``/``receive``, tagged with the process). A topic added to the registry
appears here without a second place to edit; a test fails when a topic has no operation.

Message payloads: the JSON Schema (``msgspec.json.schema``) of the msgspec Struct the topic's
``schema`` names (``<module>.<Struct>``; when the module also defines ``<Struct>Schema``, that one
— for Structs msgspec cannot describe, such as a ``msgspec.Raw`` field). A topic whose ``schema``
names no Struct carries raw bytes: a JSON object as InStore sent it (webhooks), or, on a
dead-letter topic, the source message's bytes as they were (they may not even be JSON).

Why our own generator and not FastStream's: the gateway publishes with its own producer, the
payment-extension service reads prompt answers with a plain consumer and the DLQ replay is a CLI —
none of them is a FastStream subscriber or publisher that its generator could see — and
FastStream derives schemas from pydantic models while our wire schemas are msgspec Structs. Each
Kafka service still serves FastStream's view of its own subscribers at its ``/asyncapi.json``;
the gateway serves this one (``GET /asyncapi.json``), and a copy is committed as
``docs/api/asyncapi.json`` (``make api-docs``).
"""

from __future__ import annotations

import importlib
import re
from dataclasses import dataclass
from typing import Any, Literal

import msgspec

from instore_shared.kafka import dlq
from instore_shared.kafka import headers as h
from instore_shared.kafka.topics import (
    ALL_TOPICS,
    CART_REPLIES,
    CART_REQUESTS,
    HOST_EVENTS,
    PAYMENT_EXTENSION_RESULTS,
    PAYMENT_PROMPT_ANSWERS,
    PAYMENT_REQUESTS,
    PAYMENT_REQUESTS_DLQ,
    PAYMENTS_COMPLETED,
    REFUNDS_COMPLETED,
    SESSION_EVENTS,
    WEBHOOKS,
    WEBHOOKS_DLQ,
    Topic,
)

KAFKA_BINDING_VERSION = "0.5.0"
"""Version of the AsyncAPI Kafka bindings used (https://github.com/asyncapi/bindings/tree/master/kafka)."""


@dataclass(frozen=True, slots=True)
class Operation:
    """What one process does with one topic: ``action`` ``send`` or ``receive`` (AsyncAPI 3.0 semantics),
    ``by`` the process (a service name, or ``replay-dlq`` for the operator command), ``group`` the consumer
    group when it reads in one (None: all partitions, no group)."""

    by: str
    action: Literal["send", "receive"]
    topic: Topic
    summary: str
    group: str | None = None


OPERATIONS: tuple[Operation, ...] = (
    Operation("gateway", "send", CART_REQUESTS, "asks cart-mapping for a Cart (InStore's cart callbacks)"),
    Operation("gateway", "receive", CART_REPLIES, "reads the replies to its cart lookups (every partition, no group)"),
    Operation("gateway", "send", WEBHOOKS, "stores each signed InStore webhook as received, before answering 202"),
    Operation("gateway", "send", PAYMENT_REQUESTS, "stores each signed payment-extension request before answering 200"),
    Operation("gateway", "send", PAYMENT_PROMPT_ANSWERS, "stores a colleague's answer to a payment prompt"),
    Operation("gateway", "send", SESSION_EVENTS, "records each colleague session it opened (POST /sessions)"),
    Operation("gateway", "send", HOST_EVENTS, "stores the browser events the host app forwards (POST /host/events)"),
    Operation("cart-mapping", "receive", CART_REQUESTS, "looks the Cart up in Composable Commerce", "cart-mapping"),
    Operation("cart-mapping", "send", CART_REPLIES, "answers on the request's reply_to topic"),
    Operation("order-finalization", "receive", WEBHOOKS, "turns a paid sale into an Order", "order-finalization"),
    Operation("order-finalization", "send", PAYMENTS_COMPLETED, "announces the Order of a paid sale"),
    Operation("order-finalization", "send", WEBHOOKS_DLQ, "parks a webhook it cannot process after bounded retries"),
    Operation("refund", "receive", WEBHOOKS, "records finalized refunds on the original Order", "refund"),
    Operation("refund", "send", REFUNDS_COMPLETED, "announces a recorded refund"),
    Operation("refund", "send", WEBHOOKS_DLQ, "parks a webhook it cannot process after bounded retries"),
    Operation("payment-extension", "receive", PAYMENT_REQUESTS, "runs each payment-extension request once", "payment-extension"),
    Operation("payment-extension", "receive", PAYMENT_PROMPT_ANSWERS, "reads prompt answers (every partition, no group)"),
    Operation("payment-extension", "send", PAYMENT_EXTENSION_RESULTS, "announces each request's final result"),
    Operation("payment-extension", "send", PAYMENT_REQUESTS_DLQ, "parks a request it cannot process"),
    Operation(
        "reconciler", "send", WEBHOOKS, "hands a paid sale whose webhook was lost to order-finalization (origin: reconciliation)"
    ),
    Operation("replay-dlq", "receive", WEBHOOKS_DLQ, "operator command: reads the dead letters to put them back"),
    Operation("replay-dlq", "send", WEBHOOKS, "operator command: re-publishes dead letters to their source topic"),
    Operation("replay-dlq", "receive", PAYMENT_REQUESTS_DLQ, "operator command: reads the dead letters to put them back"),
    Operation("replay-dlq", "send", PAYMENT_REQUESTS, "operator command: re-publishes dead letters to their source topic"),
)
"""Every Kafka operation of the integration. Topics nobody of ours reads (completed payments and refunds,
payment-extension results, session and host events) are for downstream consumers."""

_PROCESSES = {
    "gateway": "the HTTP face: InStore's callbacks, webhooks and payment extensions, the host app's sessions",
    "cart-mapping": "answers the gateway's cart lookups from Composable Commerce",
    "order-finalization": "turns paid sales into Orders",
    "refund": "records finalized refunds",
    "payment-extension": "runs InStore's Custom payment processor requests against the payment provider",
    "reconciler": "the safety net for lost webhooks (CronJob `instore-reconciler`): finds paid sales without an Order",
    "replay-dlq": "the operator command `instore-integration replay-dlq` / `make replay-dlq`",
}

_STRUCT_NAME = re.compile(r"instore_shared(?:\.[A-Za-z_]\w*)+")

_COMMON_HEADERS: dict[str, Any] = {
    h.CORRELATION_ID: {"type": "string", "description": "ties the message to the request that caused it (logs, replies)"},
    h.MESSAGE_TYPE: {"type": "string", "description": "the schema of the value, e.g. cart-lookup-request.v1"},
    h.CONTENT_TYPE: {"type": "string", "description": "MIME type of the value"},
}

_TOPIC_HEADERS: dict[str, dict[str, Any]] = {
    CART_REQUESTS.name: {
        h.REPLY_TO: {"type": "string", "description": "the topic the reply goes to (instore.cart-replies.v1)"},
        h.DEADLINE: {"type": "string", "description": "Unix time in ms after which nobody waits for the reply"},
    },
    WEBHOOKS.name: {
        h.WEBHOOK_ID: {
            "type": "string",
            "description": "InStore's event id, else sha256:<hash of the body>; reconciler: reconciliation:<kind>:<cart>",
        },
        h.RECEIVED_AT: {"type": "string", "format": "date-time", "description": "when the gateway received it (UTC)"},
        h.ORIGIN: {
            "type": "string",
            "enum": [h.RECONCILIATION],
            "description": "only on the reconciler's synthetic payment webhooks (absent on what the gateway stores)",
        },
    },
    PAYMENT_REQUESTS.name: {
        h.REQUEST_ID: {"type": "string", "description": "InStore's requestId"},
        h.TENDER: {"type": "string", "description": "the URL's tender segment, e.g. bank-card"},
        h.ACTION: {"type": "string", "description": "the URL's action segment, e.g. payment"},
        h.RECEIVED_AT: {"type": "string", "format": "date-time", "description": "when the gateway received it (UTC)"},
    },
    PAYMENT_PROMPT_ANSWERS.name: {
        h.REQUEST_ID: {"type": "string", "description": "the prompt's requestId"},
        h.RECEIVED_AT: {"type": "string", "format": "date-time", "description": "when the gateway received it (UTC)"},
    },
    HOST_EVENTS.name: {"event-id": {"type": "string", "description": "the event's eventId"}},
}

_DLQ_HEADERS: dict[str, Any] = {
    dlq.ERROR_REASON: {"type": "string", "pattern": "^[a-z0-9][a-z0-9._-]*$", "description": "why it failed (slug)"},
    dlq.ERROR_DETAIL: {"type": "string", "maxLength": dlq.MAX_DETAIL_CHARS, "description": "one sentence, never the payload"},
    dlq.ATTEMPTS: {"type": "string", "pattern": "^[1-9][0-9]*$", "description": "tries before giving up"},
    dlq.SOURCE_TOPIC: {"type": "string", "description": "the topic it was read from, where replay puts it back"},
    dlq.SOURCE_PARTITION: {"type": "string", "pattern": "^[0-9]+$"},
    dlq.SOURCE_OFFSET: {"type": "string", "pattern": "^[0-9]+$"},
    dlq.FAILED_AT: {"type": "string", "format": "date-time", "description": "when the consumer gave up (UTC)"},
    dlq.CONSUMER_GROUP: {"type": "string", "description": "the consumer group that could not process it"},
}


def payload_struct(topic: Topic) -> type[msgspec.Struct] | None:
    """The msgspec Struct that describes ``topic``'s values: the first ``instore_shared.<module>.<Struct>`` named in
    its ``schema`` (its ``<Struct>Schema`` twin when the module has one), or None (raw bytes).

    Raises :class:`ValueError` when the name does not resolve to a Struct (a typo in the registry)."""
    found = _STRUCT_NAME.search(topic.schema)
    if found is None:
        return None
    module_name, _, name = found.group(0).rpartition(".")
    module = importlib.import_module(module_name)
    struct = getattr(module, name + "Schema", None) or getattr(module, name, None)
    if not (isinstance(struct, type) and issubclass(struct, msgspec.Struct)):
        raise ValueError(f"{topic.name}: {found.group(0)} is not a msgspec Struct")
    return struct


def channel_id(topic: Topic) -> str:
    """The channel's key in the document: the topic name with ``.`` as ``_`` (AsyncAPI keys allow ``A-Za-z0-9_-``)."""
    return topic.name.replace(".", "_")


def document(version: str = "0.1.0", prefix: str = "") -> dict[str, Any]:
    """The AsyncAPI 3.0 document (a JSON-able dict), deterministic (same input, same bytes).

    ``prefix`` is the deployment's ``KAFKA_TOPIC_PREFIX``: channel addresses, Kafka topic bindings and
    default consumer groups carry it, as the services use them; channel ids, titles and operation ids
    keep the registry's names, so a document's structure is the same in every environment.
    """
    structs = {t.name: payload_struct(t) for t in ALL_TOPICS}
    used = sorted({s for s in structs.values() if s is not None}, key=lambda s: s.__name__)
    payloads, schemas = msgspec.json.schema_components(used, ref_template="#/components/schemas/{name}")
    payload_of = dict(zip(used, payloads, strict=True))
    channels: dict[str, Any] = {}
    messages: dict[str, Any] = {}
    for topic in ALL_TOPICS:
        cid = channel_id(topic)
        struct = structs[topic.name]
        is_dlq = topic.name.endswith(dlq.DLQ_SUFFIX)
        if struct is not None:
            payload, content_type = payload_of[struct], "application/json"
        elif is_dlq:
            payload = {"type": "string", "format": "binary", "description": "the source message's bytes, unchanged"}
            content_type = "application/octet-stream"
        else:
            payload = {"type": "object", "additionalProperties": True, "description": topic.schema}
            content_type = "application/json"
        header_props = {**_COMMON_HEADERS, **_TOPIC_HEADERS.get(topic.name, {}), **(_DLQ_HEADERS if is_dlq else {})}
        message: dict[str, Any] = {
            "name": cid,
            "title": topic.name,
            "summary": topic.schema if struct is None else f"{struct.__name__} (JSON)",
            "contentType": content_type,
            "headers": {
                "type": "object",
                "properties": header_props,
                "required": sorted(_DLQ_HEADERS) if is_dlq else [],
                "additionalProperties": True,
            },
            "payload": payload,
            "bindings": {"kafka": {"key": {"type": "string", "description": topic.key}, "bindingVersion": KAFKA_BINDING_VERSION}},
        }
        messages[cid] = message
        readers = sorted({o.by for o in OPERATIONS if o.topic == topic and o.action == "receive"})
        channels[cid] = {
            "address": prefix + topic.name,
            "title": topic.name,
            "description": topic.description + ("" if readers else " Not read by this integration: for downstream consumers."),
            "messages": {"message": {"$ref": f"#/components/messages/{cid}"}},
            "bindings": {
                "kafka": {
                    "topic": prefix + topic.name,
                    **({"topicConfiguration": {"cleanup.policy": ["compact"]}} if topic.compacted else {}),
                    "bindingVersion": KAFKA_BINDING_VERSION,
                }
            },
        }
    operations: dict[str, Any] = {}
    for op in OPERATIONS:
        cid = channel_id(op.topic)
        operation: dict[str, Any] = {
            "action": op.action,
            "channel": {"$ref": f"#/channels/{cid}"},
            "title": f"{op.by} {op.action}s {op.topic.name}",
            "summary": op.summary,
            "tags": [{"name": op.by}],
            "messages": [{"$ref": f"#/channels/{cid}/messages/message"}],
        }
        if op.group is not None:
            operation["bindings"] = {
                "kafka": {
                    "groupId": {
                        "type": "string",
                        "enum": [prefix + op.group],
                        "description": "default consumer group (a setting)",
                    },
                    "bindingVersion": KAFKA_BINDING_VERSION,
                }
            }
        operations[f"{op.by.replace('-', '_')}_{op.action}_{cid}"] = operation
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "InStore integration server — Kafka topics",
            "version": version,
            "description": "Every Kafka topic of the integration (the registry instore_shared.kafka.topics), dead-letter "
            "topics included, with its message schema and key, and which process sends or receives it (operation "
            "tags). Producers write with acks=all and idempotence; topic names get the deployment's topic-name prefix "
            "when one is configured.",
            "tags": [{"name": name, "description": text} for name, text in _PROCESSES.items()],
        },
        "defaultContentType": "application/json",
        "servers": {
            "kafka": {
                "host": "{bootstrapServers}",
                "protocol": "kafka",
                "description": "the Kafka cluster (KAFKA_BOOTSTRAP_SERVERS)",
                "variables": {"bootstrapServers": {"default": "localhost:9092"}},
            }
        },
        "channels": channels,
        "operations": operations,
        "components": {"messages": messages, "schemas": schemas},
    }
