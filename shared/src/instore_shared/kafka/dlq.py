"""Dead-letter topics: how a consumer parks a message it cannot process, and how it goes back.

Architecture principle 4: a consumer that still cannot process a message after bounded
retries publishes it to ``<topic>.dlq`` with the **original** value bytes, key and headers,
plus the ``dlq-*`` headers below naming the error (:func:`dead_letter_headers`), and only
then commits the source offset. After the fix, :func:`replay` (or
``instore-integration replay-dlq --topic <topic>.dlq``, ``make replay-dlq``)
re-publishes every dead letter to its source topic.

Replay is at-least-once: the DLQ offset is committed only after the source topic
acknowledged the re-published message, so a crash in between re-publishes that message
once more on the next run (consumers are idempotent), and nothing is ever lost.
No payload is ever logged or printed, only offsets, topics and error reasons.
"""

from __future__ import annotations

import asyncio
import re
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from instore_shared.kafka.topics import DLQ_SUFFIX as DLQ_SUFFIX  # re-exported: defined with the registry
from instore_shared.logging import get_logger

log = get_logger(__name__)


DLQ_PREFIX = "dlq-"
"""Every header this module sets starts with this."""

ERROR_REASON = "dlq-error-reason"
"""Machine-readable slug of why the message failed, e.g. ``invalid-json`` (``[a-z0-9][a-z0-9._-]*``)."""

ERROR_DETAIL = "dlq-error-detail"
"""One human-readable sentence about the failure, at most 500 characters, never the payload."""

ATTEMPTS = "dlq-attempts"
"""How many times the consumer tried the message before giving up (decimal integer >= 1)."""

SOURCE_TOPIC = "dlq-source-topic"
"""The topic the message was read from, and where :func:`replay` puts it back."""

SOURCE_PARTITION = "dlq-source-partition"
"""The partition of the source topic the message was read from (decimal integer)."""

SOURCE_OFFSET = "dlq-source-offset"
"""The offset of the message in its source partition (decimal integer)."""

FAILED_AT = "dlq-failed-at"
"""RFC 3339 UTC time the consumer gave up, e.g. ``2025-01-31T12:00:00.123Z``."""

CONSUMER_GROUP = "dlq-consumer-group"
"""The consumer group that could not process the message."""

REPLAYED_FROM_OFFSET = "dlq-replayed-from-offset"
"""Set by :func:`replay` on the re-published message: the dead letter's offset in the DLQ topic."""

REPLAY_COUNT = "dlq-replay-count"
"""Set by :func:`replay`: how many times this message went back from a DLQ (decimal integer >= 1)."""

DEAD_LETTER_HEADERS: tuple[str, ...] = (
    ERROR_REASON,
    ERROR_DETAIL,
    ATTEMPTS,
    SOURCE_TOPIC,
    SOURCE_PARTITION,
    SOURCE_OFFSET,
    FAILED_AT,
    CONSUMER_GROUP,
)
"""The headers :func:`dead_letter_headers` sets (a previous round's values are replaced)."""

MAX_DETAIL_CHARS = 500
"""Longest ``dlq-error-detail`` value, in characters."""

_SLUG = re.compile(r"[a-z0-9][a-z0-9._-]*")


_TOPIC_APPEAR_SECONDS = 5.0
"""How long :func:`replay` waits for a topic to show up in the cluster's metadata before it is missing."""


def dlq_topic(topic: str) -> str:
    """The dead-letter topic of ``topic``: ``topic + ".dlq"``.

    Raises :class:`ValueError` for an empty name or one that already is a DLQ topic (a
    dead letter's dead letter would hide the first failure).
    """
    if not topic:
        raise ValueError("topic name is empty")
    if topic.endswith(DLQ_SUFFIX):
        raise ValueError(f"{topic!r} already is a dead-letter topic")
    return topic + DLQ_SUFFIX


def _utc_now_rfc3339() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _one_line(detail: str) -> str:
    text = " ".join(detail.split())
    if len(text) > MAX_DETAIL_CHARS:
        text = text[: MAX_DETAIL_CHARS - 1] + "…"
    return text


