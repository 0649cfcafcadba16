"""Reconciler settings (environment variables; see the table in docs/configuration.md)."""

from __future__ import annotations

from typing import Literal, Self

from pydantic import Field, model_validator

from instore_shared.settings import BaseServiceSettings


class ReconcilerSettings(BaseServiceSettings):
    """Settings of the reconciler (``instore-reconciler``): the safety net for lost payment webhooks.

    ``INSTORE_CURRENCY``, the Custom Field names and ``ORDER_CREATION`` are the same variables
    order-finalization reads, so one ConfigMap serves both.
    """

    reconciler_grace_seconds: float = Field(default=600.0, ge=0, le=7 * 24 * 3600)
    """A paid cart or a new Order is left alone this long after its last change (its webhook may still come),
    seconds. Development (make run): 5."""

    reconciler_lookback_hours: float = Field(default=168.0, gt=0, le=90 * 24)
    """How far back a run looks (carts by lastModifiedAt, Orders by createdAt), hours: the queries never scan
    the whole project. Keep it longer than the longest outage you want healed, shorter than the carts' deletion."""

    reconciler_page_size: int = Field(default=100, ge=1, le=500)
    """Results per query page (the API's maximum is 500); paging is by id, never by offset."""

    reconciler_interval_seconds: float = Field(default=0.0, ge=0, le=24 * 3600)
    """0: one run, then exit (the Kubernetes CronJob). More: run again this many seconds after each run ends
    (make run: 10), until SIGTERM/SIGINT."""

    reconciler_pushgateway_url: str = ""
    """Prometheus Pushgateway (http://host:9091) the run's metrics are pushed to after each run (job
    instore-reconciler); empty: none (a CronJob's pod lives too short to be scraped)."""

    reconciler_metrics_port: int = Field(default=0, ge=0, le=65535)
    """With an interval: serve /metrics on 127.0.0.1 (RECONCILER_METRICS_HOST) at this port; 0: none."""

    reconciler_metrics_host: str = "127.0.0.1"
    """Address of the /metrics port (0.0.0.0 in a container)."""

    instore_currency: str = Field(default="EUR", pattern=r"^[A-Z]{3}$")
    """ISO 4217 currency of this InStore environment: only carts and Orders in it are looked at."""

    instore_field_location_id: str = Field(default="locationId", pattern=r"^[A-Za-z0-9_-]{1,256}$")
    """Cart/Order Custom Field with the InStore location id (ORDER_LOCATIONID_FIELD): a cart or Order without it
    is not InStore's and is never touched."""

    instore_field_order_number: str = "orderNumber"
    """Cart Custom Field holding InStore's order number (as order-finalization reads it): a paid cart whose number
    another cart's Order already holds is reported, not handed."""

    order_creation: Literal["integration", "instore"] = "integration"
    """Who creates the Order (order-finalization's setting): with instore, a paid cart without an Order is
    reported (InStore's to create), not handed on."""

    @model_validator(mode="after")
    def _a_window(self) -> Self:
        if self.reconciler_lookback_hours * 3600 <= self.reconciler_grace_seconds:
            raise ValueError(
                f"RECONCILER_LOOKBACK_HOURS ({self.reconciler_lookback_hours:g} h) must reach further back than "
                f"RECONCILER_GRACE_SECONDS ({self.reconciler_grace_seconds:g} s): the window would be empty"
            )
        return self
