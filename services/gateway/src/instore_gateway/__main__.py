"""``instore-gateway``: run the gateway HTTP server."""

from __future__ import annotations

from instore_gateway.app import create_app
from instore_gateway.settings import GatewaySettings
from instore_shared.http_limits import HttpLimits
from instore_shared.logging import configure_logging
from instore_shared.service import serve
from instore_shared.settings import load_settings


def main() -> None:
    """Read settings from the environment, configure logging, serve until SIGTERM/SIGINT."""
    settings = load_settings(GatewaySettings, "instore-gateway")
    configure_logging("gateway", settings.log_level, settings.log_json)
    serve(
        create_app(settings),
        settings.gateway_http_host,
        settings.gateway_http_port,
        limits=HttpLimits.from_settings(settings),
        trusted_proxies=settings.trusted_proxies(),
    )


if __name__ == "__main__":
    main()