def dead_letter_headers(
    original: Mapping[str, str],
    *,
    reason: str,
    detail: str,
    attempts: int,
    source_topic: str,
    partition: int,
    offset: int,
    consumer_group: str,
    failed_at: datetime | None = None,
) -> dict[str, str]:
    """The headers of a dead letter: ``original`` plus the ``dlq-*`` headers naming the error.

    Args:
        original: the failed message's headers, decoded (kept as they are, in order).
        reason: machine-readable slug, ``[a-z0-9][a-z0-9._-]*`` (e.g. ``invalid-json``).
        detail: one sentence about the failure; whitespace is collapsed to single spaces
            and it is truncated to :data:`MAX_DETAIL_CHARS` characters. Never put the
            payload (or a secret) in it.
        attempts: how often the message was tried, >= 1.
        source_topic, partition, offset: where the message was read.
        consumer_group: the group that gave up.
        failed_at: when it gave up (aware datetime; default now); written as RFC 3339 UTC.

    Returns a new dict; the :data:`DEAD_LETTER_HEADERS` win over same-named originals (a
    message that fails again after a replay carries this round's error, not the last
    one's), while :data:`REPLAY_COUNT` and :data:`REPLAYED_FROM_OFFSET` from a replay are
    kept so the next replay counts on.

    Raises :class:`ValueError` for a reason that is not a slug, ``attempts < 1``, a
    negative partition or offset, or a naive ``failed_at``.
    """
    if not _SLUG.fullmatch(reason):
        raise ValueError(f"reason must be a slug like 'invalid-json', not {reason!r}")
    if attempts < 1:
        raise ValueError(f"attempts must be >= 1, not {attempts}")
    if partition < 0 or offset < 0:
        raise ValueError("partition and offset must be >= 0")
    if failed_at is not None and failed_at.tzinfo is None:
        raise ValueError("failed_at must be timezone-aware")
    when = (
        failed_at.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        if failed_at is not None
        else _utc_now_rfc3339()
    )
    headers = {k: v for k, v in original.items() if k not in DEAD_LETTER_HEADERS}
    headers.update(
        {
            ERROR_REASON: reason,
            ERROR_DETAIL: _one_line(detail),
            ATTEMPTS: str(attempts),
            SOURCE_TOPIC: source_topic,
            SOURCE_PARTITION: str(partition),
            SOURCE_OFFSET: str(offset),
            FAILED_AT: when,
            CONSUMER_GROUP: consumer_group,
        }
    )
    return headers


# -- replay ------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class ReplayEntry:
    """One dead letter :func:`replay` saw: where it sat, where it goes, why it failed.

    ``action`` is ``replayed`` (re-published and committed), ``would-replay`` (dry run) or
    ``skipped`` (no ``dlq-source-topic`` header; committed past, not re-published; in a
    dry run nothing is committed). ``source_topic`` is ``""`` when the header is missing,
    ``reason`` is ``"unknown"`` when ``dlq-error-reason`` is.
    """

    partition: int
    offset: int
    source_topic: str
    reason: str
    action: str

    def line(self) -> str:
        """One printable line (never the payload): ``<action> <partition>:<offset> -> <topic> reason=<reason>``."""
        return f"{self.action} {self.partition}:{self.offset} -> {self.source_topic or '-'} reason={self.reason}"


@dataclass(slots=True)
class ReplayReport:
    """What :func:`replay` did.

    ``replayed``: dead letters re-published (in a dry run: that would be); ``skipped``:
    dead letters without a source topic; ``by_reason``: ``dlq-error-reason`` → count over
    both; ``entries``: one :class:`ReplayEntry` per dead letter, in the order handled.
    """

    replayed: int = 0
    skipped: int = 0
    by_reason: dict[str, int] = field(default_factory=dict)
    dry_run: bool = False
    entries: list[ReplayEntry] = field(default_factory=list)

    def summary(self) -> str:
        """One line: ``replayed=N skipped=M dry_run=… by_reason=a:1,b:2``."""
        reasons = ",".join(f"{k}:{v}" for k, v in sorted(self.by_reason.items())) or "-"
        return f"replayed={self.replayed} skipped={self.skipped} dry_run={str(self.dry_run).lower()} by_reason={reasons}"


