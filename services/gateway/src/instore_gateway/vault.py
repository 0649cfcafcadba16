"""The token vault: InStore user access tokens kept under random user keys until they expire.

After a colleague logged in, the gateway gets an InStore user access token, generates a
random URL-safe *user key* and puts the token into the vault under it; InStore later
calls ``GET /instore/callbacks/tokens/{userKey}`` and the gateway answers from the vault.

Two backends, chosen by ``TOKEN_VAULT_BACKEND`` (:func:`create_vault`):

- :class:`InMemoryTokenVault` — a dict in this process. For one replica and for tests:
  a second gateway replica does not see its tokens, and a restart forgets them.
- :class:`RedisTokenVault` — Redis shared by every replica. The Redis key is
  ``prefix + sha256(user key)`` (the user key is never stored in clear); the value is the
  token encrypted with Fernet (AES-128-CBC + HMAC-SHA256) under the keys of
  ``TOKEN_VAULT_ENCRYPTION_KEYS`` (the first encrypts, all decrypt: rotation); Redis
  expires the entry when the token expires.

Times are Unix seconds (floats) throughout. A token is valid while ``now < expires_at``.
"""

from __future__ import annotations

import asyncio
import hashlib
import heapq
import math
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import msgspec
from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import RedisError

from instore_shared import metrics
from instore_shared.logging import get_logger

if TYPE_CHECKING:
    from instore_gateway.settings import GatewaySettings

log = get_logger(__name__)


class StoredToken(msgspec.Struct, frozen=True):
    """An InStore user access token and whom it belongs to.

    Attributes:
        access_token: the bearer token InStore gets back (a secret).
        expires_at: when the token expires, Unix seconds; the vault forgets it then.
        user_id: the InStore user (colleague) id.
        location_id: the InStore location the colleague logged in at.
        workstation_id: the InStore workstation the colleague logged in at.
    """

    access_token: str
    expires_at: float
    user_id: str
    location_id: str
    workstation_id: str

    def __repr__(self) -> str:  # the access token never reaches a log line or a traceback
        return (
            f"StoredToken(access_token='**********', expires_at={self.expires_at!r}, user_id={self.user_id!r}, "
            f"location_id={self.location_id!r}, workstation_id={self.workstation_id!r})"
        )

    __str__ = __repr__


class VaultUnavailable(Exception):
    """The vault's store (Redis) cannot be reached or failed; the caller should answer 503.

    The message names the failure's class only — never the Redis URL (it may hold a
    password), a user key or a token.
    """


@runtime_checkable
class TokenVault(Protocol):
    """Where user access tokens wait, under their user keys, until InStore fetches them."""

    async def put(self, user_key: str, token: StoredToken) -> None:
        """Keep ``token`` under ``user_key`` until ``token.expires_at`` (replacing any earlier one).

        A token already expired (``expires_at <= now``) is not stored.
        Raises :class:`VaultUnavailable` when the store cannot be reached.
        """
        ...

    async def get(self, user_key: str) -> StoredToken | None:
        """The token under ``user_key``; None when unknown, expired, or unreadable.

        Raises :class:`VaultUnavailable` when the store cannot be reached.
        """
        ...

    async def ready(self) -> bool:
        """True when the store answers now (for ``/readyz``); never raises."""
        ...

    async def aclose(self) -> None:
        """Release connections; the vault is not used afterwards."""
        ...


