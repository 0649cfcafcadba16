"""Print the messages of a topic: ``python -m instore_shared.kafka.events --topic T`` (``make events``).

For looking at what the services published, e.g. ``commerce.payments.completed.v1``: one
line per message — partition, offset, key, the value as received (JSON on our topics). It
reads every partition from the beginning without a consumer group (nothing is committed,
nobody else's offsets move) and stops when no message came for ``--idle-timeout`` seconds.
Kafka connection and security come from the environment (``KAFKA_BOOTSTRAP_SERVERS`` …).
Exit codes: 0 done, 1 Kafka failed or the topic is missing, 2 bad arguments or settings.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition


async def show(bootstrap: str, topic: str, idle_timeout: float, client_options: dict[str, Any]) -> int:
    """Print ``topic``'s messages until it is quiet for ``idle_timeout`` s; returns how many were printed.

    Raises ``LookupError`` when the topic does not exist.
    """
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False, **client_options)
    await consumer.start()
    try:
        partitions = consumer.partitions_for_topic(topic)
        if not partitions:
            await consumer._client.force_metadata_update()
            partitions = consumer.partitions_for_topic(topic)
        if not partitions:
            raise LookupError(f"topic {topic} does not exist")
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        printed, quiet_since = 0, time.monotonic()
        while time.monotonic() - quiet_since < idle_timeout:
            for records in (await consumer.getmany(timeout_ms=200)).values():
                for r in records:
                    key = r.key.decode(errors="replace") if r.key else "-"
                    value = r.value.decode(errors="replace") if r.value else ""
                    print(f"p{r.partition} @{r.offset} key={key} {value}", flush=True)
                    printed += 1
                    quiet_since = time.monotonic()
        return printed
    finally:
        await consumer.stop()


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the arguments, print the topic; returns the exit code."""
    from instore_shared.logging import configure_logging
    from instore_shared.settings import BaseServiceSettings, load_settings

    parser = argparse.ArgumentParser(prog="python -m instore_shared.kafka.events", description=__doc__.split("\n\n")[0])
    parser.add_argument("--topic", required=True, help="e.g. commerce.refunds.completed.v1")
    parser.add_argument("--idle-timeout", type=float, default=3.0, help="stop after this many quiet seconds (default 3)")
    args = parser.parse_args(argv)
    settings = load_settings(BaseServiceSettings, "events")
    configure_logging("events", "WARNING", json=False, stream=sys.stderr)
    try:
        count = asyncio.run(
            show(settings.kafka_bootstrap_servers, args.topic, args.idle_timeout, settings.kafka_client_options())
        )
    except LookupError as exc:
        print(f"events: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:
        print(f"events: Kafka failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    print(f"events: {count} messages on {args.topic}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
