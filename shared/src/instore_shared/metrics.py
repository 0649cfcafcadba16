"""The integration's own Prometheus metrics, and what serves them.

Every process serves ``GET /metrics`` in the Prometheus text format from prometheus_client's
default registry: the families below (created when this module is imported), those of
FastStream's Prometheus middleware (``instore_received_*``, ``instore_published_*``,
:func:`kafka_middlewares`) and Litestar's Prometheus plugin (``instore_http_*``, gateway
only), and prometheus_client's ``process_*`` and ``python_*``.

Names follow the Prometheus conventions (https://prometheus.io/docs/practices/naming/):
the common prefix ``instore_``, base units (seconds, bytes), ``_total`` for counters.
**Labels never carry ids** (no cart ids, order numbers, webhook ids): every label value
comes from a fixed set in this code — a topic, a reason slug, an outcome, an HTTP status,
a Composable Commerce operation as a path template (:func:`commerce_operation`).

The catalogue, with meanings and the alerts built on it, is in docs/operations.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from prometheus_client import REGISTRY, Counter, Gauge, Histogram

PREFIX = "instore"
"""The common prefix of every metric family of the integration."""

# Latency buckets, in seconds: from a fast cache hit to a request that timed out.
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
# Webhook → event: seconds to minutes (an outage of Composable Commerce makes a webhook wait).
_PIPELINE_BUCKETS = (0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)

# -- Composable Commerce (CommercetoolsClient) ------------------------------------------
COMMERCE_REQUESTS = Counter(
    f"{PREFIX}_commerce_requests",
    "Composable Commerce API calls, by operation (method and path template) and final HTTP status ('error' when no answer came)",
    ["operation", "status"],
)
COMMERCE_DURATION = Histogram(
    f"{PREFIX}_commerce_request_duration_seconds",
    "Duration of one Composable Commerce API call, its quick retries included, in seconds",
    ["operation"],
    buckets=_LATENCY_BUCKETS,
)
COMMERCE_RETRIES = Counter(
    f"{PREFIX}_commerce_retries", "HTTP attempts the Composable Commerce client repeated (429, 5xx, network error)", ["operation"]
)

# -- Kafka consumers ------------------------------------------------------------------------
CONSUMER_LAG = Gauge(
    f"{PREFIX}_kafka_consumer_lag",
    "Messages between a partition's high watermark and this consumer's position (refreshed every few seconds)",
    ["consumer_group", "topic", "partition"],
)
DEAD_LETTERS = Counter(
    f"{PREFIX}_dead_letters", "Messages parked on a dead-letter topic, by source topic and dlq-error-reason", ["topic", "reason"]
)
OUTAGE_RETRIES = Counter(
    f"{PREFIX}_outage_retries", "Times a message waited for Composable Commerce to come back before trying again", ["operation"]
)
OUTAGE_WAIT = Counter(
    f"{PREFIX}_outage_wait_seconds", "Seconds messages spent waiting for Composable Commerce to come back", ["operation"]
)
WEBHOOKS_PROCESSED = Counter(
    f"{PREFIX}_webhooks_processed", "Webhooks a consumer processed to the end, by what they led to", ["outcome"]
)
EVENTS_ANNOUNCED = Counter(
    f"{PREFIX}_events_announced",
    "Downstream announcements decided, by topic and verdict (published: this message published it)",
    ["topic", "verdict"],
)
WEBHOOK_TO_EVENT = Histogram(
    f"{PREFIX}_webhook_to_event_seconds",
    "From the gateway receiving a webhook to its downstream event acknowledged by Kafka, in seconds",
    ["topic"],
    buckets=_PIPELINE_BUCKETS,
)

# -- gateway ----------------------------------------------------------------------------------
CART_LOOKUPS = Counter(
    f"{PREFIX}_cart_lookups", "Cart callbacks answered, by cart kind and HTTP status answered", ["kind", "outcome"]
)
CART_LOOKUP_ROUND_TRIP = Histogram(
    f"{PREFIX}_cart_lookup_round_trip_seconds",
    "Kafka request/reply round trip of a cart lookup (publish, cart-mapping, reply), in seconds",
    ["kind"],
    buckets=_LATENCY_BUCKETS,
)
WEBHOOKS_ACCEPTED = Counter(f"{PREFIX}_webhooks_accepted", "Webhooks answered 202: durably in Kafka")
WEBHOOKS_REFUSED = Counter(f"{PREFIX}_webhooks_refused", "Webhooks answered 4xx/5xx, by problem type", ["reason"])
VAULT_OPERATIONS = Counter(
    f"{PREFIX}_token_vault_operations",
    "Token-vault operations, by operation and outcome (ok, miss, error)",
    ["operation", "outcome"],
)
# The gateway publishes with its own aiokafka producer (request/reply client), not through
# FastStream: it writes the same two families FastStream's middleware writes for the other
# services, so one dashboard query covers every service. Looked up first, as the middleware
# does (prometheus_client has no public lookup): a test process may run both.
_published: dict[str, Any] = {}
_published_children: dict[tuple[str, str, str], tuple[Any, Any]] = {}


def published(app_name: str, destination: str, status: str, seconds: float) -> None:
    """Count one publish of ``app_name`` to topic ``destination`` (``status``: success|error) and its duration."""
    if not _published:
        known = REGISTRY._names_to_collectors
        _published["total"] = known.get(f"{PREFIX}_published_messages_total") or Counter(
            f"{PREFIX}_published_messages",
            "Count of published messages by destination and status",
            ["app_name", "broker", "destination", "status"],
        )
        _published["duration"] = known.get(f"{PREFIX}_published_messages_duration_seconds") or Histogram(
            f"{PREFIX}_published_messages_duration_seconds",
            "Histogram of published messages duration in seconds by broker and destination",
            ["app_name", "broker", "destination"],
        )
    key = (app_name, destination, status)
    children = _published_children.get(key)  # labels() per call was measurable per webhook
    if children is None:
        children = _published_children[key] = (
            _published["total"].labels(app_name, "kafka", destination, status),
            _published["duration"].labels(app_name, "kafka", destination),
        )
    children[0].inc()
    children[1].observe(seconds)


# -- payment extensions ----------------------------------------------------------------------
PAYMENT_EXTENSION_REQUESTS = Counter(
    f"{PREFIX}_payment_extension_requests",
    "Payment-extension requests answered by the gateway, by tender, action and "
    "outcome (accepted, or the problem type answered; 'unknown' tender/action for paths outside the contract)",
    ["tender", "action", "outcome"],
)
PAYMENT_EXTENSION_RESULTS = Counter(
    f"{PREFIX}_payment_extension_results",
    "Payment-extension requests the service finished, by tender, action and "
    "status (succeeded, declined, cancelled, timed-out, failed)",
    ["tender", "action", "status"],
)
PROVIDER_CALLS = Counter(
    f"{PREFIX}_payment_provider_calls",
    "Calls to the payment provider, by provider, operation and outcome (approved, declined, prompt, down)",
    ["provider", "operation", "outcome"],
)
PROVIDER_DURATION = Histogram(
    f"{PREFIX}_payment_provider_call_duration_seconds",
    "Duration of one payment provider call, in seconds",
    ["provider", "operation"],
    buckets=_LATENCY_BUCKETS,
)
INSTORE_POSTS = Counter(
    f"{PREFIX}_instore_posts",
    "POSTs to InStore's statusUrl and callbackUrl, by kind (progress, prompt, callback) and "
    "outcome (delivered, failed, refused: not on the allow-list)",
    ["kind", "outcome"],
)
PAYMENT_REQUEST_TO_CALLBACK = Histogram(
    f"{PREFIX}_payment_request_to_callback_seconds",
    "From the gateway receiving a payment-extension request to its "
    "result delivered to callbackUrl, in seconds (prompts included)",
    ["action"],
    buckets=_PIPELINE_BUCKETS,
)


READY = Gauge(f"{PREFIX}_ready", "1 when the last readiness check (/readyz) passed, else 0")


# -- helpers ----------------------------------------------------------------------------------
_ID_SEGMENT = re.compile(r"^(key|order-number)=.*$")


def commerce_operation(method: str, path: str) -> str:
    """The bounded label of a Composable Commerce call: ``method`` plus ``path`` with every id,
    key and order number replaced by a placeholder.

    ``("GET", "/carts/3f2a…")`` → ``"GET carts/{id}"``; ``"/carts/key=abc"`` → ``"carts/key={key}"``;
    ``"/orders/order-number=X"`` → ``"orders/order-number={orderNumber}"``;
    ``"/custom-objects/c/k"`` → ``"custom-objects/{container}/{key}"``. The first segment
    (the resource type) is kept: it comes from this code, never from input.
    """
    parts = [p for p in path.split("?", 1)[0].split("/") if p]
    if not parts:
        return f"{method} /"
    head, rest = parts[0], parts[1:]
    if head == "custom-objects":
        names = ["{container}", "{key}"][: len(rest)]
        return f"{method} {'/'.join([head, *names])}"
    out = [head]
    for segment in rest:
        match = _ID_SEGMENT.match(segment)
        if match:
            out.append(f"{match.group(1)}={{{'key' if match.group(1) == 'key' else 'orderNumber'}}}")
        else:
            out.append("{id}")
    return f"{method} {'/'.join(out)}"


def kafka_middlewares(app_name: str) -> list[Any]:
    """FastStream broker middlewares of a Kafka service: Prometheus (``instore_received_*``,
    ``instore_published_*`` labelled ``app_name``) and, when tracing is on
    (:func:`instore_shared.telemetry.tracing_enabled`), OpenTelemetry (a consumer span per message whose
    parent is the ``traceparent`` header, a producer span per publish that writes it)."""
    from faststream.kafka.prometheus import KafkaPrometheusMiddleware

    from instore_shared.telemetry import tracing_enabled

    middlewares: list[Any] = []
    if tracing_enabled():
        from faststream.kafka.opentelemetry import KafkaTelemetryMiddleware

        middlewares.append(KafkaTelemetryMiddleware())
    middlewares.append(KafkaPrometheusMiddleware(registry=REGISTRY, app_name=app_name, metrics_prefix=PREFIX))
    return middlewares


LAG_REFRESH_SECONDS = 5.0
"""How often :func:`track_consumer_lag` refreshes :data:`CONSUMER_LAG`."""


def _consumers(broker: Any) -> Iterable[tuple[str, Any]]:
    """``(consumer group, aiokafka consumer)`` of every running subscriber of a FastStream Kafka ``broker``."""
    for subscriber in getattr(broker, "subscribers", ()):
        group = getattr(subscriber, "group_id", None) or ""
        consumers = getattr(subscriber, "consumer_subgroup", None) or [getattr(subscriber, "consumer", None)]
        for consumer in consumers:
            if consumer is not None:
                yield group, consumer


async def refresh_consumer_lag(broker: Any) -> None:
    """Set :data:`CONSUMER_LAG` for every partition assigned to ``broker``'s consumers now (partitions
    no longer assigned disappear). A partition whose high watermark is not known yet is left out."""
    values: dict[tuple[str, str, str], float] = {}
    for group, consumer in _consumers(broker):
        with contextlib.suppress(Exception):  # a consumer stopping or rebalancing: next round
            for tp in consumer.assignment():
                high = consumer.highwater(tp)
                if high is None:
                    continue
                position = await asyncio.wait_for(consumer.position(tp), 1.0)
                values[(group, tp.topic, str(tp.partition))] = max(0, high - position)
    CONSUMER_LAG.clear()
    for labels, value in values.items():
        CONSUMER_LAG.labels(*labels).set(value)


async def track_consumer_lag(broker: Any, every: float = LAG_REFRESH_SECONDS) -> None:
    """Refresh :data:`CONSUMER_LAG` from ``broker`` every ``every`` seconds until cancelled."""
    while True:
        await refresh_consumer_lag(broker)
        await asyncio.sleep(every)


def webhook_handled(outcome: str, topic: str, verdicts: Iterable[str], received_at: str | None, now: float | None = None) -> None:
    """Count one webhook a consumer processed to the end: its ``outcome``, each announcement
    ``verdicts`` (values of :class:`~instore_shared.announcements.Verdict`) on ``topic``, and for
    each one this message published, the time from ``received_at`` (the gateway's RFC 3339 UTC
    ``received-at`` header; skipped when missing or unreadable) to ``now`` (epoch seconds; default: now)."""
    WEBHOOKS_PROCESSED.labels(outcome).inc()
    for verdict in verdicts:
        EVENTS_ANNOUNCED.labels(topic, verdict).inc()
        if verdict == "published" and received_at:
            try:
                started = datetime.fromisoformat(received_at.replace("Z", "+00:00")).timestamp()
            except ValueError:
                continue
            WEBHOOK_TO_EVENT.labels(topic).observe(max(0.0, (time.time() if now is None else now) - started))
