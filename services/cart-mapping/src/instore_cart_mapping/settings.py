"""cart-mapping settings (environment variables; see the table in docs/configuration.md)."""

from __future__ import annotations

from pydantic import Field

from instore_shared.settings import BaseServiceSettings


class CartMappingSettings(BaseServiceSettings):
    """Settings of the cart-mapping service.

    The Custom Field names are the project's real field names that InStore Center maps
    the logical identifiers to (``LINEITEM_PURCHASEORDERID_FIELD`` and friends, see
    https://docs.commercetools.com/instore/ — never hard-coded in the rules).
    """

    cart_mapping_consumer_group: str = "cart-mapping"
    """Kafka consumer group of the cart lookup subscriber."""

    instore_currency: str = Field(default="EUR", pattern=r"^[A-Z]{3}$")
    """ISO 4217 currency of this InStore environment; a sale cart in another currency is refused."""

    instore_field_purchase_order_id: str = "purchaseOrderId"
    """Line item Custom Field naming the original Order (id, or orderNumber) of a returned line
    (LINEITEM_PURCHASEORDERID_FIELD)."""

    instore_field_purchase_line_item_id: str = "purchaseLineItemId"
    """Line item Custom Field naming the original line item id of a returned line (LINEITEM_PURCHASELINEITEM_ID_FIELD)."""

    cart_mapping_http_host: str = "127.0.0.1"
    """Address of the health endpoints (/healthz, /readyz)."""

    cart_mapping_http_port: int = Field(default=8081, ge=0, le=65535)
    """Port of the health endpoints."""

    cart_mapping_max_concurrent_lookups: int = Field(default=32, ge=1)
    """Cart lookups handled at once by this process."""
