"""``instore-cart-mapping``: run the cart-mapping service (Kafka subscriber + health port)."""

from __future__ import annotations

import uvicorn

from instore_cart_mapping.app import create_app
from instore_cart_mapping.settings import CartMappingSettings
from instore_shared.logging import configure_logging
from instore_shared.settings import load_settings


def main() -> None:
    """Read settings from the environment, configure logging, serve until SIGTERM/SIGINT."""
    settings = load_settings(CartMappingSettings, "instore-cart-mapping")
    configure_logging("cart-mapping", settings.log_level, settings.log_json)
    uvicorn.run(
        create_app(settings),
        host=settings.cart_mapping_http_host,
        port=settings.cart_mapping_http_port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=10,
        server_header=False,
    )


if __name__ == "__main__":
    main()
