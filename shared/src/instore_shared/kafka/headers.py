"""Kafka message headers shared by every producer and consumer of this project.

The header names ``correlation_id``, ``reply_to`` and ``content-type`` are the ones
FastStream reads and writes, so a FastStream subscriber on the other side answers a
request on the ``reply_to`` topic with the same ``correlation_id`` by itself.
"""

from __future__ import annotations

from collections.abc import Mapping

CORRELATION_ID = "correlation_id"
"""Ties a reply (and every log line on its way) to its request."""

REPLY_TO = "reply_to"
"""The topic the answer to a request goes to."""

CONTENT_TYPE = "content-type"
"""MIME type of the value; always ``application/json`` here."""

MESSAGE_TYPE = "message-type"
"""The schema of the value, e.g. ``cart-lookup-request``."""

DEADLINE = "deadline-ms"
"""Unix time in milliseconds after which nobody waits for the answer any more."""

WEBHOOK_ID = "webhook-id"
"""A webhook's stable id (InStore's event id, else the SHA-256 of its body)."""

RECEIVED_AT = "received-at"
"""RFC 3339 UTC time the gateway received the webhook."""

JSON = "application/json"


def encode_headers(headers: Mapping[str, str]) -> list[tuple[str, bytes]]:
    """Headers as aiokafka wants them: a list of ``(name, utf-8 bytes)``."""
    return [(k, v.encode()) for k, v in headers.items()]


def decode_headers(raw: list[tuple[str, bytes]] | tuple[tuple[str, bytes], ...] | None) -> dict[str, str]:
    """aiokafka's header list as a dict (last one wins; undecodable bytes are replaced)."""
    return {k: v.decode(errors="replace") for k, v in (raw or ())}


REQUEST_ID = "request-id"
"""A payment-extension request's id (InStore's ``requestId``)."""

TENDER = "tender"
"""A payment-extension request's tender (path segment, e.g. ``bank-card``)."""

ACTION = "action"
"""A payment-extension request's action (path segment, e.g. ``payment``)."""

ORIGIN = "origin"
"""Who put a message on an InStore topic when it was not InStore through the gateway: ``reconciliation`` for
the reconciler's synthetic payment triggers (absent on everything the gateway publishes)."""

RECONCILIATION = "reconciliation"
"""The :data:`ORIGIN` value of the reconciler's triggers."""
