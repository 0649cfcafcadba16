"""Gateway settings (environment variables; see the table in docs/configuration.md)."""

from __future__ import annotations

import ipaddress
from typing import Annotated, Literal, Self

from pydantic import BeforeValidator, Field, SecretStr, model_validator

from instore_gateway.session_settings import SessionSettings
from instore_shared.settings import BaseServiceSettings


class GatewaySettings(BaseServiceSettings, SessionSettings):
    """Settings of the gateway, the only HTTP face of the integration."""

    gateway_http_host: str = "127.0.0.1"
    """Address the HTTP server binds to (0.0.0.0 in a container)."""

    gateway_http_port: int = Field(default=8080, ge=0, le=65535)
    """Port of the HTTP server."""

    gateway_trusted_proxies: str = ""
    """Comma-separated IPs or CIDRs of the proxies in front (the ingress) whose X-Forwarded-For is believed; empty: none."""

    instore_callback_api_key: SecretStr = Field(min_length=16)
    """The Callback API Key registered in InStore Center; InStore sends it as X-Api-Key. Required, at least 16 characters."""

    gateway_cart_lookup_timeout_seconds: float = Field(default=3.0, gt=0, lt=5)
    """How long a cart callback waits for cart-mapping's reply before answering 504 (below InStore's own timeout)."""

    gateway_kafka_connect_wait_seconds: float = Field(default=0.0, ge=0)
    """At start-up, wait this long for Kafka before serving (0: serve at once and answer 503 until connected)."""

    instore_webhook_secret: SecretStr = SecretStr("")
    """Shared secret of InStore's webhook signatures (HMAC-SHA256). Empty: every webhook is refused with 401."""

    instore_webhook_signature_headers: str = "X-Signature,verification-signature"
    """Comma-separated headers that may carry the webhook signature, tried in order."""

    webhook_max_body_bytes: int = Field(default=1_000_000, ge=1024, le=50_000_000)
    """Largest webhook body accepted, in bytes (413 beyond);
    keep it below the topic's max.message.bytes (Kafka's default 1,048,588)."""

    webhook_publish_timeout_seconds: float = Field(default=5.0, gt=0, le=30)
    """How long a webhook waits for Kafka's acknowledgement before the gateway answers 503."""

    gateway_kafka_request_timeout_ms: int = Field(default=40000, ge=1000)
    """Request timeout of the gateway's Kafka producer, ms; a message waiting longer for a partition leader fails."""

    token_vault_backend: Literal["memory", "redis"] = "memory"
    """Where user access tokens wait for InStore under their user keys:
    memory (one replica only) or redis (shared by every replica)."""

    token_vault_redis_url: SecretStr = SecretStr("redis://127.0.0.1:6379/0")
    """Redis URL of the token vault (redis:// or rediss:// for TLS; may hold a password) when the backend is redis."""

    token_vault_encryption_keys: SecretStr = SecretStr("")
    """Comma-separated Fernet keys encrypting tokens in Redis; the first encrypts, all decrypt (rotation). Required with redis."""

    payment_extension_path_prefix: str = Field(default="/instore/payment-extensions", pattern=r"^/[A-Za-z0-9/_-]*$")
    """Path under which the payment-extension routes are served: {prefix}/{tender}/{action} and {prefix}/prompt-answers
    (the Custom payment processor's url in InStore Center points here)."""

    payment_extension_allowed_urls: str = "https://*.commercetools.com"
    """Comma-separated scheme://host[:port] (host may start with *.) that statusUrl and callbackUrl must match; a request
    naming any other address is refused (422 url-not-allowed). Default: https on commercetools hosts (assumed — InStore's
    API hosts are not published). make run adds the local simulator."""

    payment_extension_max_body_bytes: int = Field(default=65_536, ge=1024, le=1_000_000)
    """Largest payment-extension request or prompt answer accepted, in bytes (413 beyond)."""

    payment_extension_publish_timeout_seconds: float = Field(default=3.0, gt=0, le=10)
    """How long a payment-extension request waits for Kafka's acknowledgement before the gateway answers 503 (InStore
    waits at most the processor's timeout, 15 s in the documented example)."""

    gateway_access_log: Annotated[
        Literal["all", "errors"], BeforeValidator(lambda v: v.strip().lower() if isinstance(v, str) else v)
    ] = "errors"
    """One log line per HTTP request (``http.request``: method, redacted path, status, ms): ``all``, or only ``errors``
    (answers ≥ 400). Accepted webhooks and answered cart lookups are logged by their own lines either way."""

    gateway_cors_allow_origins: str = ""
    """Comma-separated origins (scheme://host[:port]) of host apps whose browsers may call POST /sessions and
    POST /host/events (CORS); empty: none (same-origin or server-side callers only). make run adds the dev fakes'
    reference page."""

    host_events_max_batch: int = Field(default=50, ge=1, le=500)
    """Most browser events in one POST /host/events (422 beyond)."""

    host_events_max_body_bytes: int = Field(default=65_536, ge=1024, le=1_000_000)
    """Largest POST /host/events body, in bytes (413 beyond)."""

    host_events_max_detail_bytes: int = Field(default=4096, ge=64, le=65_536)
    """Largest detail of one browser event (JSON), in bytes (422 beyond)."""

    host_events_rate_limit_per_minute: int = Field(default=120, ge=1)
    """POST /host/events batches per session (user key) per minute (429 beyond), in this replica's memory."""

    host_events_publish_timeout_seconds: float = Field(default=3.0, gt=0, le=10)
    """How long a batch waits for Kafka's acknowledgements before the gateway answers 503."""

    @model_validator(mode="after")
    def _allowed_urls_parse(self) -> Self:
        from instore_shared.url_allowlist import UrlAllowList

        UrlAllowList(self.payment_extension_allowed_urls)  # raises InvalidAllowList (a ValueError) naming the entry
        return self

    @model_validator(mode="after")
    def _token_vault_is_complete(self) -> Self:
        keys = self.token_vault_keys()
        if self.token_vault_backend == "redis" and not keys:
            raise ValueError("TOKEN_VAULT_BACKEND=redis needs TOKEN_VAULT_ENCRYPTION_KEYS (comma-separated Fernet keys)")
        if keys:
            from instore_gateway.vault import (
                fernets_from_keys,  # raises ValueError naming the variable, not the key
            )

            fernets_from_keys(keys)
        return self

    @model_validator(mode="after")
    def _trusted_proxies_are_addresses(self) -> Self:
        for entry in self.trusted_proxies():
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError:
                # "*" (uvicorn's "trust everyone") would let any client choose its address
                raise ValueError(f"GATEWAY_TRUSTED_PROXIES: {entry!r} is not an IP address or CIDR") from None
        return self

    def trusted_proxies(self) -> list[str]:
        """``GATEWAY_TRUSTED_PROXIES`` split at commas, blanks dropped."""
        return [entry.strip() for entry in self.gateway_trusted_proxies.split(",") if entry.strip()]

    def token_vault_keys(self) -> list[str]:
        """``TOKEN_VAULT_ENCRYPTION_KEYS`` split at commas, blanks dropped (first one encrypts)."""
        raw = self.token_vault_encryption_keys.get_secret_value()
        return [key.strip() for key in raw.split(",") if key.strip()]
