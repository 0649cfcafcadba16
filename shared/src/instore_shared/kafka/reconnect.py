"""Exponential, capped, jittered backoff between connection attempts to a Kafka broker, and one
log line per change of a broker's reachability.

Why our own code: aiokafka (0.14) has no reconnect backoff at all — no ``reconnect_backoff_ms``
(the Java client's setting), only ``retry_backoff_ms``, which some of its loops do not use: its
sender asks for new metadata at once whenever a partition's leader is unknown, every failed
connection forces a metadata refresh, and each refresh tries to connect again. With the broker
down, a refused connection fails in microseconds, so a process retries thousands of times a
second (measured: ~8,400 attempts/s across the services, ~294,000 "Unable connect" lines in
35 s) and, locally, sweeps the ephemeral port range. FastStream passes connection settings
through to aiokafka, so it cannot add what aiokafka lacks either.

:func:`install` wraps the one function every aiokafka client connects through
(``aiokafka.client.create_conn``): after a failed attempt to ``host:port`` the next attempt to
that address, from any client of the process, waits — 0.1 s doubling up to a cap (2 s), each
pause jittered to 50-100 % — and only one caller per pause tries; the others wait for the
next. A success clears it. Along the way it logs ``kafka.broker_unreachable`` once when an
address stops answering, ``kafka.broker_still_unreachable`` every
:data:`REMINDER_SECONDS` while it stays down (attempts so far), and ``kafka.broker_reconnected``
once it answers again (how long it was down). aiokafka's own per-attempt lines are thinned by
the rate-limit filter in :func:`instore_shared.logging.configure_logging`.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass
from typing import Any

import aiokafka.client

from instore_shared.logging import get_logger

log = get_logger(__name__)

INITIAL_SECONDS = 0.1
"""Pause after the first failed attempt to an address."""

MAX_SECONDS = 2.0
"""Longest pause between two attempts to one address (the cap; the Java client's default is 1 s)."""

REMINDER_SECONDS = 30.0
"""While an address stays unreachable, one reminder line this often."""


@dataclass
class _Address:
    failures: int = 0
    next_attempt: float = 0.0
    down_since: float | None = None
    last_reminder: float = 0.0
    attempts_while_down: int = 0
    ever_connected: bool = False


_state: dict[tuple[str, int], _Address] = {}
_original: Any = None
attempts = 0
"""Connection attempts made by this process since :func:`install` (for measurements and tests)."""


def _pause(failures: int) -> float:
    delay = min(MAX_SECONDS, INITIAL_SECONDS * 2 ** max(0, failures - 1))
    return random.uniform(delay / 2, delay)


async def _create_conn(host: str, port: int, **kwargs: Any) -> Any:
    global attempts
    address = _state.setdefault((host, port), _Address())
    while (wait := address.next_attempt - time.monotonic()) > 0:  # noqa: ASYNC110 - a point in time, not an event
        await asyncio.sleep(wait)
    if address.failures:  # claim this pause's one attempt: others wait for the next
        address.next_attempt = time.monotonic() + _pause(address.failures)
    attempts += 1
    try:
        conn = await _original(host, port, **kwargs)
    except BaseException as exc:
        if not isinstance(exc, asyncio.CancelledError):
            _failed(host, port, address, exc)
        raise
    _succeeded(host, port, address)
    return conn


def _failed(host: str, port: int, address: _Address, exc: BaseException) -> None:
    now = time.monotonic()
    address.failures += 1
    address.next_attempt = now + _pause(address.failures)
    address.attempts_while_down += 1
    if address.down_since is None:
        address.down_since = address.last_reminder = now
        log.warning(
            "kafka.broker_unreachable",
            broker=f"{host}:{port}",
            error=type(exc).__name__,
            detail=str(exc)[:200],
            was_connected=address.ever_connected,
        )
    elif now - address.last_reminder >= REMINDER_SECONDS:
        address.last_reminder = now
        log.warning(
            "kafka.broker_still_unreachable",
            broker=f"{host}:{port}",
            error=type(exc).__name__,
            down_for_s=round(now - address.down_since, 1),
            attempts=address.attempts_while_down,
            retry_in_s=round(address.next_attempt - now, 2),
        )


def _succeeded(host: str, port: int, address: _Address) -> None:
    if address.down_since is not None:
        log.info(
            "kafka.broker_reconnected",
            broker=f"{host}:{port}",
            down_for_s=round(time.monotonic() - address.down_since, 1),
            attempts=address.attempts_while_down,
        )
    elif not address.ever_connected:
        log.info("kafka.broker_connected", broker=f"{host}:{port}")
    address.ever_connected = True
    address.failures = 0
    address.next_attempt = 0.0
    address.down_since = None
    address.attempts_while_down = 0


def install() -> None:
    """Route every aiokafka connection attempt of this process through the backoff (idempotent)."""
    global _original
    if _original is None:
        _original = aiokafka.client.create_conn
        aiokafka.client.create_conn = _create_conn