class InMemoryTokenVault:
    """A :class:`TokenVault` in this process's memory — one replica only, lost on restart.

    Expired entries are dropped when read and swept on every write. At most
    ``max_entries`` tokens are kept: when full, expired ones go first, then the ones
    expiring soonest.

    Args:
        clock: the current time in Unix seconds (a fake one in tests).
        max_entries: the most tokens kept at once (>= 1).
    """

    def __init__(self, clock: Callable[[], float] = time.time, max_entries: int = 100_000) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self._clock = clock
        self._max = max_entries
        self._tokens: dict[str, StoredToken] = {}
        # (expires_at, user_key), soonest first; entries whose key was replaced or removed are
        # stale and skipped lazily (the heap is rebuilt when stale ones outnumber live ones).
        self._expiry: list[tuple[float, str]] = []

    def __len__(self) -> int:
        """How many tokens are held (expired ones not yet swept included)."""
        return len(self._tokens)

    async def put(self, user_key: str, token: StoredToken) -> None:
        """See :meth:`TokenVault.put`. Never raises :class:`VaultUnavailable`."""
        now = self._clock()
        self._sweep(now)
        if token.expires_at <= now:
            return
        if user_key not in self._tokens:
            while len(self._tokens) >= self._max:
                self._evict_soonest()
        self._tokens[user_key] = token
        heapq.heappush(self._expiry, (token.expires_at, user_key))
        if len(self._expiry) > 2 * len(self._tokens) + 16:
            self._expiry = [(t.expires_at, k) for k, t in self._tokens.items()]
            heapq.heapify(self._expiry)

    async def get(self, user_key: str) -> StoredToken | None:
        """See :meth:`TokenVault.get`. Never raises :class:`VaultUnavailable`."""
        token = self._tokens.get(user_key)
        if token is None:
            return None
        if token.expires_at <= self._clock():
            del self._tokens[user_key]
            return None
        return token

    async def ready(self) -> bool:
        """Always True."""
        return True

    async def aclose(self) -> None:
        """Forget every token."""
        self._tokens.clear()
        self._expiry.clear()

    def _is_live_entry(self, expires_at: float, user_key: str) -> bool:
        token = self._tokens.get(user_key)
        return token is not None and token.expires_at == expires_at

    def _sweep(self, now: float) -> None:
        while self._expiry and self._expiry[0][0] <= now:
            expires_at, user_key = heapq.heappop(self._expiry)
            if self._is_live_entry(expires_at, user_key):
                del self._tokens[user_key]

    def _evict_soonest(self) -> None:
        while self._expiry:
            expires_at, user_key = heapq.heappop(self._expiry)
            if self._is_live_entry(expires_at, user_key):
                del self._tokens[user_key]
                return
        # unreachable while the heap mirrors the dict; stay bounded regardless
        self._tokens.pop(next(iter(self._tokens)))


class _Sealed(msgspec.Struct, frozen=True):
    """The encrypted payload: the token bound to the Redis key it was written under.

    The binding stops someone who can write to Redis (but has no Fernet key) from copying
    one colleague's encrypted token under another user key.
    """

    key: str
    token: StoredToken


_SEALED_DECODER = msgspec.json.Decoder(_Sealed)


class RedisTokenVault:
    """A :class:`TokenVault` in Redis, shared by every gateway replica.

    Redis key ``prefix + sha256(user_key).hexdigest()``; value: the token's msgspec JSON
    encrypted with :class:`cryptography.fernet.MultiFernet` (bound to its Redis key);
    written with ``SET ... PXAT <expires_at in ms>`` so Redis drops it when the token expires.
    A value no configured key decrypts (rotated away, tampered with) reads as absent and is
    logged without the value or the user key.

    Args:
        url: ``redis://[[user]:password@]host:port/db`` or ``rediss://`` for TLS (a secret).
        keys: Fernet keys (url-safe base64 of 32 bytes); ``keys[0]`` encrypts, all decrypt.
        prefix: prepended to every Redis key.
        clock: the current time in Unix seconds.
        timeout: seconds a connect or a command may take before :class:`VaultUnavailable`.

    Raises:
        ValueError: no keys, or a key that is not a Fernet key (the message holds no key).
    """

    def __init__(
        self,
        url: str,
        keys: list[str],
        prefix: str = "instore:user-key:",
        clock: Callable[[], float] = time.time,
        timeout: float = 1.0,
    ) -> None:
        self._fernet = MultiFernet(fernets_from_keys(keys))
        self._prefix = prefix
        self._clock = clock
        self._timeout = timeout
        self._redis = Redis.from_url(
            url,
            socket_connect_timeout=timeout,
            socket_timeout=timeout,
            retry=Retry(ExponentialBackoff(cap=0.05, base=0.01), retries=1),
        )

    def redis_key(self, user_key: str) -> str:
        """The Redis key a user key is stored under: ``prefix + sha256(user_key)`` in hex."""
        return self._prefix + hashlib.sha256(user_key.encode()).hexdigest()

    async def put(self, user_key: str, token: StoredToken) -> None:
        """See :meth:`TokenVault.put`. Raises :class:`VaultUnavailable` when Redis fails."""
        if token.expires_at <= self._clock():
            return
        key = self.redis_key(user_key)
        value = self._fernet.encrypt(msgspec.json.encode(_Sealed(key, token)))
        # ceil to whole ms so Redis never drops it before expires_at
        pxat = math.ceil(token.expires_at * 1000)
        try:
            await self._redis.set(key, value, pxat=pxat)
        except (TimeoutError, RedisError, OSError) as exc:
            raise VaultUnavailable(f"Redis failed: {type(exc).__name__}") from None

    async def get(self, user_key: str) -> StoredToken | None:
        """See :meth:`TokenVault.get`. Raises :class:`VaultUnavailable` when Redis fails."""
        key = self.redis_key(user_key)
        try:
            value = await self._redis.get(key)
        except (TimeoutError, RedisError, OSError) as exc:
            raise VaultUnavailable(f"Redis failed: {type(exc).__name__}") from None
        if value is None:
            return None
        try:
            sealed = _SEALED_DECODER.decode(self._fernet.decrypt(value))
        except InvalidToken:
            log.warning(
                "token_vault.undecryptable",
                reason="no key of TOKEN_VAULT_ENCRYPTION_KEYS decrypts it (rotated away?) or it was altered",
            )
            return None
        except (msgspec.DecodeError, msgspec.ValidationError):
            log.warning("token_vault.unreadable", reason="decrypted value is not a stored token")
            return None
        if sealed.key != key:
            log.warning("token_vault.misplaced", reason="value was written under another key (copied?)")
            return None
        if sealed.token.expires_at <= self._clock():
            return None
        return sealed.token

    async def ready(self) -> bool:
        """True when Redis answers PING within the timeout; never raises."""
        try:
            return bool(await asyncio.wait_for(self._redis.ping(), self._timeout))
        except (TimeoutError, RedisError, OSError):
            return False

    async def aclose(self) -> None:
        """Close the Redis connections."""
        await self._redis.aclose()


