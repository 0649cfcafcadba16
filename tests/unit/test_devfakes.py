"""The dev fakes: the local IMS (JWKS, minted colleague tokens) and the fake InStore auth API."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import httpx
import jwt
import pytest
from litestar.testing import TestClient

from instore_devfakes.app import SigningKey, create_app
from instore_devfakes.settings import DevFakesSettings
from tests.support.processes import LoggedProcess, free_port, wait_until

ISSUER = "http://127.0.0.1:8090/ims"
AUDIENCE = "instore-integration"
GOOD = {"tenantId": "local-tenant", "userId": "colleague-42", "connectionKey": "local-dev-connection-key"}


@pytest.fixture(scope="module")
def signing_key() -> SigningKey:
    return SigningKey.generate()


@pytest.fixture
def client(signing_key: SigningKey) -> Iterator[TestClient[Any]]:
    with TestClient(create_app(DevFakesSettings(), key=signing_key)) as c:
        yield c


def _verify(token: str, jwks: dict[str, Any], audience: str = AUDIENCE) -> dict[str, Any]:
    kid = jwt.get_unverified_header(token)["kid"]
    jwk = next(k for k in jwks["keys"] if k["kid"] == kid)
    key = jwt.PyJWK(jwk).key
    return jwt.decode(
        token,
        key,
        algorithms=["RS256"],
        audience=audience,
        issuer=ISSUER,
        options={"require": ["iss", "aud", "sub", "iat", "nbf", "exp"]},
    )


def _mint(client: TestClient[Any], **body: Any) -> str:
    response = client.post("/ims/token", json={"userId": "colleague-42", **body})
    assert response.status_code == 200, response.text
    return str(response.json()["idToken"])


# -- settings -------------------------------------------------------------------------
def test_settings_defaults_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    s = DevFakesSettings()
    assert (s.http_host, s.http_port, s.issuer, s.audience) == ("127.0.0.1", 8090, ISSUER, AUDIENCE)
    assert (s.tenant_id, s.token_ttl_seconds) == ("local-tenant", 3600)
    assert s.connection_key.get_secret_value() == "local-dev-connection-key"
    assert "local-dev-connection-key" not in repr(s)
    assert all(f.description for f in DevFakesSettings.model_fields.values())
    monkeypatch.setenv("DEVFAKES_HTTP_PORT", "9999")
    monkeypatch.setenv("DEVFAKES_TENANT_ID", "t-1")
    monkeypatch.setenv("LOG_JSON", "false")
    s = DevFakesSettings()
    assert (s.http_port, s.tenant_id, s.log_json) == (9999, "t-1", False)


# -- local IMS ------------------------------------------------------------------------
def test_jwks_publishes_the_signing_key(client: TestClient[Any], signing_key: SigningKey) -> None:
    jwks = client.get("/ims/.well-known/jwks.json").json()
    assert len(jwks["keys"]) == 1
    key = jwks["keys"][0]
    assert {k: key[k] for k in ("kty", "alg", "use", "kid")} == {
        "kty": "RSA",
        "alg": "RS256",
        "use": "sig",
        "kid": signing_key.kid,
    }
    assert key["e"] == "AQAB" and len(key["n"]) >= 342  # 2048-bit modulus, base64url
    assert "d" not in key and "p" not in key  # the public half only


def test_openid_configuration_names_issuer_and_jwks(client: TestClient[Any]) -> None:
    config = client.get("/ims/.well-known/openid-configuration").json()
    assert config["issuer"] == ISSUER
    assert config["jwks_uri"].endswith("/ims/.well-known/jwks.json")
    assert client.get(httpx.URL(config["jwks_uri"]).path).status_code == 200


def test_minted_token_verifies_against_the_jwks(client: TestClient[Any]) -> None:
    before = int(time.time())
    token = _mint(client, name="Colleague Forty-Two")
    claims = _verify(token, client.get("/ims/.well-known/jwks.json").json())
    after = int(time.time())
    assert claims["iss"] == ISSUER and claims["aud"] == AUDIENCE and claims["sub"] == "colleague-42"
    assert claims["name"] == "Colleague Forty-Two"
    assert before <= claims["iat"] <= after and claims["nbf"] == claims["iat"]
    assert claims["exp"] == claims["iat"] + 900
    assert jwt.get_unverified_header(token)["alg"] == "RS256"


def test_minted_token_options_for_negative_tests(client: TestClient[Any]) -> None:
    jwks = client.get("/ims/.well-known/jwks.json").json()
    other = _mint(client, audience="someone-else", ttlSeconds=60)
    with pytest.raises(jwt.InvalidAudienceError):
        _verify(other, jwks)
    assert _verify(other, jwks, audience="someone-else")["exp"] - int(time.time()) <= 60
    with pytest.raises(jwt.ImmatureSignatureError):
        _verify(_mint(client, notBeforeSeconds=300), jwks)
    with pytest.raises(jwt.ExpiredSignatureError):
        _verify(_mint(client, ttlSeconds=-300), jwks)


def test_token_from_another_key_does_not_verify(client: TestClient[Any]) -> None:
    with TestClient(create_app(DevFakesSettings())) as other_fake:
        foreign = _mint(other_fake)
    jwks = client.get("/ims/.well-known/jwks.json").json()
    with pytest.raises(StopIteration):  # its kid is not in this JWKS
        _verify(foreign, jwks)
    forged = jwt.encode(
        jwt.decode(foreign, options={"verify_signature": False}),
        SigningKey.generate().private_key,
        algorithm="RS256",
        headers={"kid": jwks["keys"][0]["kid"]},
    )
    with pytest.raises(jwt.InvalidSignatureError):
        _verify(forged, jwks)


def test_mint_needs_a_user_id(client: TestClient[Any]) -> None:
    assert client.post("/ims/token", json={}).status_code == 400


# -- fake InStore auth API ------------------------------------------------------------
def test_user_token_for_the_right_tenant_and_connection_key(client: TestClient[Any]) -> None:
    response = client.post("/instore-auth/v1/user-token", json={**GOOD, "scopes": ["pos", "returns"]})
    assert response.status_code == 200
    body = response.json()
    assert body["token_type"] == "Bearer" and body["expires_in"] == 3600 and body["scope"] == "pos returns"
    assert len(body["access_token"]) >= 43  # 32 random bytes, base64url
    second = client.post("/instore-auth/v1/user-token", json=GOOD).json()
    assert second["access_token"] != body["access_token"]
    control = client.get("/_control").json()
    assert control["mode"] == "ok" and control["tokensIssued"] == 2
    assert control["lastRequest"] == {"tenantId": "local-tenant", "userId": "colleague-42", "scopes": None}


@pytest.mark.parametrize("wrong", [{"connectionKey": "not-the-key"}, {"tenantId": "other-tenant"}, {"connectionKey": ""}])
def test_user_token_refuses_a_wrong_tenant_or_connection_key(client: TestClient[Any], wrong: dict[str, str]) -> None:
    response = client.post("/instore-auth/v1/user-token", json={**GOOD, **wrong})
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_client"
    assert "access_token" not in response.json()
    assert client.get("/_control").json()["tokensIssued"] == 0


def test_user_token_settings_are_honoured(signing_key: SigningKey) -> None:
    settings = DevFakesSettings(tenant_id="t-9", connection_key="k" * 20, token_ttl_seconds=60)
    with TestClient(create_app(settings, key=signing_key)) as c:
        assert c.post("/instore-auth/v1/user-token", json=GOOD).status_code == 401
        ok = c.post("/instore-auth/v1/user-token", json={**GOOD, "tenantId": "t-9", "connectionKey": "k" * 20})
        assert ok.status_code == 200 and ok.json()["expires_in"] == 60


@pytest.mark.parametrize(("mode", "status"), [("down", 503), ("error", 500)])
def test_control_mode_failures(client: TestClient[Any], mode: str, status: int) -> None:
    assert client.post("/_control", json={"mode": mode}).json()["mode"] == mode
    response = client.post("/instore-auth/v1/user-token", json=GOOD)
    assert response.status_code == status
    assert "access_token" not in response.json()
    assert client.get("/_control").json() == {"mode": mode, "delaySeconds": 5.0, "tokensIssued": 0, "lastRequest": None}
    client.post("/_control", json={"mode": "ok"})
    assert client.post("/instore-auth/v1/user-token", json=GOOD).status_code == 200


def test_control_mode_slow_delays_the_answer(client: TestClient[Any]) -> None:
    assert client.post("/_control", json={"mode": "slow", "delaySeconds": 0.2}).json()["delaySeconds"] == 0.2
    started = time.perf_counter()
    response = client.post("/instore-auth/v1/user-token", json=GOOD)
    elapsed = time.perf_counter() - started
    assert response.status_code == 200
    assert elapsed >= 0.2


def test_control_rejects_unknown_modes(client: TestClient[Any]) -> None:
    assert client.post("/_control", json={"mode": "sideways"}).status_code == 400
    assert client.post("/_control", json={"mode": "slow", "delaySeconds": -1}).status_code == 400
    assert client.get("/_control").json()["mode"] == "ok"


def test_healthz(client: TestClient[Any]) -> None:
    assert client.get("/healthz").status_code == 200


# -- CLI ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def fake_server() -> Iterator[str]:
    port = free_port()
    env = dict(os.environ, DEVFAKES_HTTP_PORT=str(port), LOG_JSON="true", PYTHONUNBUFFERED="1")
    process = LoggedProcess("devfakes", [sys.executable, "-m", "instore_devfakes"], env)
    url = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        if not process.alive():
            raise RuntimeError(process.describe())
        try:
            return httpx.get(url + "/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_until(healthy, 30, "the dev fakes to serve", interval=0.1)
        yield url
    finally:
        process.stop()


def test_cli_token_prints_only_a_verifiable_jwt(fake_server: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "instore_devfakes", "token", "--user", "colleague-7", "--url", fake_server, "--ttl", "120"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.endswith("\n") and result.stdout.count("\n") == 1
    token = result.stdout.strip()
    claims = _verify(token, httpx.get(fake_server + "/ims/.well-known/jwks.json", timeout=5).json())
    assert claims["sub"] == "colleague-7" and claims["exp"] - claims["iat"] == 120


def test_cli_token_fails_cleanly_when_no_fake_runs() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "instore_devfakes", "token", "--user", "x", "--url", f"http://127.0.0.1:{free_port()}"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 1 and result.stdout == ""
    assert "cannot reach the dev fakes" in result.stderr
