"""Settings of colleague sessions: the IMS (who the colleague is) and InStore's auth API.

Kept apart from :mod:`instore_gateway.settings` only to keep that file short; the gateway's
settings class includes these fields.
"""

from __future__ import annotations

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_AUTH_BODY = '{"tenantId": "{tenantId}", "userId": "{userId}", "connectionKey": "{connectionKey}", "scopes": "{scopes}"}'


class SessionSettings(BaseSettings):
    """Fields for ``POST /sessions`` and the token callback (defaults: the local dev fakes)."""

    model_config = SettingsConfigDict(case_sensitive=False, extra="ignore", use_attribute_docstrings=True, frozen=True)

    ims_jwks_url: str = "http://127.0.0.1:8090/ims/.well-known/jwks.json"
    """JWKS URL of the retailer's identity system (IMS) that signs colleague tokens."""

    ims_issuer: str = "http://127.0.0.1:8090/ims"
    """The exact `iss` of IMS tokens."""

    ims_audience: str = "instore-integration"
    """The `aud` IMS tokens must carry (this integration's client id at the IMS)."""

    ims_algorithms: str = "RS256,ES256"
    """Comma-separated JWS algorithms accepted from the IMS (asymmetric only; `none` and HS* are refused)."""

    ims_leeway_seconds: float = Field(default=30, ge=0, le=300)
    """Clock skew allowed on `exp`/`nbf`, in seconds."""

    instore_auth_base_url: str = "http://127.0.0.1:8090/instore-auth"
    """InStore API base URL for the user-token call (assumed — see instore_auth.py)."""

    instore_auth_token_path: str = "/v1/user-token"
    """Path of the user-token call under INSTORE_AUTH_BASE_URL (assumed; not public)."""

    instore_auth_request_body: str = DEFAULT_AUTH_BODY
    """JSON template of the user-token request;
    placeholders {tenantId} {userId} {connectionKey} {locationId} {workstationId} {scopes}."""

    instore_tenant_id: str = "local-tenant"
    """InStore tenant id."""

    instore_connection_key: SecretStr = SecretStr("local-dev-connection-key")
    """InStore environment connection key (never leaves the gateway)."""

    instore_auth_scopes: str = ""
    """Space-separated scopes to ask for; empty: none."""

    instore_auth_timeout_seconds: float = Field(default=3.0, gt=0, le=30)
    """Timeout of the user-token call, in seconds (504 beyond)."""

    sessions_rate_limit_per_minute: int = Field(default=30, ge=1)
    """`POST /sessions` requests allowed per client address and minute (429 beyond)."""