def fernets_from_keys(keys: list[str]) -> list[Fernet]:
    """One :class:`Fernet` per key, in order.

    Raises:
        ValueError: ``keys`` is empty, or key number *n* (1-based) is not a Fernet key; the
            message names TOKEN_VAULT_ENCRYPTION_KEYS and the position, never the key.
    """
    if not keys:
        raise ValueError("TOKEN_VAULT_ENCRYPTION_KEYS holds no key")
    fernets = []
    for position, key in enumerate(keys, start=1):
        try:
            fernets.append(Fernet(key.strip().encode()))
        except (ValueError, TypeError):
            raise ValueError(
                f"TOKEN_VAULT_ENCRYPTION_KEYS: key {position} of {len(keys)} is not a Fernet key "
                "(url-safe base64 of 32 bytes; make one with "
                "`python -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())'`)"
            ) from None
    return fernets


def create_vault(settings: GatewaySettings) -> TokenVault:
    """The vault ``TOKEN_VAULT_BACKEND`` names: in memory, or Redis with the configured keys.

    Opens no connection yet (the first command does); check :meth:`TokenVault.ready`.
    """
    if settings.token_vault_backend == "redis":
        return RedisTokenVault(settings.token_vault_redis_url.get_secret_value(), settings.token_vault_keys())
    return InMemoryTokenVault()


class MeteredVault:
    """A :class:`TokenVault` that counts every ``put`` and ``get`` of the vault it wraps in
    ``instore_token_vault_operations_total{operation, outcome}`` (outcome ``ok``, ``miss`` for a
    ``get`` that found nothing, ``error`` for :class:`VaultUnavailable`)."""

    def __init__(self, vault: TokenVault) -> None:
        self.inner = vault

    async def put(self, user_key: str, token: StoredToken) -> None:
        """See :meth:`TokenVault.put`."""
        try:
            await self.inner.put(user_key, token)
        except VaultUnavailable:
            metrics.VAULT_OPERATIONS.labels("put", "error").inc()
            raise
        metrics.VAULT_OPERATIONS.labels("put", "ok").inc()

    async def get(self, user_key: str) -> StoredToken | None:
        """See :meth:`TokenVault.get`."""
        try:
            token = await self.inner.get(user_key)
        except VaultUnavailable:
            metrics.VAULT_OPERATIONS.labels("get", "error").inc()
            raise
        metrics.VAULT_OPERATIONS.labels("get", "ok" if token is not None else "miss").inc()
        return token

    async def ready(self) -> bool:
        """See :meth:`TokenVault.ready`."""
        return await self.inner.ready()

    async def aclose(self) -> None:
        """See :meth:`TokenVault.aclose`."""
        await self.inner.aclose()
