"""What every Kafka service process shares: health routes and the way it is served.

``/healthz`` answers while the process serves; ``/readyz`` pings the broker (Kafka answers
now) and otherwise answers an RFC 9457 problem body with 503. Served by uvicorn with
structlog logging, graceful shutdown on SIGTERM (10 s for in-flight work) and no server header.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import TYPE_CHECKING, Any

import uvicorn
from faststream.asgi import AsgiResponse, get
from faststream.kafka import KafkaBroker
from prometheus_client import make_asgi_app

from instore_shared import http_head, metrics, telemetry
from instore_shared.http_limits import HttpLimits, bounded_protocol
from instore_shared.settings import BaseServiceSettings, CommercetoolsSettings

if TYPE_CHECKING:
    from faststream.asgi import AsgiFastStream

_JSON = {"content-type": "application/json"}


def health_routes(broker: KafkaBroker) -> list[tuple[str, Any]]:
    """``[("/healthz", …), ("/readyz", …), ("/metrics", …)]`` for ``AsgiFastStream(asgi_routes=...)``.

    ``/metrics`` is prometheus_client's exposition of this process's registry (docs/operations.md);
    ``/readyz`` also sets ``instore_ready``.

    Also puts ``broker``'s producer under a :class:`~instore_shared.kafka.broker_health.ProducerGuard`
    (a broken producer is replaced in-process): ``/readyz`` is 503 while it is being replaced.
    """
    from instore_shared.kafka.broker_health import producer_guard

    guard = producer_guard(broker)

    @get
    async def healthz(scope: object) -> AsgiResponse:
        return AsgiResponse(b'{"status":"ok"}', 200, headers=_JSON)

    @get
    async def readyz(scope: object) -> AsgiResponse:
        reason = guard.unready_reason()
        if reason is None and await broker.ping(timeout=2.0):
            metrics.READY.set(1)
            return AsgiResponse(b'{"status":"ready"}', 200, headers=_JSON)
        metrics.READY.set(0)
        problem = {
            "type": "urn:instore-integration:problem:not-ready",
            "title": "Not ready",
            "status": 503,
            "detail": reason or "not connected to Kafka",
        }
        return AsgiResponse(json.dumps(problem).encode(), 503, headers={"content-type": "application/problem+json"})

    return [("/healthz", healthz), ("/readyz", readyz), ("/metrics", make_asgi_app())]


SHUTDOWN_DEADLINE_SECONDS = 20.0
"""After SIGTERM/SIGINT a process that has not stopped within this many seconds exits anyway (code 1)."""


class _Server(uvicorn.Server):
    """uvicorn's server plus a deadline on shutdown.

    Stopping a Kafka client whose broker is gone can wait for it without end (aiokafka
    retries the group's last commit and leave); Kubernetes would SIGKILL the pod after its
    grace period, but a local process would hang. After :data:`SHUTDOWN_DEADLINE_SECONDS`
    the process exits with code 1 and says so: the offsets not committed are processed
    again by the next owner of the partitions (the handlers are idempotent).
    """

    deadline_seconds = SHUTDOWN_DEADLINE_SECONDS

    def handle_exit(self, sig: int, frame: Any) -> None:
        if not self.should_exit:
            timer = threading.Timer(self.deadline_seconds, self._give_up)
            timer.daemon = True
            timer.start()
        super().handle_exit(sig, frame)

    def _give_up(self) -> None:
        from instore_shared.logging import get_logger

        get_logger(__name__).error(
            "shutdown.forced", after_s=self.deadline_seconds, detail="did not stop in time (Kafka unreachable?); exiting"
        )
        logging.shutdown()
        os._exit(1)


def http_config(
    app: Any, host: str, port: int, limits: HttpLimits | None = None, trusted_proxies: Sequence[str] = ()
) -> uvicorn.Config:
    """The uvicorn configuration of every HTTP port of the integration.

    - request heads bounded by ``limits`` (:mod:`instore_shared.http_limits`; defaults when None);
    - ``X-Forwarded-For``/``-Proto`` ignored unless the TCP peer is one of ``trusted_proxies``
      (addresses or CIDRs; uvicorn's own default trusts 127.0.0.1, so a forged header from any
      same-host client would set the client address); from a trusted proxy, the client is the
      right-most address it reports that is not itself a trusted proxy;
    - no server header, no uvicorn access log (structlog's), 10 s for in-flight work at shutdown.
    """
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=10,
        server_header=False,
        http=bounded_protocol(limits or HttpLimits()),
        proxy_headers=bool(trusted_proxies),
        forwarded_allow_ips=list(trusted_proxies) or None,
    )


def serve(
    app: Any,
    host: str,
    port: int,
    shutdown_deadline: float = SHUTDOWN_DEADLINE_SECONDS,
    *,
    limits: HttpLimits | None = None,
    trusted_proxies: Sequence[str] = (),
) -> None:
    """Run ``app`` with uvicorn (:func:`http_config`) until SIGTERM/SIGINT (logging is already configured by the caller).

    In-flight HTTP work gets 10 s; the whole shutdown ``shutdown_deadline`` seconds (see :class:`_Server`).
    """
    server = _Server(http_config(app, host, port, limits, trusted_proxies))
    server.deadline_seconds = shutdown_deadline
    server.run()


def with_scopes(settings: CommercetoolsSettings, *scopes: str) -> CommercetoolsSettings:
    """``settings`` with ``CTP_SCOPES`` defaulted to ``scopes`` (each ``<scope>:<project key>``) when it is empty."""
    if settings.scopes:
        return settings
    return settings.model_copy(update={"scopes": " ".join(f"{s}:{settings.project_key}" for s in scopes)})


def commerce_service_app(
    name: str,
    broker: KafkaBroker,
    settings: BaseServiceSettings,
    client: object,
    description: str,
    schemas: dict[str, type] | None = None,
    resources: Callable[[], AbstractAsyncContextManager[None]] | None = None,
) -> AsgiFastStream:
    """The ASGI app of a Kafka service that calls Composable Commerce.

    Routes (each GET also answers HEAD, without the body): ``/healthz``, ``/readyz``, ``/metrics``, the AsyncAPI
    document of ``broker`` (``/asyncapi.json``,
    browsable at ``/asyncapi``, without FastStream's "try it out", which would publish to
    Kafka over HTTP) and a JSON Schema per ``schemas`` entry (path → msgspec Struct). At
    start it creates missing topics (``KAFKA_CREATE_TOPICS``; under ``KAFKA_TOPIC_PREFIX``) and starts refreshing
    ``instore_kafka_consumer_lag``; at stop it closes ``client`` when it is a
    :class:`CommercetoolsClient` (not a test's fake) and flushes the spans not yet exported.
    ``resources`` (optional) is entered after the topics exist and left before the client is closed
    (the payment-extension service's prompt-answer reader and HTTP clients).
    Tracing is set up here (:func:`instore_shared.telemetry.configure_tracing`, off unless
    ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set).
    """
    import msgspec
    from faststream.asgi import AsgiFastStream
    from faststream.asgi.factories.asyncapi.route import AsyncAPIRoute
    from faststream.specification import AsyncAPI

    from instore_shared.commercetools import CommercetoolsClient
    from instore_shared.kafka.admin import ensure_topics
    from instore_shared.logging import get_logger

    log = get_logger(f"instore_{name.replace('-', '_')}.app")
    telemetry.configure_tracing(name)

    @asynccontextmanager
    async def lifespan(*_: object) -> AsyncIterator[None]:
        if settings.kafka_create_topics:
            await ensure_topics(
                settings.kafka_bootstrap_servers,
                settings.topic_names().all(),
                settings.kafka_topic_partitions,
                settings.kafka_topic_replication_factor,
                client_options=settings.kafka_client_options(),
            )
        lag = asyncio.create_task(metrics.track_consumer_lag(broker), name="consumer-lag")
        try:
            if resources is None:
                yield
            else:
                async with resources():
                    yield
        finally:
            lag.cancel()
            await asyncio.gather(lag, return_exceptions=True)
            if isinstance(client, CommercetoolsClient):
                await client.aclose()
            telemetry.shutdown_tracing()
            log.info(f"{name.replace('-', '_')}.stopped")

    def schema_route(struct: type) -> Any:
        body = msgspec.json.encode(msgspec.json.schema(struct))

        @get
        async def route(scope: object) -> AsgiResponse:
            return AsgiResponse(body, 200, headers={"content-type": "application/schema+json"})

        return route

    class ServiceApp(AsgiFastStream):
        """FastStream's ASGI app answering ``HEAD`` as ``GET`` without the body (:mod:`instore_shared.http_head`):
        FastStream's GET routes take HEAD but send the body, prometheus_client's ``/metrics`` sends it too."""

        async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
            if http_head.is_head(scope):
                await super().__call__(http_head.as_get(scope), receive, http_head.without_body(send))
            else:
                await super().__call__(scope, receive, send)

    return ServiceApp(
        broker,
        lifespan=lifespan,
        logger=log,
        specification=AsyncAPI(broker, title=name, version="0.1.0", description=description),
        asyncapi_path=AsyncAPIRoute("/asyncapi", try_it_out_path=None),
        asgi_routes=[*health_routes(broker), *((path, schema_route(struct)) for path, struct in (schemas or {}).items())],
    )
