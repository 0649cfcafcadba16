"""order-finalization settings (environment variables; see the table in docs/configuration.md)."""

from __future__ import annotations

from typing import Literal, Self

from pydantic import Field, model_validator

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

    order_creation: Literal["integration", "instore"] = "integration"
    """Who creates the Order of a paid cart: ``integration`` (order-finalization, from the cart, numbered by the cart's
    order-number field or instore-<cart id>) or ``instore`` (InStore does; order-finalization only finds it, waiting
    up to ORDER_FINALIZATION_INSTORE_ORDER_WAIT_SECONDS, and announces it). Assumed — the docs do not say who creates
    it: see ../shared/reference/instore-contract.md §9."""

    order_finalization_instore_order_wait_seconds: float = Field(default=30.0, ge=0, le=600)
    """ORDER_CREATION=instore: how long a webhook of a paid cart waits for InStore's Order (polled every second) before
    it is dead-lettered as instore-order-missing; at most ORDER_FINALIZATION_RETRY_SECONDS (the webhook's deadline)."""

    order_finalization_http_host: str = "127.0.0.1"
    """Address of the health endpoints (/healthz, /readyz)."""

    order_finalization_http_port: int = Field(default=8082, ge=0, le=65535)
    """Port of the health endpoints."""

    order_finalization_crash_after_order_created: bool = False
    """Crash-recovery tests only: exit right after an Order is created, before its event and offset commit."""

    @model_validator(mode="after")
    def _order_wait_within_the_deadline(self) -> Self:
        # The wait draws on the webhook's one deadline (service.py), which sizes max.poll.interval.ms.
        wait, deadline = self.order_finalization_instore_order_wait_seconds, self.order_finalization_retry_seconds
        if self.order_creation == "instore" and wait > deadline:
            raise ValueError(
                f"ORDER_FINALIZATION_INSTORE_ORDER_WAIT_SECONDS ({wait:g}) must not exceed ORDER_FINALIZATION_RETRY_SECONDS "
                f"({deadline:g}) with ORDER_CREATION=instore: the wait for InStore's Order is part of the webhook's deadline"
            )
        return self