def _replay_headers(raw: Sequence[tuple[str, bytes]], dlq_offset: int) -> list[tuple[str, bytes]]:
    """The original headers (bytes untouched, order kept) without ``dlq-*``, plus the replay headers."""
    count = 0
    for key, value in raw:
        if key == REPLAY_COUNT:
            text = value.decode(errors="replace").strip()
            count = int(text) if text.isdigit() else 0
    kept = [(k, v) for k, v in raw if not k.startswith(DLQ_PREFIX)]
    return [*kept, (REPLAYED_FROM_OFFSET, str(dlq_offset).encode()), (REPLAY_COUNT, str(count + 1).encode())]


def _header(raw: Sequence[tuple[str, bytes]], name: str) -> str:
    value = ""
    for key, data in raw:
        if key == name:
            value = data.decode(errors="replace")
    return value


_JOIN_TIMEOUT = 30.0


async def _all_read(consumer: AIOKafkaConsumer, ends: Mapping[TopicPartition, int]) -> bool:
    """Whether the consumer's position on each partition it holds reached that partition's ``ends`` offset."""
    assigned = consumer.assignment()
    if not assigned:
        return False
    for tp in assigned:
        if await consumer.position(tp) < ends[tp]:
            return False
    return True


async def replay(
    bootstrap_servers: str,
    dlq: str,
    *,
    client_options: Mapping[str, Any] | None = None,
    max_messages: int | None = None,
    dry_run: bool = False,
    idle_timeout: float = 5.0,
    group_id: str = "dlq-replay",
    client_id: str = "instore-dlq-replay",
    on_entry: Callable[[ReplayEntry], None] | None = None,
) -> ReplayReport:
    """Re-publish the dead letters of topic ``dlq`` to their ``dlq-source-topic``.

    Reads ``dlq`` in consumer group ``group_id`` from its committed offsets (earliest when
    none). Each dead letter goes to its source topic with the same value bytes and key and
    its original headers (every ``dlq-*`` removed) plus ``dlq-replayed-from-offset`` (its
    DLQ offset) and ``dlq-replay-count`` (the incoming count + 1), through an idempotent
    ``acks=all`` producer; its DLQ offset is committed only after that send was
    acknowledged. A dead letter without ``dlq-source-topic`` is skipped (reported,
    committed past, not re-published).

    Only the dead letters present when the partitions were assigned are replayed: each
    partition is read up to its end offset of that moment. A dead letter written while the
    replay runs — e.g. the consumer dead-lettering a replayed message again because the
    cause persists — waits for the next run, so a replay always ends (it would otherwise
    replay its own new dead letters for ever).

    Args:
        bootstrap_servers: Kafka bootstrap servers, comma-separated.
        dlq: the dead-letter topic, e.g. ``instore.webhooks.v1.dlq``.
        client_options: more aiokafka keyword arguments, e.g. security
            (``BaseServiceSettings.kafka_client_options()``).
        max_messages: stop after this many dead letters (None: no limit).
        dry_run: only list what would be replayed: publish nothing, commit nothing.
        idle_timeout: stop when no dead letter arrived for this many seconds (counted
            from when the group assigned the partitions).
        group_id: the consumer group whose offsets record what was replayed.
        client_id: Kafka client id of the consumer and producer.
        on_entry: called with each :class:`ReplayEntry` as it is handled (e.g. to print it).

    Raises :class:`ValueError` for ``max_messages < 0`` or ``idle_timeout <= 0``,
    :class:`LookupError` when ``dlq`` does not exist, :class:`TimeoutError` when the group
    assigned no partition within 30 s, and aiokafka's errors when Kafka fails (what was
    committed before stays committed).
    """
    if max_messages is not None and max_messages < 0:
        raise ValueError("max_messages must be >= 0")
    if idle_timeout <= 0:
        raise ValueError("idle_timeout must be > 0")
    options = dict(client_options or {})
    report = ReplayReport(dry_run=dry_run)
    reasons: Counter[str] = Counter()
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap_servers,
        group_id=group_id,
        client_id=client_id,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        **options,
    )
    producer = (
        None
        if dry_run
        else AIOKafkaProducer(
            bootstrap_servers=bootstrap_servers,
            client_id=client_id,
            acks="all",
            enable_idempotence=True,
            **options,
        )
    )
    loop = asyncio.get_running_loop()
    try:
        await consumer.start()
        # A topic created a moment ago may not be in every broker's metadata yet (KRaft propagates it
        # asynchronously): ask again for a few seconds before calling it missing.
        appear_by = loop.time() + _TOPIC_APPEAR_SECONDS
        while dlq not in await consumer.topics():
            if loop.time() >= appear_by:
                raise LookupError(f"topic {dlq!r} does not exist")
            await asyncio.sleep(0.25)
        if producer is not None:
            await producer.start()
        consumer.subscribe([dlq])
        join_deadline = loop.time() + _JOIN_TIMEOUT
        last_seen: float | None = None  # loop time of the last message (or of the assignment)
        handled = 0
        # each partition's end offset when it was first assigned: the replay stops there
        ends: dict[TopicPartition, int] = {}
        while max_messages is None or handled < max_messages:
            if last_seen is None:
                if consumer.assignment():
                    last_seen = loop.time()
                elif loop.time() > join_deadline:
                    raise TimeoutError(f"consumer group {group_id!r} got no partition of {dlq!r} in {_JOIN_TIMEOUT} s")
            new = [tp for tp in consumer.assignment() if tp not in ends]
            if new:
                ends.update(await consumer.end_offsets(new))
            if ends and await _all_read(consumer, ends):
                break  # every dead letter present at the start was handled
            wait = 0.5 if last_seen is None else max(0.0, min(0.5, last_seen + idle_timeout - loop.time()))
            if last_seen is not None and wait <= 0:
                break
            limit = None if max_messages is None else max_messages - handled
            batches = await consumer.getmany(timeout_ms=int(wait * 1000), max_records=limit)
            if not any(batches.values()):
                continue
            unbounded = [tp for tp in batches if tp not in ends]  # assigned within this getmany
            if unbounded:
                ends.update(await consumer.end_offsets(unbounded))  # before this replay wrote anything
            last_seen = loop.time()
            sends: list[asyncio.Future[Any]] = []
            commits: dict[TopicPartition, int] = {}
            for tp, messages in batches.items():
                for msg in messages:
                    if msg.offset >= ends.get(tp, msg.offset + 1):
                        break  # written after the replay started: the next run's (not committed)
                    raw = list(msg.headers or ())
                    source = _header(raw, SOURCE_TOPIC)
                    reason = _header(raw, ERROR_REASON) or "unknown"
                    reasons[reason] += 1
                    handled += 1
                    if not source:
                        action = "skipped"
                        report.skipped += 1
                    else:
                        action = "would-replay" if dry_run else "replayed"
                        report.replayed += 1
                        if producer is not None:
                            sends.append(
                                await producer.send(source, msg.value, key=msg.key, headers=_replay_headers(raw, msg.offset))
                            )
                    commits[tp] = msg.offset + 1
                    entry = ReplayEntry(tp.partition, msg.offset, source, reason, action)
                    report.entries.append(entry)
                    if on_entry is not None:
                        on_entry(entry)
            if dry_run:
                continue
            await asyncio.gather(*sends)  # raises when any send was not acknowledged: nothing committed
            await consumer.commit(commits)
            log.debug("dlq.replayed", dlq=dlq, messages=sum(len(m) for m in batches.values()))
    finally:
        if producer is not None:
            await producer.stop()
        await consumer.stop()
    report.by_reason = dict(reasons)
    return report
