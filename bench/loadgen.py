"""Open-loop load: requests sent at a fixed offered rate, each timed from when it was *scheduled*.

A closed loop (N clients, each sending when its previous answer came) slows down with the
server, so queueing hides in the load generator ("coordinated omission"). Here request i is
due at ``start + i / rate``, sent then whatever happened to the ones before, and its latency
runs from that due time to its answer: a server that falls behind shows it in the
percentiles. The sender itself is asyncio, one process; at a few hundred requests per second
it keeps to the schedule within ~1 ms (``late_ms`` reports how far behind it fell).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field


@dataclass
class OpenLoopRun:
    """What an open-loop run saw: latencies (ms, from the due time), answers by status, how late sends left."""

    latencies: list[float] = field(default_factory=list)
    statuses: dict[str, int] = field(default_factory=dict)
    late_ms_max: float = 0.0
    offered: int = 0
    seconds: float = 0.0


async def open_loop(send: Callable[[int], Awaitable[str]], rate: float, seconds: float) -> OpenLoopRun:
    """Call ``send(i)`` at ``rate`` per second for ``seconds``; ``send`` returns the answer's status text.

    Waits for every request sent to finish before returning."""
    run = OpenLoopRun()
    tasks: set[asyncio.Task[None]] = set()
    start = time.perf_counter() + 0.05
    total = int(rate * seconds)

    async def one(i: int, due: float) -> None:
        status = await send(i)
        run.latencies.append((time.perf_counter() - due) * 1000)
        run.statuses[status] = run.statuses.get(status, 0) + 1

    for i in range(total):
        due = start + i / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        else:
            run.late_ms_max = max(run.late_ms_max, -delay * 1000)
        task = asyncio.create_task(one(i, due))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    run.offered = total
    run.seconds = seconds
    if tasks:
        await asyncio.gather(*tasks)
    return run
