"""Dead-letter headers and topic names (no Kafka)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from instore_shared.kafka import dlq
from instore_shared.kafka.dlq import dead_letter_headers, dlq_topic
from instore_shared.kafka.topics import ALL_TOPICS, WEBHOOKS, WEBHOOKS_DLQ


def _headers(original: dict[str, str], **overrides: object) -> dict[str, str]:
    args: dict[str, object] = dict(
        reason="invalid-json",
        detail="Body is not JSON.",
        attempts=3,
        source_topic="instore.webhooks.v1",
        partition=2,
        offset=41,
        consumer_group="order-finalization",
    )
    args.update(overrides)
    return dead_letter_headers(original, **args)  # type: ignore[arg-type]


def test_dlq_topic() -> None:
    assert dlq.DLQ_SUFFIX == ".dlq"
    assert dlq_topic("instore.webhooks.v1") == "instore.webhooks.v1.dlq"
    assert dlq_topic(WEBHOOKS.name) == WEBHOOKS_DLQ.name
    assert ALL_TOPICS.index(WEBHOOKS_DLQ) == ALL_TOPICS.index(WEBHOOKS) + 1
    with pytest.raises(ValueError):
        dlq_topic("instore.webhooks.v1.dlq")
    with pytest.raises(ValueError):
        dlq_topic("")


def test_header_names() -> None:
    assert (
        dlq.ERROR_REASON,
        dlq.ERROR_DETAIL,
        dlq.ATTEMPTS,
        dlq.SOURCE_TOPIC,
        dlq.SOURCE_PARTITION,
        dlq.SOURCE_OFFSET,
        dlq.FAILED_AT,
        dlq.CONSUMER_GROUP,
    ) == (
        "dlq-error-reason",
        "dlq-error-detail",
        "dlq-attempts",
        "dlq-source-topic",
        "dlq-source-partition",
        "dlq-source-offset",
        "dlq-failed-at",
        "dlq-consumer-group",
    )


def test_originals_are_kept_and_dlq_headers_added() -> None:
    original = {"webhook-id": "w-1", "content-type": "application/json"}
    headers = _headers(original, failed_at=datetime(2025, 1, 31, 13, 0, 0, 123000, tzinfo=timezone(timedelta(hours=1))))
    assert original == {"webhook-id": "w-1", "content-type": "application/json"}  # not mutated
    assert headers == {
        "webhook-id": "w-1",
        "content-type": "application/json",
        "dlq-error-reason": "invalid-json",
        "dlq-error-detail": "Body is not JSON.",
        "dlq-attempts": "3",
        "dlq-source-topic": "instore.webhooks.v1",
        "dlq-source-partition": "2",
        "dlq-source-offset": "41",
        "dlq-failed-at": "2025-01-31T12:00:00.123Z",
        "dlq-consumer-group": "order-finalization",
    }


def test_failed_at_defaults_to_now_in_utc() -> None:
    before = datetime.now(UTC)
    stamp = _headers({})["dlq-failed-at"]
    assert stamp.endswith("Z")
    parsed = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    assert before - timedelta(seconds=1) <= parsed <= datetime.now(UTC) + timedelta(seconds=1)


def test_a_second_round_replaces_the_dlq_headers_and_keeps_the_replay_count() -> None:
    first = _headers({"webhook-id": "w-1"})
    replayed = {k: v for k, v in first.items() if not k.startswith("dlq-")}
    replayed |= {"dlq-replay-count": "1", "dlq-replayed-from-offset": "7", "dlq-error-reason": "stale"}
    second = _headers(replayed, reason="upstream-5xx", detail="Commerce answered 503.", attempts=5, offset=99)
    assert second["dlq-error-reason"] == "upstream-5xx"
    assert second["dlq-error-detail"] == "Commerce answered 503."
    assert second["dlq-attempts"] == "5"
    assert second["dlq-source-offset"] == "99"
    assert second["dlq-replay-count"] == "1"
    assert second["webhook-id"] == "w-1"
    assert list(second).count("dlq-error-reason") == 1


def test_detail_is_one_line_and_truncated() -> None:
    headers = _headers({}, detail="line one\nline   two " + "x" * 1000)
    detail = headers["dlq-error-detail"]
    assert len(detail) == dlq.MAX_DETAIL_CHARS == 500
    assert detail.startswith("line one line two xxx")
    assert detail.endswith("…")
    assert "\n" not in detail
    assert _headers({}, detail="x" * 500)["dlq-error-detail"] == "x" * 500


@pytest.mark.parametrize(
    "bad",
    [
        {"reason": "Invalid JSON"},
        {"reason": ""},
        {"attempts": 0},
        {"partition": -1},
        {"offset": -1},
        {"failed_at": datetime(2025, 1, 1)},
    ],
)
def test_bad_arguments_raise(bad: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        _headers({}, **bad)


def test_replay_headers_strip_dlq_and_count_on() -> None:
    raw = [("webhook-id", b"w-1"), ("dlq-error-reason", b"x"), ("bin", b"\xff\x00"), ("dlq-replay-count", b"2")]
    assert dlq._replay_headers(raw, 17) == [
        ("webhook-id", b"w-1"),
        ("bin", b"\xff\x00"),
        ("dlq-replayed-from-offset", b"17"),
        ("dlq-replay-count", b"3"),
    ]
    assert dlq._replay_headers([], 0)[-1] == ("dlq-replay-count", b"1")
