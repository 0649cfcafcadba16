"""The progress lines of the operator commands: counts and rate on stderr, at most one per interval."""

from __future__ import annotations

import io

from instore_shared.cli import Progress


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_progress_reports_counts_and_rate_at_most_once_per_interval_and_a_final_line() -> None:
    clock, out = Clock(), io.StringIO()
    progress = Progress("instore-integration replay-dlq", "dead letters", stream=out, interval=2.0, clock=clock)
    for _ in range(3):
        clock.now += 0.5
        progress.add()
    assert out.getvalue() == ""  # 1.5 s: not yet
    clock.now += 0.5
    progress.add(97)
    assert out.getvalue() == "instore-integration replay-dlq: 100 dead letters in 2.0 s (50/s)\n"
    clock.now += 1.0
    progress.add()
    assert out.getvalue().count("\n") == 1  # 1 s after the last report: quiet
    clock.now += 1.0
    progress.finish("interrupted")
    assert out.getvalue().splitlines()[-1] == "instore-integration replay-dlq: 101 dead letters in 4.0 s (25/s), interrupted"


def test_progress_of_nothing_is_a_zero_line() -> None:
    clock, out = Clock(), io.StringIO()
    Progress("instore-integration events", "messages", stream=out, clock=clock).finish("on dev.instore.webhooks.v1")
    assert out.getvalue() == "instore-integration events: 0 messages in 0.0 s (0/s), on dev.instore.webhooks.v1\n"
