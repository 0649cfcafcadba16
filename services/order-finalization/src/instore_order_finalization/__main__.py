"""``instore-order-finalization``: run the order-finalization service (Kafka subscriber + health port).

``--help`` lists its settings and starts nothing."""

from __future__ import annotations

from collections.abc import Sequence

from instore_order_finalization.settings import OrderFinalizationSettings
from instore_shared.entrypoint import parse_service_args
from instore_shared.settings import CommercetoolsSettings

DESCRIPTION = (
    "Payment webhooks on instore.webhooks.v1 -> exactly one Order per Cart -> "
    "commerce.payments.completed.v1. Health and metrics on "
    "ORDER_FINALIZATION_HTTP_HOST:ORDER_FINALIZATION_HTTP_PORT; runs until SIGTERM."
)


def main(argv: Sequence[str] | None = None) -> None:
    """Parse the command line (``--help`` only), read settings from the environment, configure logging,
    serve until SIGTERM/SIGINT."""
    parse_service_args("instore-order-finalization", DESCRIPTION, [OrderFinalizationSettings, CommercetoolsSettings], argv)

    from instore_order_finalization.app import create_app
    from instore_shared.http_limits import HttpLimits
    from instore_shared.logging import configure_logging
    from instore_shared.service import serve
    from instore_shared.settings import load_settings

    settings = load_settings(OrderFinalizationSettings, "instore-order-finalization")
    configure_logging("order-finalization", settings.log_level, settings.log_json)
    serve(
        create_app(settings),
        settings.order_finalization_http_host,
        settings.order_finalization_http_port,
        limits=HttpLimits.from_settings(settings),
    )


if __name__ == "__main__":
    main()
