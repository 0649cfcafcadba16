"""The clock port of the consumers' service functions: wall time, monotonic time and sleeping.

Wall time (``now``, epoch seconds) is what other processes can compare — an announcement
claim's age; monotonic time (``monotonic``, seconds) and ``sleep`` measure one message's
retry deadline. Tests pass a fake that advances on ``sleep`` without waiting.
"""

from __future__ import annotations

import asyncio
import time
from typing import Protocol


class Clock(Protocol):
    """Time as the service functions see it."""

    def now(self) -> float:
        """Wall-clock time in seconds since the epoch (UTC)."""
        ...

    def monotonic(self) -> float:
        """Monotonic seconds, for durations within this process."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds``."""
        ...


class SystemClock:
    """The real clock: ``time.time``, ``time.monotonic``, ``asyncio.sleep``."""

    def now(self) -> float:
        """Wall-clock seconds since the epoch."""
        return time.time()

    def monotonic(self) -> float:
        """``time.monotonic()``."""
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        """``asyncio.sleep(seconds)``."""
        await asyncio.sleep(seconds)
