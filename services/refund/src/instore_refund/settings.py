"""refund settings (environment variables; see the table in docs/configuration.md)."""

from __future__ import annotations

from typing import Literal, Self

from pydantic import Field, model_validator

from instore_shared.settings import BaseServiceSettings


class RefundSettings(BaseServiceSettings):
    """Settings of the refund service.

    Custom Field names are the project's real names that InStore Center maps the logical
    identifiers to (https://docs.commercetools.com/instore/ — never hard-coded). The
    purchase fields share their variables with cart-mapping, which checks the same lines
    when InStore fetches the return cart.
    """

    refund_consumer_group: str = "refund"
    """Kafka consumer group reading instore.webhooks.v1 (refund webhooks; others are skipped)."""

    refund_concurrency: int = Field(default=4, ge=1, le=64)
    """Partitions processed at once (one consumer each; a partition's webhooks stay in order)."""

    refund_mode: Literal["delegated", "instore-managed"] = "delegated"
    """Who writes refunds to Composable Commerce. delegated: InStore only notifies, we write the return items, Refund
    transactions and their Refunded state. instore-managed: InStore writes them itself; we write nothing, verify they
    match the webhook (mismatch: dead letter instore-managed-mismatch) and announce. Source:
    ../shared/reference/instore-contract.md §5, §9; the verification is assumed (docs/refunds-to-returns.md)."""

    refund_instore_managed_wait_seconds: float = Field(default=30.0, ge=0, le=600)
    """REFUND_MODE=instore-managed: how long a webhook whose check fails waits for InStore's writes (read and checked
    again every second) before it is dead-lettered as instore-managed-mismatch; at most REFUND_RETRY_SECONDS (the
    webhook's deadline). 0: no wait."""

    instore_field_purchase_order_id: str = "purchaseOrderId"
    """Line item Custom Field naming the original Order (id, or orderNumber) of a returned line
    (LINEITEM_PURCHASEORDERID_FIELD)."""

    instore_field_purchase_line_item_id: str = "purchaseLineItemId"
    """Line item Custom Field naming the original line item id of a returned line (LINEITEM_PURCHASELINEITEM_ID_FIELD)."""

    instore_field_return_comment: str = "returnComment"
    """Line item Custom Field with the colleague's return comment, copied to the return item (LINEITEM_RETURNCOMMENT_FIELD)."""

    instore_field_location_id: str = "locationId"
    """Cart Custom Field with the InStore location id (ORDER_LOCATIONID_FIELD)."""

    instore_field_workstation_id: str = "workstationId"
    """Cart Custom Field with the InStore workstation id (ORDER_WORKSTATIONID_FIELD)."""

    instore_field_user_id: str = "userId"
    """Cart Custom Field with the colleague's user id (ORDER_USERID_FIELD)."""

    refund_retry_seconds: float = Field(default=120.0, ge=0, le=3600)
    """One deadline per webhook for all its retries (backoff up to 15 s) while Composable Commerce is unavailable, then
    dead-lettered; 0: at once. max.poll.interval.ms = this + 120 s (≥ 300 s)."""

    refund_http_host: str = "127.0.0.1"
    """Address of the health endpoints (/healthz, /readyz)."""

    refund_http_port: int = Field(default=8083, ge=0, le=65535)
    """Port of the health endpoints."""

    refund_crash_after_returns_recorded: bool = False
    """Crash-recovery tests only: exit after the return items are written, before the refunds, event and commit."""

    @model_validator(mode="after")
    def _instore_wait_within_the_deadline(self) -> Self:
        # The wait draws on the webhook's one deadline (service.py), which sizes max.poll.interval.ms.
        wait, deadline = self.refund_instore_managed_wait_seconds, self.refund_retry_seconds
        if self.refund_mode == "instore-managed" and wait > deadline:
            raise ValueError(
                f"REFUND_INSTORE_MANAGED_WAIT_SECONDS ({wait:g}) must not exceed REFUND_RETRY_SECONDS ({deadline:g}) with "
                "REFUND_MODE=instore-managed: the wait for InStore's writes is part of the webhook's deadline"
            )
        return self
