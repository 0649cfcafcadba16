"""A clock for unit tests: time moves only when someone sleeps (no real waiting)."""

from __future__ import annotations

import asyncio


class FakeClock:
    """:class:`instore_shared.clock.Clock` whose ``sleep`` advances both clocks at once (and yields)."""

    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.wall = now
        self.mono = 0.0
        self.slept: list[float] = []

    def now(self) -> float:
        return self.wall

    def monotonic(self) -> float:
        return self.mono

    def advance(self, seconds: float) -> None:
        """Move time forward without sleeping."""
        self.wall += seconds
        self.mono += seconds

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.advance(seconds)
        await asyncio.sleep(0)
