"""Dead-letter replay against a real broker: what goes back, what is committed, the CLI."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from instore_shared.kafka.admin import ensure_topics
from instore_shared.kafka.dlq import dead_letter_headers, dlq_topic, replay
from instore_shared.kafka.headers import encode_headers
from instore_shared.kafka.topics import WEBHOOKS, WEBHOOKS_DLQ, Topic, TopicNames
from tests.support.processes import REPO_ROOT, Kafka

pytestmark = pytest.mark.integration

PARTITIONS = 3
IDLE = 1.5


async def _topics(kafka: Kafka) -> tuple[str, str]:
    """A fresh source topic and its DLQ."""
    source = f"test.src.{uuid.uuid4()}"
    dead = dlq_topic(source)
    await ensure_topics(
        kafka.bootstrap_servers, [Topic(name=n, key="k", schema="s", description="d") for n in (source, dead)], PARTITIONS, 1
    )
    return source, dead


def _letters(source: str, n: int = 3) -> list[tuple[bytes, bytes, list[tuple[str, bytes]]]]:
    """``n`` dead letters: (value, key, headers), originals plus dlq-* pointing at ``source``."""
    letters = []
    for i in range(n):
        original = {"webhook-id": f"w-{i}", "content-type": "application/json"}
        headers = dead_letter_headers(
            original,
            reason="invalid-json" if i else "upstream-5xx",
            detail=f"failure {i}",
            attempts=3,
            source_topic=source,
            partition=i % PARTITIONS,
            offset=100 + i,
            consumer_group="test-group",
        )
        letters.append((f'{{"n": {i}, "secret-payload": true}}'.encode(), f"key-{i}".encode(), encode_headers(headers)))
    return letters


async def _publish(kafka: Kafka, topic: str, letters: list[tuple[bytes, bytes | None, list[tuple[str, bytes]]]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap_servers, acks="all")
    await producer.start()
    try:
        for value, key, headers in letters:
            await producer.send_and_wait(topic, value, key=key, headers=headers)
    finally:
        await producer.stop()


async def _read_all(kafka: Kafka, topic: str) -> list[tuple[bytes, bytes | None, list[tuple[str, bytes]]]]:
    """Every message of ``topic`` (no consumer group): (value, key, headers)."""
    # earliest: the background reset assign() starts must not put the position at the end before seek_to_beginning
    consumer = AIOKafkaConsumer(bootstrap_servers=kafka.bootstrap_servers, enable_auto_commit=False, auto_offset_reset="earliest")
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        found = []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10
        while [tp for tp in partitions if await consumer.position(tp) < ends[tp]]:
            assert loop.time() < deadline, f"could not read {topic} to its end"
            for messages in (await consumer.getmany(timeout_ms=200)).values():
                found += [(m.value, m.key, list(m.headers)) for m in messages]
        return found
    finally:
        await consumer.stop()


async def test_replay_republishes_original_bytes_key_and_headers(kafka: Kafka) -> None:
    source, dead = await _topics(kafka)
    letters = _letters(source)
    await _publish(kafka, dead, letters)
    group = f"replay-{uuid.uuid4()}"

    report = await replay(kafka.bootstrap_servers, dead, idle_timeout=IDLE, group_id=group)

    assert (report.replayed, report.skipped) == (3, 0)
    assert report.by_reason == {"invalid-json": 2, "upstream-5xx": 1}
    assert [e.action for e in report.entries] == ["replayed"] * 3
    replayed = sorted(await _read_all(kafka, source))
    assert len(replayed) == 3
    for (value, key, headers), (sent_value, sent_key, sent_headers) in zip(replayed, sorted(letters), strict=True):
        assert (value, key) == (sent_value, sent_key)
        originals = [(k, v) for k, v in sent_headers if not k.startswith("dlq-")]
        assert headers[:2] == originals == [("webhook-id", headers[0][1]), ("content-type", b"application/json")]
        extra = dict(headers[2:])
        assert set(extra) == {"dlq-replayed-from-offset", "dlq-replay-count"}
        assert extra["dlq-replay-count"] == b"1"
        assert extra["dlq-replayed-from-offset"].isdigit()

    again = await replay(kafka.bootstrap_servers, dead, idle_timeout=IDLE, group_id=group)
    assert (again.replayed, again.skipped, again.entries) == (0, 0, [])
    assert len(await _read_all(kafka, source)) == 3


async def test_replay_count_counts_on(kafka: Kafka) -> None:
    source, dead = await _topics(kafka)
    value, key, headers = _letters(source, 1)[0]
    await _publish(kafka, dead, [(value, key, [*headers, ("dlq-replay-count", b"2")])])
    report = await replay(kafka.bootstrap_servers, dead, idle_timeout=IDLE, group_id=f"replay-{uuid.uuid4()}")
    assert report.replayed == 1
    [(_, _, out)] = await _read_all(kafka, source)
    assert dict(out)["dlq-replay-count"] == b"3"


async def test_a_replay_ends_at_the_dead_letters_present_when_it_started(kafka: Kafka) -> None:
    """A replayed message that is dead-lettered again (the cause persists) waits for the next run.

    The letters name the dead-letter topic itself as their source: each replay writes a new
    dead letter, as a consumer would while the cause is not fixed. Without the bound the
    replay would chase its own output until ``max_messages``; with it, a long idle timeout
    never comes into play.
    """
    _, dead = await _topics(kafka)
    await _publish(kafka, dead, _letters(dead, 3))
    group = f"replay-{uuid.uuid4()}"
    loop = asyncio.get_running_loop()
    started = loop.time()

    report = await replay(kafka.bootstrap_servers, dead, idle_timeout=60, group_id=group, max_messages=50)

    assert report.replayed == 3
    assert loop.time() - started < 30  # ended at the snapshot, not by the 60 s idle timeout
    assert len(await _read_all(kafka, dead)) == 6  # the 3 letters and their 3 re-dead-lettered copies
    # the next run reads the copies (written after the first one started); they carry no
    # dlq-* headers any more, so they are skipped rather than replayed again
    second = await replay(kafka.bootstrap_servers, dead, idle_timeout=60, group_id=group, max_messages=50)
    assert (second.replayed, second.skipped) == (0, 3)
    assert {(e.partition, e.offset) for e in second.entries}.isdisjoint({(e.partition, e.offset) for e in report.entries})


async def test_an_empty_dead_letter_topic_ends_without_waiting_for_the_idle_timeout(kafka: Kafka) -> None:
    _, dead = await _topics(kafka)
    loop = asyncio.get_running_loop()
    started = loop.time()
    report = await replay(kafka.bootstrap_servers, dead, idle_timeout=60, group_id=f"replay-{uuid.uuid4()}")
    assert (report.replayed, report.skipped) == (0, 0)
    assert loop.time() - started < 30


async def test_dry_run_publishes_and_commits_nothing(kafka: Kafka) -> None:
    source, dead = await _topics(kafka)
    await _publish(kafka, dead, _letters(source))
    group = f"replay-{uuid.uuid4()}"

    dry = await replay(kafka.bootstrap_servers, dead, dry_run=True, idle_timeout=IDLE, group_id=group)
    assert (dry.replayed, dry.skipped, dry.dry_run) == (3, 0, True)
    assert [e.action for e in dry.entries] == ["would-replay"] * 3
    assert await _read_all(kafka, source) == []

    real = await replay(kafka.bootstrap_servers, dead, idle_timeout=IDLE, group_id=group)
    assert real.replayed == 3
    assert len(await _read_all(kafka, source)) == 3


async def test_max_messages_stops_early_and_the_rest_stays(kafka: Kafka) -> None:
    source, dead = await _topics(kafka)
    await _publish(kafka, dead, _letters(source))
    group = f"replay-{uuid.uuid4()}"
    first = await replay(kafka.bootstrap_servers, dead, max_messages=2, idle_timeout=IDLE, group_id=group)
    assert first.replayed == 2
    rest = await replay(kafka.bootstrap_servers, dead, idle_timeout=IDLE, group_id=group)
    assert rest.replayed == 1
    assert len(await _read_all(kafka, source)) == 3


async def test_a_dead_letter_without_source_is_skipped(kafka: Kafka) -> None:
    source, dead = await _topics(kafka)
    good = _letters(source, 1)
    orphan = (b"orphan", b"key-x", [("webhook-id", b"w-x"), ("dlq-error-reason", b"invalid-json")])
    await _publish(kafka, dead, [*good, orphan])
    group = f"replay-{uuid.uuid4()}"

    report = await replay(kafka.bootstrap_servers, dead, idle_timeout=IDLE, group_id=group)
    assert (report.replayed, report.skipped) == (1, 1)
    skipped = [e for e in report.entries if e.action == "skipped"]
    assert len(skipped) == 1 and skipped[0].source_topic == "" and skipped[0].reason == "invalid-json"
    assert [v for v, _, _ in await _read_all(kafka, source)] == [good[0][0]]
    assert (await replay(kafka.bootstrap_servers, dead, idle_timeout=IDLE, group_id=group)).entries == []


async def test_a_missing_dlq_topic_raises(kafka: Kafka) -> None:
    with pytest.raises(LookupError):
        await replay(kafka.bootstrap_servers, f"test.none.{uuid.uuid4()}.dlq", idle_timeout=IDLE)


async def test_cli_replays_and_prints_a_summary(kafka: Kafka) -> None:
    """``instore-integration replay-dlq`` (the console script) under a fresh KAFKA_TOPIC_PREFIX."""
    prefix = f"test-{uuid.uuid4().hex[:8]}."
    names = TopicNames(prefix)
    source, dead = names.name(WEBHOOKS), names.name(WEBHOOKS_DLQ)
    await ensure_topics(kafka.bootstrap_servers, [names.topic(WEBHOOKS), names.topic(WEBHOOKS_DLQ)], PARTITIONS, 1)
    await _publish(kafka, dead, _letters(source))
    env = {k: v for k, v in os.environ.items() if not k.startswith("KAFKA_")}
    env.update(KAFKA_BOOTSTRAP_SERVERS=kafka.bootstrap_servers, KAFKA_TOPIC_PREFIX=prefix, LOG_JSON="true")
    script = shutil.which("instore-integration", path=str(Path(sys.executable).parent))
    assert script, "the instore-integration console script is not installed (uv sync)"
    args = [script, "replay-dlq", "--topic", WEBHOOKS_DLQ.name, "--idle-timeout", str(IDLE)]

    dry = await asyncio.to_thread(
        subprocess.run, [*args, "--dry-run"], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.count("would-replay ") == 3
    assert f"summary {dead}: replayed=3 skipped=0 dry_run=true" in dry.stdout
    assert f"{dead} in group {prefix}dlq-replay (dry run)" in dry.stderr

    real = await asyncio.to_thread(subprocess.run, args, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert real.returncode == 0, real.stderr
    lines = real.stdout.splitlines()
    assert sum(line.startswith("replayed ") and f"-> {source} reason=" in line for line in lines) == 3
    assert lines[-1] == f"summary {dead}: replayed=3 skipped=0 dry_run=false by_reason=invalid-json:2,upstream-5xx:1"
    assert re.search(r"replay-dlq: 3 dead letters in [0-9.]+ s \([0-9]+/s\)$", real.stderr.strip()), real.stderr
    assert "secret-payload" not in real.stdout + real.stderr + dry.stdout + dry.stderr
    assert len(await _read_all(kafka, source)) == 3

    missing = await asyncio.to_thread(
        subprocess.run,
        [*args[:3], "instore.payment-requests.v1.dlq", *args[4:]],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert missing.returncode == 1
    assert f"{prefix}instore.payment-requests.v1.dlq" in missing.stderr and "does not exist" in missing.stderr
