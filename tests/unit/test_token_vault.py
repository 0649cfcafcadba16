"""The in-memory token vault (fake clock) and the token-vault settings."""

from __future__ import annotations

import pytest
from cryptography.fernet import Fernet

from instore_gateway.settings import GatewaySettings
from instore_gateway.vault import (
    InMemoryTokenVault,
    RedisTokenVault,
    StoredToken,
    TokenVault,
    create_vault,
)
from instore_shared.settings import load_settings

API_KEY = "callback-key-that-must-not-print"
NOW = 1_700_000_000.0


class FakeClock:
    """A settable clock, Unix seconds."""

    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def token(expires_at: float, access_token: str = "at-secret", user_id: str = "u-1") -> StoredToken:
    return StoredToken(
        access_token=access_token, expires_at=expires_at, user_id=user_id, location_id="loc-berlin", workstation_id="ws-7"
    )


async def test_put_then_get_returns_the_token() -> None:
    vault = InMemoryTokenVault(clock=FakeClock())
    stored = token(NOW + 300)
    await vault.put("key-a", stored)
    assert await vault.get("key-a") == stored
    assert await vault.ready() is True
    assert isinstance(vault, TokenVault)


async def test_unknown_key_is_none() -> None:
    vault = InMemoryTokenVault(clock=FakeClock())
    await vault.put("key-a", token(NOW + 300))
    assert await vault.get("key-b") is None


async def test_token_is_gone_exactly_at_expires_at() -> None:
    clock = FakeClock()
    vault = InMemoryTokenVault(clock=clock)
    await vault.put("key-a", token(NOW + 60))
    clock.now = NOW + 59.999
    assert await vault.get("key-a") is not None
    clock.now = NOW + 60
    assert await vault.get("key-a") is None
    assert len(vault) == 0  # dropped on read


async def test_an_already_expired_token_is_not_stored() -> None:
    vault = InMemoryTokenVault(clock=FakeClock())
    await vault.put("past", token(NOW - 1))
    await vault.put("now", token(NOW))
    assert len(vault) == 0
    assert await vault.get("past") is None and await vault.get("now") is None


async def test_expired_entries_are_swept_on_write() -> None:
    clock = FakeClock()
    vault = InMemoryTokenVault(clock=clock)
    for i in range(10):
        await vault.put(f"short-{i}", token(NOW + 10))
    clock.now = NOW + 11
    await vault.put("long", token(NOW + 1000))
    assert len(vault) == 1


async def test_a_put_replaces_the_token_under_the_same_key() -> None:
    clock = FakeClock()
    vault = InMemoryTokenVault(clock=clock, max_entries=2)
    await vault.put("key-a", token(NOW + 10, access_token="first"))
    await vault.put("key-a", token(NOW + 100, access_token="second"))
    clock.now = NOW + 50  # the first one's expiry passed: the replacement stays
    await vault.put("key-b", token(NOW + 100))
    got = await vault.get("key-a")
    assert got is not None and got.access_token == "second"
    assert len(vault) == 2


async def test_size_is_bounded_dropping_expired_then_soonest_expiring() -> None:
    clock = FakeClock()
    vault = InMemoryTokenVault(clock=clock, max_entries=3)
    await vault.put("expires-first", token(NOW + 5))
    await vault.put("late", token(NOW + 500))
    await vault.put("soon", token(NOW + 50))
    await vault.put("later", token(NOW + 400))  # full, nothing expired: the soonest-expiring goes
    assert len(vault) == 3
    assert await vault.get("expires-first") is None
    clock.now = NOW + 60  # "soon" expired: it goes, not a live one
    await vault.put("new", token(NOW + 100))
    assert len(vault) == 3
    assert [k for k in ("late", "later", "new") if await vault.get(k) is not None] == ["late", "later", "new"]


async def test_many_writes_stay_bounded() -> None:
    clock = FakeClock()
    vault = InMemoryTokenVault(clock=clock, max_entries=100)
    for i in range(5000):
        clock.now = NOW + i * 0.01
        await vault.put(f"k{i}", token(NOW + 1 + (i % 37)))
        assert len(vault) <= 100
    assert len(vault._expiry) <= 2 * 100 + 17  # stale heap entries are pruned too


def test_token_repr_hides_the_access_token() -> None:
    assert "at-secret" not in repr(token(NOW + 1)) and "at-secret" not in str(token(NOW + 1))


def test_max_entries_must_be_positive() -> None:
    with pytest.raises(ValueError):
        InMemoryTokenVault(max_entries=0)


# -- settings -----------------------------------------------------------------------------


def test_memory_is_the_default_backend() -> None:
    settings = GatewaySettings(instore_callback_api_key=API_KEY)
    assert settings.token_vault_backend == "memory"
    assert isinstance(create_vault(settings), InMemoryTokenVault)


async def test_redis_backend_with_keys_builds_a_redis_vault() -> None:
    keys = f"{Fernet.generate_key().decode()}, {Fernet.generate_key().decode()}"
    settings = GatewaySettings(instore_callback_api_key=API_KEY, token_vault_backend="redis", token_vault_encryption_keys=keys)
    assert len(settings.token_vault_keys()) == 2
    vault = create_vault(settings)
    assert isinstance(vault, RedisTokenVault)
    assert "my-user-key-1234" not in vault.redis_key("my-user-key-1234")
    await vault.aclose()


def test_redis_backend_without_keys_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("INSTORE_CALLBACK_API_KEY", API_KEY)
    monkeypatch.setenv("TOKEN_VAULT_BACKEND", "redis")
    monkeypatch.setenv("TOKEN_VAULT_REDIS_URL", "redis://:redis-password-must-not-print@10.0.0.1:6379/0")
    monkeypatch.delenv("TOKEN_VAULT_ENCRYPTION_KEYS", raising=False)
    with pytest.raises(SystemExit) as info:
        load_settings(GatewaySettings, "instore-gateway")
    err = capsys.readouterr().err
    assert info.value.code == 2
    assert "TOKEN_VAULT_ENCRYPTION_KEYS" in err
    assert "redis-password-must-not-print" not in err and API_KEY not in err


@pytest.mark.parametrize("backend", ["redis", "memory"])
def test_an_invalid_key_fails_naming_the_variable_never_the_value(
    backend: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    good = Fernet.generate_key().decode()
    bad = "not-a-fernet-key-but-a-secret-value"
    monkeypatch.setenv("INSTORE_CALLBACK_API_KEY", API_KEY)
    monkeypatch.setenv("TOKEN_VAULT_BACKEND", backend)
    monkeypatch.setenv("TOKEN_VAULT_ENCRYPTION_KEYS", f"{good},{bad}")
    with pytest.raises(SystemExit) as info:
        load_settings(GatewaySettings, "instore-gateway")
    err = capsys.readouterr().err
    assert info.value.code == 2
    assert "TOKEN_VAULT_ENCRYPTION_KEYS" in err and "key 2 of 2" in err
    assert bad not in err and good not in err and API_KEY not in err


def test_settings_repr_hides_the_vault_secrets() -> None:
    key = Fernet.generate_key().decode()
    settings = GatewaySettings(
        instore_callback_api_key=API_KEY,
        token_vault_backend="redis",
        token_vault_redis_url="redis://:pw-secret@h:6379/0",
        token_vault_encryption_keys=key,
    )
    assert key not in repr(settings) and "pw-secret" not in repr(settings)
