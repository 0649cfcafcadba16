"""The reconciler's hand-off to order-finalization: a synthetic payment webhook on ``instore.webhooks.v1``.

Why the webhook topic and not one of its own: order-finalization then handles a reconciled cart
exactly like a webhook InStore sent — one code path, one set of exactly-once rules — and the
message sits in the cart's partition (keyed by the cart id, as the gateway keys webhooks), so it
is processed in order with a real webhook that names the cart by id. The refund service, which
reads the same topic, skips it (it is not a refund webhook).

Shape (the fields order-finalization reads; instore_shared.contract.instore_webhooks.PaymentWebhook):
``{"id": "reconciliation:<reason>:<cart id>", "type": "payment.completed", "cartId": "<cart id>",
"data": {"origin": "reconciliation", "reason": "<reason>"}}``, headers ``webhook-id`` (the same id,
so the payments-completed event names it), ``received-at``, ``correlation_id``, ``message-type``
``instore-webhook.v1``, ``content-type`` and ``origin: reconciliation``. Nothing signs it: the topic
is written only by the gateway (after checking InStore's signature) and this job.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import msgspec
from aiokafka import AIOKafkaProducer

from instore_shared.kafka import headers as h

WEBHOOK_MESSAGE_TYPE = "instore-webhook.v1"
"""The ``message-type`` the gateway gives webhooks (instore_gateway.webhooks.MESSAGE_TYPE)."""


def trigger_body(cart_id: str, reason: str) -> tuple[str, bytes]:
    """The synthetic webhook's id and JSON body for ``cart_id`` (see the module doc)."""
    webhook_id = f"reconciliation:{reason}:{cart_id}"
    body = {
        "id": webhook_id,
        "type": "payment.completed",
        "cartId": cart_id,
        "data": {"origin": h.RECONCILIATION, "reason": reason},
    }
    return webhook_id, msgspec.json.encode(body)


class KafkaTrigger:
    """:class:`~instore_order_finalization.reconciler.run.Trigger` on an idempotent ``acks=all`` producer.

    Use as an async context manager (stops the producer, if a hand-off started it). ``run_id`` goes into each
    message's ``correlation_id`` header, so the logs of order-finalization tie back to the run.
    """

    def __init__(self, bootstrap_servers: str, topic: str, client_id: str, run_id: str, options: dict[str, Any]) -> None:
        self._topic = topic
        self._run_id = run_id
        self._config: dict[str, Any] = {
            "bootstrap_servers": bootstrap_servers,
            "client_id": client_id,
            "acks": "all",
            "enable_idempotence": True,
            **options,
        }
        self._producer: AIOKafkaProducer | None = None

    async def __aenter__(self) -> KafkaTrigger:
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._producer is not None:
            await self._producer.stop()

    async def hand(self, cart_id: str, reason: str) -> None:
        """Publish the trigger for ``cart_id`` and wait for Kafka's acknowledgement (raises the Kafka error).

        The producer is made and connected on the first hand-off: a run with nothing to hand never
        touches Kafka (and leaves no unstarted producer behind).
        """
        if self._producer is None:
            self._producer = AIOKafkaProducer(**self._config)  # stopped on exit even when starting failed half-way
            await self._producer.start()
        webhook_id, body = trigger_body(cart_id, reason)
        received_at = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        headers = {
            h.WEBHOOK_ID: webhook_id,
            h.RECEIVED_AT: received_at,
            h.CORRELATION_ID: f"{self._run_id}:{cart_id}",
            h.MESSAGE_TYPE: WEBHOOK_MESSAGE_TYPE,
            h.CONTENT_TYPE: h.JSON,
            h.ORIGIN: h.RECONCILIATION,
        }
        await self._producer.send_and_wait(self._topic, body, key=cart_id.encode(), headers=h.encode_headers(headers))
