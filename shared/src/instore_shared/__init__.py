"""Common library of the InStore integration services.

Modules:
- :mod:`instore_shared.settings` — settings from the environment (pydantic-settings).
- :mod:`instore_shared.logging` — structlog JSON logging with a correlation id.
- :mod:`instore_shared.kafka` — topic registry, message headers, request/reply, topic admin.
- :mod:`instore_shared.commercetools` — async Composable Commerce client and its typed errors.
- :mod:`instore_shared.contract` — the wire schemas between our services (msgspec).
"""
