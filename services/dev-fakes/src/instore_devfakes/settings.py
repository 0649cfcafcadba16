"""Dev fakes settings (environment variables prefixed ``DEVFAKES_``; not in the docs/configuration.md table)."""

from __future__ import annotations

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class DevFakesSettings(BaseSettings):
    """Settings of the local IMS, the fake InStore auth API and the OTLP receiver (development and tests only)."""

    model_config = SettingsConfigDict(
        env_prefix="DEVFAKES_",
        case_sensitive=False,
        extra="ignore",
        use_attribute_docstrings=True,
        frozen=True,
        populate_by_name=True,
    )

    http_host: str = "127.0.0.1"
    """Address the HTTP server binds to."""

    http_port: int = Field(default=8090, ge=0, le=65535)
    """Port of the HTTP server."""

    issuer: str = "http://127.0.0.1:8090/ims"
    """Issuer (``iss``) of the colleague tokens the local IMS mints."""

    audience: str = "instore-integration"
    """Default audience (``aud``) of the colleague tokens the local IMS mints."""

    connection_key: SecretStr = SecretStr("local-dev-connection-key")
    """The environment connection key the fake InStore auth API accepts."""

    tenant_id: str = "local-tenant"
    """The tenant id the fake InStore auth API accepts."""

    token_ttl_seconds: int = Field(default=3600, gt=0)
    """Lifetime (``expires_in``) of the user access tokens the fake InStore auth API issues, in seconds."""

    otlp_max_spans: int = Field(default=10_000, ge=1, le=1_000_000)
    """How many spans the OTLP receiver (``POST /v1/traces``) keeps in memory; the oldest are dropped first."""

    otlp_max_body_bytes: int = Field(default=4 * 1024 * 1024, ge=1024, le=64 * 1024 * 1024)
    """Largest OTLP export body the receiver takes, in bytes, before and after decompression (413 beyond)."""

    gateway_url: str = "http://127.0.0.1:8080"
    """The gateway the reference host page (``/host``) talks to, and its stand-in InStore sends webhooks to."""

    webhook_secret: SecretStr = Field(
        default=SecretStr(""), validation_alias=AliasChoices("webhook_secret", "INSTORE_WEBHOOK_SECRET")
    )
    """The webhook signing secret (``INSTORE_WEBHOOK_SECRET``, shared with the gateway): the stand-in InStore of the
    host page signs its payment webhooks with it, server-side."""

    remote_entry_url: str = Field(default="", validation_alias=AliasChoices("remote_entry_url", "INSTORE_REMOTE_ENTRY_URL"))
    """The real InStore federated remote (``INSTORE_REMOTE_ENTRY_URL``) for the host page; empty: our stand-in."""

    log_level: str = Field(default="INFO", validation_alias=AliasChoices("log_level", "LOG_LEVEL"))
    """Log level (``LOG_LEVEL``, shared with the other services): DEBUG, INFO, WARNING or ERROR."""

    log_json: bool = Field(default=True, validation_alias=AliasChoices("log_json", "LOG_JSON"))
    """Log one JSON object per line (``LOG_JSON``, shared with the other services)."""
