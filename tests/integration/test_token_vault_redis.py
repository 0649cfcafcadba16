"""The Redis token vault against a real Redis (``REDIS_URL``, else a local redis-server)."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator

import pytest
from cryptography.fernet import Fernet
from redis.asyncio import Redis

from instore_gateway.vault import RedisTokenVault, StoredToken, VaultUnavailable
from tests.support.processes import RedisServer, free_port

pytestmark = pytest.mark.integration

KEY_A = Fernet.generate_key().decode()
KEY_B = Fernet.generate_key().decode()


def new_user_key() -> str:
    return secrets.token_urlsafe(32)


def token(ttl: float = 300, access_token: str | None = None) -> StoredToken:
    return StoredToken(
        access_token=access_token or f"at-{secrets.token_hex(16)}",
        expires_at=time.time() + ttl,
        user_id="u-1",
        location_id="loc-berlin",
        workstation_id="ws-7",
    )


@pytest.fixture
async def plain(redis: RedisServer) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis.url)
    yield client
    await client.aclose()


@pytest.fixture
async def vault(redis: RedisServer) -> AsyncIterator[RedisTokenVault]:
    v = RedisTokenVault(redis.url, [KEY_A])
    yield v
    await v.aclose()


async def test_round_trip(vault: RedisTokenVault) -> None:
    assert await vault.ready() is True
    user_key, stored = new_user_key(), token()
    await vault.put(user_key, stored)
    assert await vault.get(user_key) == stored
    assert await vault.get(new_user_key()) is None


async def test_redis_holds_neither_the_token_nor_the_user_key(vault: RedisTokenVault, plain: Redis) -> None:
    user_key, stored = new_user_key(), token()
    await vault.put(user_key, stored)
    keys = [k.decode() async for k in plain.scan_iter(match="instore:user-key:*")]
    assert vault.redis_key(user_key) in keys
    assert all(user_key not in k for k in keys)
    raw = await plain.get(vault.redis_key(user_key))
    assert raw is not None
    assert stored.access_token.encode() not in raw and user_key.encode() not in raw
    assert b"u-1" not in raw and b"loc-berlin" not in raw  # the whole payload is encrypted


async def test_redis_expires_the_entry_with_the_token(vault: RedisTokenVault, plain: Redis) -> None:
    user_key, stored = new_user_key(), token(ttl=120)
    await vault.put(user_key, stored)
    ttl_ms = await plain.pttl(vault.redis_key(user_key))
    assert abs(ttl_ms / 1000 - (stored.expires_at - time.time())) < 2
    short_key = new_user_key()
    await vault.put(short_key, token(ttl=0.3))
    assert await vault.get(short_key) is not None
    deadline = time.monotonic() + 5
    while await plain.exists(vault.redis_key(short_key)):  # Redis itself drops it
        assert time.monotonic() < deadline, "Redis did not expire the entry"
        await asyncio.sleep(0.05)
    assert await vault.get(short_key) is None


async def test_an_expired_token_is_not_written(vault: RedisTokenVault, plain: Redis) -> None:
    user_key = new_user_key()
    await vault.put(user_key, token(ttl=-1))
    assert await plain.exists(vault.redis_key(user_key)) == 0


async def test_key_rotation(
    redis: RedisServer, vault: RedisTokenVault, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    user_key, stored = new_user_key(), token()
    await vault.put(user_key, stored)  # written with A
    rotated = RedisTokenVault(redis.url, [KEY_B, KEY_A])
    only_b = RedisTokenVault(redis.url, [KEY_B])
    try:
        assert await rotated.get(user_key) == stored
        caplog.clear()
        capsys.readouterr()
        assert await only_b.get(user_key) is None  # no exception
        logged = caplog.text + capsys.readouterr().out
        assert "token_vault.undecryptable" in logged
        assert user_key not in logged and stored.access_token not in logged
        # what the rotated vault writes, a vault with only the old key no longer reads
        second = new_user_key()
        await rotated.put(second, stored)
        assert await only_b.get(second) == stored
        assert await vault.get(second) is None
    finally:
        await rotated.aclose()
        await only_b.aclose()


async def test_a_value_copied_under_another_key_is_not_served(vault: RedisTokenVault, plain: Redis) -> None:
    victim, attacker = new_user_key(), new_user_key()
    await vault.put(victim, token())
    await vault.put(attacker, token())
    raw = await plain.get(vault.redis_key(victim))
    await plain.set(vault.redis_key(attacker), raw, px=60_000)
    assert await vault.get(attacker) is None
    await plain.set(vault.redis_key(attacker), b"garbage", px=60_000)
    assert await vault.get(attacker) is None


async def test_two_replicas_share_tokens(redis: RedisServer) -> None:
    one, two = RedisTokenVault(redis.url, [KEY_A]), RedisTokenVault(redis.url, [KEY_A])
    try:
        k1, k2, t1, t2 = new_user_key(), new_user_key(), token(), token()
        await one.put(k1, t1)
        await two.put(k2, t2)
        assert await two.get(k1) == t1
        assert await one.get(k2) == t2
    finally:
        await one.aclose()
        await two.aclose()


async def test_redis_down_raises_vault_unavailable() -> None:
    down = RedisTokenVault(f"redis://:pw-must-not-show@127.0.0.1:{free_port()}/0", [KEY_A])
    try:
        started = time.monotonic()
        assert await down.ready() is False
        with pytest.raises(VaultUnavailable) as info:
            await down.get(new_user_key())
        assert "pw-must-not-show" not in str(info.value)
        with pytest.raises(VaultUnavailable):
            await down.put(new_user_key(), token())
        assert time.monotonic() - started < 10
    finally:
        await down.aclose()
