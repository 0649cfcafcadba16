"""``instore-payment-extension``: run the payment-extension service (Kafka subscriber + health port)."""

from __future__ import annotations

from instore_payment_extension.app import create_app
from instore_payment_extension.settings import PaymentExtensionSettings
from instore_shared.http_limits import HttpLimits
from instore_shared.logging import configure_logging
from instore_shared.service import serve
from instore_shared.settings import load_settings


def main() -> None:
    """Read settings from the environment, configure logging, serve until SIGTERM/SIGINT."""
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
