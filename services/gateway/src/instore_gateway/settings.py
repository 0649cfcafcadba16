"""Gateway settings (environment variables; see the README table)."""

from __future__ import annotations

from pydantic import Field, SecretStr

from instore_shared.settings import BaseServiceSettings


class GatewaySettings(BaseServiceSettings):
    """Settings of the gateway, the only HTTP face of the integration."""

    gateway_http_host: str = "127.0.0.1"
    """Address the HTTP server binds to (0.0.0.0 in a container)."""

    gateway_http_port: int = Field(default=8080, ge=0, le=65535)
    """Port of the HTTP server."""

    instore_callback_api_key: SecretStr = Field(min_length=16)
    """The Callback API Key registered in InStore Center; InStore sends it as X-Api-Key. Required, at least 16 characters."""

    gateway_cart_lookup_timeout_seconds: float = Field(default=3.0, gt=0, lt=5)
    """How long a cart callback waits for cart-mapping's reply before answering 504 (below InStore's own timeout)."""

    gateway_kafka_connect_wait_seconds: float = Field(default=0.0, ge=0)
    """At start-up, wait this long for Kafka before serving (0: serve at once and answer 503 until connected)."""
