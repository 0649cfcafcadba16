"""One sale through a running compose stack: one signed payment webhook → exactly one Order, one event.

Run by scripts/compose-smoke.sh (which brings the stack up from the images and tears it down);
by hand against a stack that ``make compose-up`` started::

    .venv/bin/python scripts/compose_smoke.py --gateway http://127.0.0.1:8080 \
        --mock http://127.0.0.1:8989 --kafka 127.0.0.1:29092

It takes the seeded sale cart of the commercetools mock (key ``demo-sale-cart``: two line items
and a charged card Payment, as InStore leaves a paid cart — tools/ct-mock/server.mjs), sends one
InStore payment webhook for it to the gateway, signed with ``INSTORE_WEBHOOK_SECRET`` (HMAC-SHA256
of the body in ``X-Signature``, as InStore signs), and checks what the pipeline made of it: exactly
one Order from that cart in the mock and exactly one ``commerce.payments.completed.v1`` event for
the cart, counted over everything on the topic up to its end offsets once the first one arrived
(order-finalization creates the Order before it writes the event).
Exit code 0 when both hold, 1 with the reason on stderr otherwise; a stack that already turned
the cart into an Order is refused (run it on a fresh stack).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import json
import os
import sys
import time
from typing import Any

import httpx
from aiokafka import AIOKafkaConsumer, TopicPartition

from instore_devfakes.instore_samples import payment_webhook
from instore_shared.commercetools import CommercetoolsClient
from instore_shared.kafka.topics import PAYMENTS_COMPLETED
from instore_shared.logging import configure_logging
from instore_shared.settings import CommercetoolsSettings

SALE_CART_KEY = "demo-sale-cart"


class SmokeFailed(Exception):
    """The stack did not turn the webhook into exactly one Order and one event."""


async def _wait(what: str, deadline: float, probe: Any) -> Any:
    """Poll ``probe()`` (async, returns a value or None) every 0.25 s until it returns one or ``deadline`` passes."""
    while True:
        value = await probe()
        if value is not None:
            return value
        if time.monotonic() > deadline:
            raise SmokeFailed(f"timed out waiting for {what}")
        await asyncio.sleep(0.25)


async def _orders_of(commerce: CommercetoolsClient, cart_id: str) -> list[dict[str, Any]]:
    response = await commerce.request("GET", "/orders", params={"where": f'cart(id="{cart_id}")', "limit": "10"})
    results: list[dict[str, Any]] = response.json()["results"]
    return results


async def smoke(gateway: str, mock: str, kafka: str, secret: str, seconds: float) -> str:
    """Send the webhook and check the outcome; returns a one-line summary or raises :class:`SmokeFailed`."""
    deadline = time.monotonic() + seconds
    settings = CommercetoolsSettings(api_url=mock, auth_url=mock)
    async with CommercetoolsClient(settings) as commerce, httpx.AsyncClient(timeout=10) as http:
        cart = (await commerce.find_cart(SALE_CART_KEY)).json()
        if await _orders_of(commerce, cart["id"]):
            raise SmokeFailed(f"the cart {SALE_CART_KEY} already has an Order: run this on a fresh stack")

        # Read the topic from its current end, resolved before the webhook is sent.
        consumer = AIOKafkaConsumer(bootstrap_servers=kafka, group_id=None, enable_auto_commit=False)
        await consumer.start()
        try:
            partitions = [
                TopicPartition(PAYMENTS_COMPLETED.name, p)
                for p in sorted(await _wait("the topic's partitions", deadline, lambda: _partitions(consumer)))
            ]
            consumer.assign(partitions)
            await consumer.seek_to_end(*partitions)
            for tp in partitions:
                await consumer.position(tp)

            body = payment_webhook(cart["id"])
            signature = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
            answer = await http.post(
                f"{gateway}/instore/webhooks",
                content=body,
                headers={"X-Signature": signature, "Content-Type": "application/json"},
            )
            if answer.status_code != 202:
                raise SmokeFailed(f"the gateway answered the webhook {answer.status_code}: {answer.text}")

            # The event for the cart, then everything on the topic up to its end offsets at that
            # moment (a duplicate written with it would be there too).
            events: list[dict[str, Any]] = []

            async def read() -> None:
                for records in (await consumer.getmany(timeout_ms=250)).values():
                    events.extend(json.loads(r.value) for r in records)

            while not any(e.get("cartId") == cart["id"] for e in events):
                if time.monotonic() > deadline:
                    raise SmokeFailed(f"no {PAYMENTS_COMPLETED.name} event for the cart within {seconds:.0f} s")
                await read()
            ends = await consumer.end_offsets(partitions)
            while [tp for tp in partitions if await consumer.position(tp) < ends[tp]]:
                if time.monotonic() > deadline:
                    raise SmokeFailed(f"timed out reading {PAYMENTS_COMPLETED.name} to its end")
                await read()
        finally:
            await consumer.stop()

        orders = await _orders_of(commerce, cart["id"])
        mine = [e for e in events if e.get("cartId") == cart["id"]]
        if len(orders) != 1:
            raise SmokeFailed(f"{len(orders)} Orders from cart {cart['id']}, expected exactly 1")
        if len(mine) != 1:
            raise SmokeFailed(f"{len(mine)} events for cart {cart['id']} on {PAYMENTS_COMPLETED.name}, expected exactly 1")
        if mine[0].get("orderId") != orders[0]["id"]:
            raise SmokeFailed(f"the event names Order {mine[0].get('orderId')}, the mock holds {orders[0]['id']}")
        return (
            f"webhook {answer.json()['webhookId']} → Order {orders[0].get('orderNumber')} ({orders[0]['id']}) "
            f"and one {PAYMENTS_COMPLETED.name} event ({mine[0].get('eventId')})"
        )


async def _partitions(consumer: AIOKafkaConsumer) -> set[int] | None:
    """The topic's partitions once the broker knows it (the services create their topics at start-up)."""
    await consumer._client.force_metadata_update()  # as instore_devfakes.simulator does: no public refresh
    partitions: set[int] | None = consumer.partitions_for_topic(PAYMENTS_COMPLETED.name)
    return partitions or None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gateway", default="http://127.0.0.1:8080", help="gateway base URL (default: %(default)s)")
    parser.add_argument("--mock", default="http://127.0.0.1:8989", help="commercetools mock base URL (default: %(default)s)")
    parser.add_argument("--kafka", default="127.0.0.1:29092", help="Kafka bootstrap server (default: %(default)s)")
    parser.add_argument("--timeout", type=float, default=90.0, help="seconds for the whole check (default: %(default)s)")
    args = parser.parse_args(argv)
    secret = os.environ.get("INSTORE_WEBHOOK_SECRET", "local-dev-webhook-secret")
    # stdout carries the verdict; the libraries' warnings go to stderr
    configure_logging("compose-smoke", os.environ.get("LOG_LEVEL", "WARNING"), json=False, stream=sys.stderr)
    try:
        summary = asyncio.run(smoke(args.gateway.rstrip("/"), args.mock.rstrip("/"), args.kafka, secret, args.timeout))
    except SmokeFailed as exc:
        print(f"compose smoke: FAILED: {exc}", file=sys.stderr)
        return 1
    print(f"compose smoke: OK: {summary}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
