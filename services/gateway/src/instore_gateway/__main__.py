"""``instore-gateway``: run the gateway HTTP server (``--help`` lists its settings and starts nothing)."""

from __future__ import annotations

from collections.abc import Sequence

from instore_gateway.settings import GatewaySettings
from instore_shared.entrypoint import parse_service_args

DESCRIPTION = (
    "The InStore integration's HTTP face: InStore's cart callbacks, webhooks and payment extensions, the host "
    "app's sessions and events; published to Kafka. Serves on GATEWAY_HTTP_HOST:GATEWAY_HTTP_PORT until SIGTERM."
)


def main(argv: Sequence[str] | None = None) -> None:
    """Parse the command line (``--help`` only), read settings from the environment, configure logging,
    serve until SIGTERM/SIGINT."""
    parse_service_args("instore-gateway", DESCRIPTION, [GatewaySettings], argv)

    from instore_gateway.app import create_app
    from instore_shared.http_limits import HttpLimits
    from instore_shared.logging import configure_logging
    from instore_shared.service import serve
    from instore_shared.settings import load_settings

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
