"""Assembly of the payment-extension service: the FastStream subscriber on ``instore.payment-requests.v1``,
the prompt-answer reader, the provider adapter, the InStore client, health routes.

Per request the transport only decodes and calls
:func:`~instore_payment_extension.service.handle_payment_request`, then commits. A request that
cannot be processed (invalid, a URL off the allow-list, its Payment missing, InStore's callback
unreachable until the deadline) goes to ``instore.payment-requests.v1.dlq`` with its bytes and a
reason; a replay resumes where the saved state says (a decided result is only delivered). When
Kafka cannot take the event or the dead letter nothing is committed and the request comes again.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from faststream.kafka import KafkaBroker, KafkaMessage
from faststream.middlewares import AckPolicy

from instore_payment_extension.instore import InStoreClient
from instore_payment_extension.prompts import KafkaPromptAnswers, PromptAnswers
from instore_payment_extension.providers.base import PaymentProvider
from instore_payment_extension.providers.simulator import SimulatorProvider
from instore_payment_extension.service import Commerce, handle_payment_request
from instore_payment_extension.settings import PaymentExtensionSettings
from instore_shared.clock import SystemClock
from instore_shared.commercetools import CommercetoolsClient
from instore_shared.contract import payment_extensions as contract
from instore_shared.kafka.consumer import correlation_of, max_poll_interval_ms, park, the_message, webhook_broker
from instore_shared.kafka.publisher import KafkaEventPublisher, PublishFailed
from instore_shared.kafka.topics import PAYMENT_PROMPT_ANSWERS, PAYMENT_REQUESTS
from instore_shared.logging import correlation_scope, get_logger
from instore_shared.service import commerce_service_app, with_scopes
from instore_shared.settings import CommercetoolsSettings, load_settings
from instore_shared.url_allowlist import UrlAllowList

log = get_logger(__name__)

SCOPES = ("manage_payments", "manage_key_value_documents")
"""Composable Commerce scopes: the Payments InStore created, the per-request state (Custom Objects)."""


def _crash_for_test() -> None:
    log.warning("payment_extension.crash_for_test")
    os._exit(3)  # crash-recovery tests: decided and saved; no callback, no event, no commit


def create_provider(settings: PaymentExtensionSettings) -> PaymentProvider:
    """The provider adapter the settings name."""
    if settings.payment_extension_provider == "stripe":
        from instore_payment_extension.providers.stripe import StripeProvider

        return StripeProvider(
            settings.stripe_api_key.get_secret_value(),
            settings.stripe_api_base_url,
            timeout_s=settings.payment_extension_provider_timeout_seconds + 5,
        )
    return SimulatorProvider(
        settings.payment_extension_simulator_url, timeout_s=settings.payment_extension_provider_timeout_seconds + 5
    )


def create_broker(
    settings: PaymentExtensionSettings,
    commerce: Commerce,
    provider: PaymentProvider,
    instore: InStoreClient,
    prompts: PromptAnswers,
    attempts: int = 1,
) -> KafkaBroker:
    """The broker with the payment-request subscriber."""
    broker = webhook_broker(settings, "payment-extension")
    group = settings.payment_extension_consumer_group
    publisher, clock = (
        KafkaEventPublisher(broker, settings.kafka_bootstrap_servers, settings.kafka_client_options()),
        SystemClock(),
    )
    crash = _crash_for_test if settings.payment_extension_crash_after_decided else None
    budget = (
        settings.payment_extension_retry_seconds
        + settings.payment_extension_provider_timeout_seconds * 2
        + settings.payment_extension_prompt_max_seconds * settings.payment_extension_max_prompts
    )

    @broker.subscriber(
        settings.topic_names().name(PAYMENT_REQUESTS),
        group_id=group,
        ack_policy=AckPolicy.NACK_ON_ERROR,
        max_workers=settings.payment_extension_concurrency,
        auto_offset_reset="earliest",
        decoder=the_message,
        title="payment-extension",
        max_poll_interval_ms=max_poll_interval_ms(budget),
        description="Payment-extension requests → provider → Payment transaction → InStore's callbackUrl, once → "
        "commerce.payment-extension-results.v1.",
    )
    async def on_request(message: KafkaMessage) -> None:
        with correlation_scope(correlation_of(message)):
            try:
                handled = await handle_payment_request(
                    message.body,
                    message.headers,
                    provider=provider,
                    commerce=commerce,
                    instore=instore,
                    prompts=prompts,
                    publisher=publisher,
                    clock=clock,
                    settings=settings,
                    after_decided=crash,
                )
                log.info(
                    "payment_extension.handled",
                    request_id=handled.result.requestId,
                    status=handled.result.status,
                    repeat=not handled.first_time,
                )
            except PublishFailed:
                raise  # Kafka did not take the event: no commit, the request comes again (state says how far it got)
            except Exception as exc:
                await park(broker, message, group, exc, attempts)

    return broker


def create_app(
    settings: PaymentExtensionSettings | None = None,
    commerce_settings: CommercetoolsSettings | None = None,
    commerce: Commerce | None = None,
    provider: PaymentProvider | None = None,
) -> Any:
    """The payment-extension application: broker + ``/healthz``, ``/readyz``, ``/metrics``, AsyncAPI, JSON Schemas."""
    settings = settings or PaymentExtensionSettings()
    commerce_settings = with_scopes(
        commerce_settings or load_settings(CommercetoolsSettings, "instore-payment-extension"), *SCOPES
    )
    client = commerce or CommercetoolsClient(commerce_settings)
    the_provider = provider or create_provider(settings)
    instore = InStoreClient(
        UrlAllowList(settings.payment_extension_allowed_urls),
        settings.instore_webhook_secret.get_secret_value().encode(),
        timeout_s=settings.payment_extension_instore_timeout_seconds,
    )
    prompts = KafkaPromptAnswers(
        settings.kafka_bootstrap_servers,
        f"{settings.kafka_client_id_prefix}-payment-extension",
        settings.kafka_client_options(),
        topic=settings.topic_names().name(PAYMENT_PROMPT_ANSWERS),
    )
    broker = create_broker(settings, client, the_provider, instore, prompts, attempts=commerce_settings.max_attempts)

    @asynccontextmanager
    async def resources() -> AsyncIterator[None]:
        await prompts.start()
        try:
            yield
        finally:
            await prompts.stop()
            await instore.aclose()
            await the_provider.aclose()

    return commerce_service_app(
        "payment-extension",
        broker,
        settings,
        client,
        "InStore payment-extension requests on instore.payment-requests.v1 (JSON Schema: "
        "GET /schemas/payment-extension-request.json) → the provider → InStore's callbackUrl (GET "
        "/schemas/payment-extension-result.json), once → commerce.payment-extension-results.v1 (GET "
        "/schemas/payment-extension-results.json). Prompts: GET /schemas/prompt.json, answers /schemas/prompt-answer.json.",
        {
            "/schemas/payment-extension-request.json": contract.PaymentExtensionRequest,
            "/schemas/payment-extension-result.json": contract.PaymentExtensionResult,
            "/schemas/payment-extension-results.json": contract.PaymentExtensionResultEvent,
            "/schemas/prompt.json": contract.Prompt,
            "/schemas/prompt-answer.json": contract.PromptAnswer,
        },
        resources=resources,
    )
