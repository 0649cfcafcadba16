"""``instore-payment-extension``: run the payment-extension service (Kafka subscriber + health port).

``--help`` lists its settings and starts nothing."""

from __future__ import annotations

from collections.abc import Sequence

from instore_payment_extension.settings import PaymentExtensionSettings
from instore_shared.entrypoint import parse_service_args
from instore_shared.settings import CommercetoolsSettings

DESCRIPTION = (
    "InStore payment-extension requests on instore.payment-requests.v1 -> the payment provider -> "
    "InStore's callbackUrl -> commerce.payment-extension-results.v1. Health and metrics on "
    "PAYMENT_EXTENSION_HTTP_HOST:PAYMENT_EXTENSION_HTTP_PORT; runs until SIGTERM."
)


def main(argv: Sequence[str] | None = None) -> None:
    """Parse the command line (``--help`` only), read settings from the environment, configure logging,
    serve until SIGTERM/SIGINT."""
    parse_service_args("instore-payment-extension", DESCRIPTION, [PaymentExtensionSettings, CommercetoolsSettings], argv)

    from instore_payment_extension.app import create_app
    from instore_shared.http_limits import HttpLimits
    from instore_shared.logging import configure_logging
    from instore_shared.service import serve
    from instore_shared.settings import load_settings

    settings = load_settings(PaymentExtensionSettings, "instore-payment-extension")
    configure_logging("payment-extension", settings.log_level, settings.log_json)
    serve(
        create_app(settings),
        settings.payment_extension_http_host,
        settings.payment_extension_http_port,
        limits=HttpLimits.from_settings(settings),
    )


if __name__ == "__main__":
    main()
