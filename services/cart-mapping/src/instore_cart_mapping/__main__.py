"""``instore-cart-mapping``: run the cart-mapping service (Kafka subscriber + health port).

``--help`` lists its settings and starts nothing."""

from __future__ import annotations

from collections.abc import Sequence

from instore_cart_mapping.settings import CartMappingSettings
from instore_shared.entrypoint import parse_service_args
from instore_shared.settings import CommercetoolsSettings

DESCRIPTION = (
    "Answers the gateway's cart lookups from Composable Commerce (Kafka request/reply on instore.cart-"
    "requests.v1). Health and metrics on CART_MAPPING_HTTP_HOST:CART_MAPPING_HTTP_PORT; runs until "
    "SIGTERM."
)


def main(argv: Sequence[str] | None = None) -> None:
    """Parse the command line (``--help`` only), read settings from the environment, configure logging,
    serve until SIGTERM/SIGINT."""
    parse_service_args("instore-cart-mapping", DESCRIPTION, [CartMappingSettings, CommercetoolsSettings], argv)

    from instore_cart_mapping.app import create_app
    from instore_shared.http_limits import HttpLimits
    from instore_shared.logging import configure_logging
    from instore_shared.service import serve
    from instore_shared.settings import load_settings

    settings = load_settings(CartMappingSettings, "instore-cart-mapping")
    configure_logging("cart-mapping", settings.log_level, settings.log_json)
    serve(
        create_app(settings),
        settings.cart_mapping_http_host,
        settings.cart_mapping_http_port,
        limits=HttpLimits.from_settings(settings),
    )


if __name__ == "__main__":
    main()
