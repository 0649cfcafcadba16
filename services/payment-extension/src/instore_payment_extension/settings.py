"""payment-extension settings (environment variables; see the table in docs/configuration.md)."""

from __future__ import annotations

from typing import Literal, Self

from pydantic import Field, SecretStr, model_validator

from instore_shared.settings import BaseServiceSettings


class PaymentExtensionSettings(BaseServiceSettings):
    """Settings of the payment-extension service (a Custom payment processor's back end)."""

    payment_extension_consumer_group: str = "payment-extension"
    """Kafka consumer group reading instore.payment-requests.v1."""

    payment_extension_concurrency: int = Field(default=8, ge=1, le=64)
    """Partitions processed at once (one consumer each). A payment waiting for a prompt holds its partition."""

    payment_extension_provider: Literal["simulator", "stripe"] = "simulator"
    """The payment provider adapter: simulator (the dev fakes' simulated provider; development and tests) or stripe."""

    payment_extension_simulator_url: str = "http://127.0.0.1:8090/provider"
    """Base URL of the simulated provider (provider simulator)."""

    stripe_api_key: SecretStr = SecretStr("")
    """Stripe secret key (provider stripe); never logged."""

    stripe_api_base_url: str = "https://api.stripe.com"
    """Stripe API base URL (stripe-mock in tests)."""

    payment_extension_allowed_urls: str = "https://*.commercetools.com"
    """Comma-separated scheme://host[:port] (host may start with *.) that statusUrl and callbackUrl must match; nothing
    else is ever called (the gateway checks the same list). Default: https on commercetools hosts (assumed)."""

    instore_webhook_secret: SecretStr = SecretStr("")
    """Shared secret of InStore's signatures: our posts to statusUrl and callbackUrl are signed with it (X-Signature)."""

    payment_extension_delegated: bool = True
    """Delegated payment creation: record the Transaction and interface code on the Payment InStore created."""

    payment_extension_retry_seconds: float = Field(default=120.0, ge=0, le=3600)
    """One deadline per request for retrying an unreachable provider, Composable Commerce and InStore's callback; then
    the request is decided failed (provider) or dead-lettered (callback-undelivered; a replay delivers it)."""

    payment_extension_provider_timeout_seconds: float = Field(default=20.0, gt=0, le=300)
    """Longest a single provider call may take; then the request is decided timed-out."""

    payment_extension_max_prompts: int = Field(default=3, ge=0, le=10)
    """Prompts one payment may ask; beyond them it is cancelled."""

    payment_extension_prompt_max_seconds: float = Field(default=120.0, gt=0, le=600)
    """Longest a prompt waits for the colleague, whatever keepAlive the provider asks (it holds the partition)."""

    payment_extension_instore_timeout_seconds: float = Field(default=5.0, gt=0, le=60)
    """Timeout of one POST to statusUrl or callbackUrl."""

    payment_extension_http_host: str = "127.0.0.1"
    """Address of the health endpoints (/healthz, /readyz, /metrics)."""

    payment_extension_http_port: int = Field(default=8084, ge=0, le=65535)
    """Port of the health endpoints."""

    payment_extension_crash_after_decided: bool = False
    """Crash-recovery tests only: exit once a request's decision is saved, before the callback, event and commit."""

    @model_validator(mode="after")
    def _complete(self) -> Self:
        from instore_shared.url_allowlist import UrlAllowList

        UrlAllowList(self.payment_extension_allowed_urls)  # raises naming the bad entry
        if self.payment_extension_provider == "stripe" and not self.stripe_api_key.get_secret_value():
            raise ValueError("PAYMENT_EXTENSION_PROVIDER=stripe needs STRIPE_API_KEY")
        return self
