"""Announce an event once: a claim-then-publish marker in a Composable Commerce Custom Object.

Why a Custom Object: the consumers must remember "this event went out" somewhere that
survives restarts and is shared by every replica, and must never use a business field (an
Order's ``orderState``, ``paymentState``, ``shipmentState``, a return item's payment state)
for it — the retailer's OMS owns those. A Custom Object (container
:data:`CONTAINER`, one key per announcement) harms nothing, is versioned, and
``version: 0`` makes its creation a compare-and-set
(https://docs.commercetools.com/api/projects/custom-objects#create-or-update-customobject:
a draft's version must match the stored object's; 409 ``ConcurrentModification`` otherwise).

The protocol, per announcement key (:func:`announce_once`):

1. **Claim before publishing.** Create the marker with ``version: 0`` and value
   ``{"state": "claimed", "eventId", "claimedBy": "<topic>/<partition>/<offset>",
   "claimedAt"}`` — optimistically, without reading first: the first delivery (the common
   case) costs one call. A 409 means it exists: read it and decide.
2. **Decide.** ``published``: publish nothing. ``claimed`` by this very message (a
   redelivery after a crash or an eviction: same topic, partition, offset): go on. Claimed by
   another message less than the lease ago: publish nothing — that message is not committed
   before it published (consumers commit after their work), so the event is not lost.
   Claimed longer ago than the lease (its message was dead-lettered after claiming, e.g. an
   event Kafka can never take): take the claim over with a version-checked write.
3. **Publish once**, and wait for Kafka's acknowledgement. A failure raises out (the message
   is not committed and comes again; the claim is its own, so it publishes then).
4. **Mark** ``published`` with a version-checked write. This write alone is retried, with
   bounded jittered backoff, when Composable Commerce fails — the event is never published
   again for it. If it still fails, the claim stays; the next delivery that meets it after
   the lease publishes again.

So across processes and replicas: at most one handler publishes per decision. A crash (or
a marker write failing for longer than its budget) between steps 3 and 4 leaves a claim
that is not ``published``; whoever resumes it (the same message delivered again, or a
takeover) first looks in the event topic for the ``eventId`` since the claim's time and
publishes only when it is not there. What remains: a publish whose acknowledgement was lost
*and* that the broker stored only after that look — the event then repeats, with the same
deterministic ``eventId``, so consumers downstream can deduplicate it.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Protocol

import msgspec
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, wait_random_exponential

from instore_shared.clock import Clock
from instore_shared.commercetools.client import ApiResponse
from instore_shared.commercetools.errors import (
    AuthenticationFailed,
    ConcurrentModification,
    InvalidInput,
    NotFound,
    TransientError,
)
from instore_shared.kafka.consumer import Unprocessable
from instore_shared.logging import get_logger

log = get_logger(__name__)

CONTAINER = "instore-integration-announcements"
"""The Custom Object container of the announcement markers."""

KEY = re.compile(r"[-_~.a-zA-Z0-9]{1,256}")
"""What the API accepts as a Custom Object key."""

MAX_CONFLICTS = 5
"""Version conflicts on one marker before giving up (another writer keeps winning)."""


class MarkerStore(Protocol):
    """The Custom Object calls the markers need (``CommercetoolsClient`` implements them)."""

    async def get_custom_object(self, container: str, key: str) -> ApiResponse: ...
    async def put_custom_object(self, container: str, key: str, value: Any, version: int | None = None) -> ApiResponse: ...


class Verdict(enum.Enum):
    """What :func:`announce_once` did."""

    PUBLISHED = "published"
    """This call published the event (and, unless logged otherwise, marked it published)."""
    ALREADY_PUBLISHED = "already-published"
    """The marker says it was published: nothing was published."""
    CLAIMED_ELSEWHERE = "claimed-elsewhere"
    """Another message holds a live claim: nothing was published; that message publishes it."""


class _Value(msgspec.Struct, frozen=True):
    state: str
    eventId: str = ""
    claimedBy: str = ""
    claimedAt: str = ""
    publishedAt: str | None = None


class _Stored(msgspec.Struct, frozen=True):
    version: int
    value: _Value


@dataclass(frozen=True, slots=True)
class Claim:
    """A marker as read: its ``version`` and value."""

    version: int
    state: str
    event_id: str
    claimed_by: str
    claimed_at: float
    resumed_since: float | None = None
    """For a claim held before (this message's own, delivered again, or one taken over): since when
    the event may already be in Kafka (the earlier claim's time) — look before publishing again."""


_stored = msgspec.json.Decoder(_Stored)


def marker_key(*parts: str) -> str:
    """The marker key made of ``parts`` joined by ``.``. Raises ``ValueError`` for characters or a
    length the API refuses in a key (ids and event ids of Composable Commerce never have them)."""
    key = ".".join(parts)
    if not KEY.fullmatch(key):
        raise ValueError(f"not a Custom Object key: {key[:80]!r}")
    return key


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _epoch(iso: str) -> float:
    try:
        return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return 0.0  # unreadable: as old as can be, so a lease has expired


async def read_claim(store: MarkerStore, key: str) -> Claim | None:
    """The marker under ``key``, or None. Raises ``TransientError``; a refusal as :class:`Unprocessable`."""
    try:
        stored = _stored.decode((await store.get_custom_object(CONTAINER, key)).content)
    except NotFound:
        return None
    except (InvalidInput, AuthenticationFailed) as exc:
        raise Unprocessable("marker-refused", f"{CONTAINER}/{key}: {exc.status} {exc.code}") from exc
    except msgspec.ValidationError as exc:
        raise Unprocessable("unexpected-marker-shape", f"{CONTAINER}/{key}: {exc}") from exc
    v = stored.value
    return Claim(stored.version, v.state, v.eventId, v.claimedBy, _epoch(v.claimedAt))


async def claim(
    store: MarkerStore, key: str, *, event_id: str, claimed_by: str, clock: Clock, lease_seconds: float
) -> Verdict | Claim:
    """Steps 1–2 of the protocol (module doc): the claim this handler now holds, or the
    :class:`Verdict` to publish nothing.

    Raises ``TransientError`` (safe to repeat: nothing was published), :class:`Unprocessable`
    for a refusal of the marker or too many conflicts.
    """
    current: Claim | None = None
    for attempt in range(MAX_CONFLICTS):
        if attempt > 0:  # the optimistic create lost (or a takeover raced): look at what is there
            current = await read_claim(store, key)
            if current is not None and current.state == "published":
                return Verdict.ALREADY_PUBLISHED
            if current is not None and current.claimed_by == claimed_by:
                # our own claim: this message is being delivered again — it may have published before it stopped
                return replace(current, resumed_since=current.claimed_at)
            if current is not None and clock.now() - current.claimed_at < lease_seconds:
                log.info("announcement.claimed_elsewhere", key=key, claimed_by=current.claimed_by)
                return Verdict.CLAIMED_ELSEWHERE
            if current is not None:
                log.warning(
                    "announcement.claim_taken_over",
                    key=key,
                    claimed_by=current.claimed_by,
                    age_s=round(clock.now() - current.claimed_at, 1),
                )
        value = {"state": "claimed", "eventId": event_id, "claimedBy": claimed_by, "claimedAt": _iso(clock.now())}
        try:
            written = await store.put_custom_object(CONTAINER, key, value, current.version if current else 0)
        except ConcurrentModification:
            continue  # it exists (claimed or published, by us or another handler): read it
        except (InvalidInput, AuthenticationFailed) as exc:
            raise Unprocessable("marker-refused", f"{CONTAINER}/{key}: {exc.status} {exc.code}") from exc
        return Claim(
            written.json()["version"],
            "claimed",
            event_id,
            claimed_by,
            clock.now(),
            resumed_since=current.claimed_at if current is not None else None,
        )
    raise Unprocessable("too-many-conflicts", f"marker {CONTAINER}/{key} kept changing")


async def mark_published(store: MarkerStore, key: str, held: Claim, *, clock: Clock, budget_seconds: float) -> bool:
    """Step 4: set the marker ``published`` (version-checked); retry this write alone on
    ``TransientError`` with jittered backoff (0.2 s doubling to 5 s) for ``budget_seconds``,
    and re-read on a conflict. Returns False — logged — when it could not be written: the
    event is out; a later delivery may repeat it, with the same ``eventId``.
    """
    started = clock.monotonic()
    version = held.version
    value = {
        "state": "published",
        "eventId": held.event_id,
        "claimedBy": held.claimed_by,
        "claimedAt": _iso(held.claimed_at),
        "publishedAt": _iso(clock.now()),
    }
    backoff = wait_random_exponential(multiplier=0.2, max=5)

    def left() -> float:
        return max(0.0, budget_seconds - (clock.monotonic() - started))

    def before_sleep(state: RetryCallState) -> None:
        log.warning("announcement.mark_retrying", key=key, attempt=state.attempt_number, wait_s=round(state.upcoming_sleep, 2))

    for _ in range(MAX_CONFLICTS):
        try:
            async for attempt in AsyncRetrying(
                stop=lambda _s: left() <= 0,
                wait=lambda s: min(backoff(s), left()),
                sleep=clock.sleep,
                retry=retry_if_exception_type(TransientError),
                before_sleep=before_sleep,
                reraise=True,
            ):
                with attempt:
                    await store.put_custom_object(CONTAINER, key, value, version)
            return True
        except ConcurrentModification:
            # Taken over meanwhile (our claim outlived its lease): it is published all the same.
            try:
                current = await read_claim(store, key)
            except (TransientError, Unprocessable):
                break
            if current is None or current.state == "published":
                return current is not None
            version = current.version
        except (TransientError, InvalidInput, AuthenticationFailed, NotFound) as exc:
            log.error("announcement.mark_failed", key=key, event_id=held.event_id, error=str(exc)[:200])
            return False
    log.error("announcement.mark_failed", key=key, event_id=held.event_id, error="too many conflicts")
    return False


async def announce_once(
    store: MarkerStore,
    key: str,
    *,
    event_id: str,
    claimed_by: str,
    publish: Callable[[], Awaitable[None]],
    clock: Clock,
    lease_seconds: float,
    claim_retry: Callable[[Callable[[], Awaitable[Verdict | Claim]]], Awaitable[Verdict | Claim]],
    mark_budget_seconds: float,
    find_published: Callable[[float], Awaitable[bool]] | None = None,
) -> Verdict:
    """Publish the event ``event_id`` at most once per decision (module doc).

    ``claim_retry`` runs the claim step with the message's retries (e.g. ``retry_transient``
    with its deadline); ``publish`` is called at most once and its errors propagate;
    ``mark_budget_seconds`` bounds the retries of the marker write alone.

    ``find_published(since)`` (epoch seconds) answers whether the event is already in Kafka; it
    is asked only when the claim was held before — a redelivery after a crash between publishing
    and marking, or a claim taken over — so such a crash does not repeat the event (the fault
    suite's kills found it with a realistic 300 ms marker write: 5 of 10 Orders announced twice).
    Its errors propagate (the message is not committed and comes again).
    """
    held = await claim_retry(
        lambda: claim(store, key, event_id=event_id, claimed_by=claimed_by, clock=clock, lease_seconds=lease_seconds)
    )
    if isinstance(held, Verdict):
        return held
    if held.resumed_since is not None and find_published is not None and await find_published(held.resumed_since):
        log.info("announcement.found_published", key=key, event_id=event_id)
    else:
        await publish()
    await mark_published(store, key, held, clock=clock, budget_seconds=mark_budget_seconds)
    return Verdict.PUBLISHED
