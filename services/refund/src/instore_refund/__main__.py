"""``instore-refund``: run the refund service (Kafka subscriber + health port).

``--help`` lists its settings and starts nothing."""

from __future__ import annotations

from collections.abc import Sequence

from instore_refund.settings import RefundSettings
from instore_shared.entrypoint import parse_service_args
from instore_shared.settings import CommercetoolsSettings

DESCRIPTION = (
    "Refund webhooks on instore.webhooks.v1 -> return items and Refund transactions, once -> "
    "commerce.refunds.completed.v1. Health and metrics on REFUND_HTTP_HOST:REFUND_HTTP_PORT; runs until "
    "SIGTERM."
)


def main(argv: Sequence[str] | None = None) -> None:
    """Parse the command line (``--help`` only), read settings from the environment, configure logging,
    serve until SIGTERM/SIGINT."""
    parse_service_args("instore-refund", DESCRIPTION, [RefundSettings, CommercetoolsSettings], argv)

    from instore_refund.app import create_app
    from instore_shared.http_limits import HttpLimits
    from instore_shared.logging import configure_logging
    from instore_shared.service import serve
    from instore_shared.settings import load_settings

    settings = load_settings(RefundSettings, "instore-refund")
    configure_logging("refund", settings.log_level, settings.log_json)
    serve(create_app(settings), settings.refund_http_host, settings.refund_http_port, limits=HttpLimits.from_settings(settings))


if __name__ == "__main__":
    main()
