"""order-finalization settings (environment variables; see the table in docs/configuration.md)."""

from __future__ import annotations

from pydantic import Field

from instore_shared.settings import BaseServiceSettings


class OrderFinalizationSettings(BaseServiceSettings):
    """Settings of the order-finalization service.

    Custom Field names are the project's real names that InStore Center maps the logical
    identifiers to (https://docs.commercetools.com/instore/ — never hard-coded).
    """

    order_finalization_consumer_group: str = "order-finalization"
    """Kafka consumer group reading instore.webhooks.v1."""

    order_finalization_concurrency: int = Field(default=6, ge=1, le=64)
    """Partitions processed at once (one consumer each; a partition's webhooks stay in order)."""

    instore_currency: str = Field(default="EUR", pattern=r"^[A-Z]{3}$")
    """ISO 4217 currency of this InStore environment; a cart in another currency is dead-lettered."""

    instore_field_order_number: str = "orderNumber"
    """Cart Custom Field holding the order number InStore generated, if any (else one is derived from the cart id)."""

    instore_field_location_id: str = "locationId"
    """Cart Custom Field with the InStore location id (ORDER_LOCATIONID_FIELD)."""

    instore_field_workstation_id: str = "workstationId"
    """Cart Custom Field with the InStore workstation id (ORDER_WORKSTATIONID_FIELD)."""

    instore_field_user_id: str = "userId"
    """Cart Custom Field with the colleague's user id (ORDER_USERID_FIELD)."""

    order_finalization_retry_seconds: float = Field(default=120.0, ge=0, le=3600)
    """One deadline per webhook for all its retries (backoff up to 15 s) while Composable Commerce is unavailable, then
    dead-lettered; 0: at once. max.poll.interval.ms = this + 120 s (≥ 300 s)."""

    order_finalization_http_host: str = "127.0.0.1"
    """Address of the health endpoints (/healthz, /readyz)."""

    order_finalization_http_port: int = Field(default=8082, ge=0, le=65535)
    """Port of the health endpoints."""

    order_finalization_crash_after_order_created: bool = False
    """Crash-recovery tests only: exit right after an Order is created, before its event and offset commit."""
