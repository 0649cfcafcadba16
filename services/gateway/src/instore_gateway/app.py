"""Assembly of the gateway: the Litestar app, its routes, guard, middleware and lifespan."""

from __future__ import annotations

import asyncio
import functools
import hmac
import re
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Annotated, Any, cast

import msgspec
import structlog
from litestar import Litestar, Request, Response, Router, get
from litestar.config.cors import CORSConfig
from litestar.connection import ASGIConnection
from litestar.datastructures import State
from litestar.enums import ScopeType
from litestar.exceptions import HTTPException
from litestar.handlers.base import BaseRouteHandler
from litestar.middleware.rate_limit import RateLimitConfig
from litestar.params import Parameter
from litestar.plugins.prometheus import PrometheusController
from litestar.types import ASGIApp, HTTPResponseStartEvent, HTTPScope, Message, Receive, Scope, Send
from opentelemetry import trace

from instore_gateway import openapi
from instore_gateway.host_events import host_events_router
from instore_gateway.http_metrics import NO_ANSWER, http_metrics_middleware
from instore_gateway.identity import ImsVerifier
from instore_gateway.instore_auth import InStoreAuthClient
from instore_gateway.lookups import CartLookups, KafkaCartLookups
from instore_gateway.payment_extensions import (
    payment_extension_handlers,
    payment_extension_intake,
    raw_payment_extension_routes,
)
from instore_gateway.problems import (
    PROBLEM_JSON,
    TYPE_BASE,
    Problem,
    ProblemError,
    handle_http_exception,
    handle_problem,
    handle_too_deep,
    handle_unexpected,
    problem_of,
    problem_spec,
    redact_path,
)
from instore_gateway.raw_routes import ClientGone, RawRoute, header_values
from instore_gateway.sessions import (
    END_OF_STRING,
    EventPublisher,
    create_session,
    token_callback_handler,
)
from instore_gateway.settings import GatewaySettings
from instore_gateway.vault import MeteredVault, TokenVault, create_vault
from instore_gateway.webhooks import WebhookIntake, raw_webhook_route, webhook_handler
from instore_shared import http_head, metrics, telemetry
from instore_shared.contract.cart_lookup import CartKind, CartLookupReply, LookupStatus
from instore_shared.kafka import asyncapi
from instore_shared.kafka.admin import ensure_topics
from instore_shared.kafka.rpc import BrokerUnavailable, ReplyTimeout, RequestReplyClient
from instore_shared.kafka.topics import CART_REPLIES, CART_REQUESTS
from instore_shared.logging import get_logger, new_correlation_id
from instore_shared.url_allowlist import UrlAllowList

log = get_logger(__name__)

CART_REF = re.compile(r"[A-Za-z0-9_-]{2,256}")
"""A commercetools Cart id (UUID) or key: 2-256 of ``A-Za-z0-9_-``
(https://docs.commercetools.com/api/projects/carts#cart — ``key`` pattern)."""

CART_REF_SCHEMA = {"pattern": f"^{CART_REF.pattern}{END_OF_STRING}", "minLength": 2, "maxLength": 256}
"""The rule of :data:`CART_REF` for the OpenAPI document (checked by the handlers, answered 400 ``invalid-cart-id``)."""

CartRef = Annotated[
    str, Parameter(description="a commercetools Cart id or key: 2-256 of A-Z a-z 0-9 _ -", schema_extra=CART_REF_SCHEMA)
]

API_KEY_HEADER = "x-api-key"
SALE_CART_PREFIX = "/instore/callbacks/carts/"
RETURN_CART_PREFIX = "/instore/callbacks/return-carts/"


# -- middleware -----------------------------------------------------------------------
_AMBIGUOUS_PATH = re.compile(rb"%2f|%5c|//", re.IGNORECASE)
_QUIET_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
_CORS_PATHS = frozenset({"/sessions", "/host/events"})
"""The only routes a host app's browser may call (CORS headers are removed from every other answer: Litestar's
CORS config is app-wide, and the callbacks, webhooks and payment extensions are server-to-server)."""


def edge_middleware(app: ASGIApp, raw_routes: Sequence[RawRoute] = (), access_log: str = "all") -> ASGIApp:
    """The outermost layer of the gateway, around routing and error handling.

    ``raw_routes`` are served here instead of by Litestar (:class:`RawRoute`); anything else goes to ``app``.

    - gives every request a correlation id (scope state, log context, ``X-Correlation-Id``
      header, ``correlationId`` in problem bodies) — unknown routes and 405s included;
    - refuses a path whose raw form holds an encoded ``/`` or ``\\`` or an empty segment
      (400): after decoding it could route differently than a proxy in front decided;
    - answers ``HEAD`` wherever ``GET`` works, as the GET without its body (:mod:`instore_shared.http_head`);
    - marks every answer ``Cache-Control: no-store`` (carts carry customer data);
    - removes CORS headers from every answer but the host app's routes (:data:`_CORS_PATHS`);
    - logs one access line per request (not for the probes and /metrics; with ``access_log``
      ``errors`` only for answers ≥ 400 — a line per request was ~8 % of the gateway's CPU per
      callback, py-spy, issue 14), with the trace and span ids of the request's server span when
      tracing is on (the span is current where the answer is sent, not here).
    """

    every_request = access_log == "all"
    measured = http_metrics_middleware(_QUIET_PATHS)
    exact = {(r.method, r.path): (r.template, measured(_with_problems(r.app))) for r in raw_routes if not r.segments}
    prefixed = [(r, r.template, measured(_with_problems(r.app))) for r in raw_routes if r.segments]

    def raw_route(method: str, path: str) -> tuple[str, ASGIApp] | None:
        found = exact.get((method, path))
        if found is not None:
            return found
        for route, template, served in prefixed:
            if route.matches(method, path):
                return template, served
        return None

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await app(scope, receive, send)
            return
        method = scope["method"]
        if method == "HEAD":  # served as its GET, without the body (instore_shared.http_head), raw routes included
            scope, send = cast(HTTPScope, http_head.as_get(cast(Any, scope))), cast(Send, http_head.without_body(cast(Any, send)))
        cid = new_correlation_id()
        scope.setdefault("state", {})["correlation_id"] = cid
        started = time.perf_counter()
        status = NO_ANSWER
        trace_ids: dict[str, str] = {}
        cors_allowed = scope["path"] in _CORS_PATHS

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                telemetry.add_trace_ids(None, "", trace_ids)
                message["headers"] = [
                    *(
                        header
                        for header in message.get("headers", [])
                        if cors_allowed or not header[0].lower().startswith(b"access-control-")
                    ),
                    (b"x-correlation-id", cid.encode()),
                    (b"cache-control", b"no-store"),
                ]
            await send(message)

        with structlog.contextvars.bound_contextvars(correlation_id=cid):
            try:
                if _AMBIGUOUS_PATH.search(scope.get("raw_path") or b""):
                    await _send_problem(
                        send_wrapper,
                        Problem(
                            type=TYPE_BASE + "invalid-path",
                            title="Invalid path",
                            status=400,
                            detail="encoded slashes and empty path segments are not accepted",
                            instance=None,
                            correlationId=cid,
                        ),
                    )
                elif (found := raw_route(scope["method"], scope["path"])) is not None:
                    scope["path_template"] = found[0]  # the route template: Litestar sets it for its routes
                    await found[1](scope, receive, send_wrapper)
                else:
                    await app(scope, receive, send_wrapper)
            finally:
                if scope["path"] not in _QUIET_PATHS and (every_request or status >= 400):
                    log.info(
                        "http.request",
                        method=method,
                        path=redact_path(scope["path"]),
                        status=status,
                        ms=round((time.perf_counter() - started) * 1000, 2),
                        **trace_ids,
                    )

    return middleware


def _with_problems(route: ASGIApp) -> ASGIApp:
    """A raw route with the error handling Litestar gives its routes (:func:`~instore_gateway.problems.problem_of`:
    a :class:`ProblemError` becomes its problem body, a body nested too deeply 400, any other exception is logged
    and answered 500 ``internal-error``); a client gone mid-body gets nothing."""

    async def served(scope: Scope, receive: Receive, send: Send) -> None:
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        cid = scope["state"]["correlation_id"]
        try:
            await route(scope, receive, tracking_send)
        except ClientGone:
            return
        except Exception as exc:  # Litestar's exception handlers, for a route served below Litestar
            if not isinstance(exc, ProblemError | RecursionError):
                log.exception("gateway.unhandled_error", error=type(exc).__name__)
            if not started:
                problem, headers = problem_of(exc)
                problem.instance, problem.correlationId = redact_path(scope["path"]), cid
                await _send_problem(send, problem, headers)

    return served


async def _send_problem(send: Send, problem: Problem, headers: Mapping[str, str] | None = None) -> None:
    body = msgspec.json.encode(problem)
    start: HTTPResponseStartEvent = {
        "type": "http.response.start",
        "status": problem.status,
        "headers": [
            (b"content-type", PROBLEM_JSON.encode()),
            (b"content-length", str(len(body)).encode()),
            *((k.lower().encode(), v.encode()) for k, v in (headers or {}).items()),
        ],
    }
    await send(start)
    await send({"type": "http.response.body", "body": body, "more_body": False})  # False: the ASGI default


def client_address(request: Request[Any, Any, Any]) -> str:
    """The client's address: the rate-limit bucket.

    The TCP peer, unless it is one of ``GATEWAY_TRUSTED_PROXIES``: then the address that proxy
    reports in ``X-Forwarded-For`` (uvicorn rewrites the ASGI ``client``; see
    :func:`instore_shared.service.http_config`). From anyone else the header is ignored.
    """
    return request.client.host if request.client else "unknown"


# -- guard ----------------------------------------------------------------------------
async def callback_api_key_guard(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    """Let through only requests whose ``X-Api-Key`` equals the Callback API Key (constant-time compare).

    Source: https://docs.commercetools.com/instore/integration/callbacks (the key is sent as X-Api-Key).
    Whitespace around the value (SP, HTAB) is not part of it (RFC 9110 §5.5: optional whitespace
    around a field value is excluded) and is trimmed before the compare — the HTTP parser
    already drops leading whitespace but keeps trailing, so one rule for both.
    Raises :class:`ProblemError` 401 otherwise.
    """
    require_callback_api_key(connection.app.state.callback_api_key, connection.headers.getall(API_KEY_HEADER, []))


def require_callback_api_key(expected: bytes, given: list[str]) -> None:
    """:func:`callback_api_key_guard` over the ``X-Api-Key`` values ``given`` (latin-1 decoded, as Litestar does)."""
    # Exactly one header: with two, a proxy and this guard could each read a different one.
    if len(given) != 1 or not hmac.compare_digest(given[0].strip(" \t").encode(errors="surrogateescape"), expected):
        raise ProblemError(
            401,
            "unauthorized",
            "Unauthorized",
            "missing or wrong X-Api-Key",
            headers={"WWW-Authenticate": 'ApiKey header="X-Api-Key"'},
        )


# -- routes ---------------------------------------------------------------------------
_CART_RESPONSES = {
    400: problem_spec("cartId is not a commercetools id or key"),
    401: problem_spec("missing or wrong X-Api-Key"),
    404: problem_spec("no cart with that id or key"),
    409: problem_spec("the cart's state forbids taking it (e.g. not Active)"),
    422: problem_spec(
        "the cart's content forbids taking it (empty, wrong currency, bad return line), "
        "or Composable Commerce refused the lookup (commerce-refused)"
    ),
    502: problem_spec(
        "Composable Commerce could not be read (commerce-unavailable) "
        "or refused this integration's credentials (commerce-access-denied)"
    ),
    503: problem_spec("Kafka is unreachable; retry later"),
    504: problem_spec("cart-mapping did not answer in time"),
}

_STATUS_OF = {
    LookupStatus.NOT_FOUND: (404, "Cart not found"),
    LookupStatus.CONFLICT: (409, "Cart may not be taken"),
    LookupStatus.INVALID: (422, "Cart may not be taken"),
    LookupStatus.UPSTREAM_ERROR: (502, "Composable Commerce could not be read"),
}


async def _cart_callback(request: Request[Any, Any, State], kind: CartKind, cart_id: str) -> Response[bytes]:
    cart = await answer_cart_callback(request.app.state.cart_lookups, kind, cart_id, request.scope["state"]["correlation_id"])
    return Response(content=cart, media_type="application/json", status_code=200)


async def answer_cart_callback(lookups: CartLookups, kind: CartKind, cart_id: str, correlation_id: str) -> bytes:
    """Answer one cart callback: the Cart's JSON as cart-mapping returned it (200).

    Counted in ``instore_cart_lookups_total{kind, outcome}`` (outcome: the status answered).
    Raises :class:`ProblemError`: 400 ``invalid-cart-id``; 404/409/422/502 as cart-mapping
    decided (its reason as the type); 502 ``bad-reply``; 503 ``broker-unavailable``; 504
    ``cart-lookup-timeout``.
    """
    status = 500
    try:
        cart = await _look_up(lookups, kind, cart_id, correlation_id)
        status = 200
        return cart
    except ProblemError as exc:
        status = exc.status
        raise
    finally:
        metrics.CART_LOOKUPS.labels(kind.value, str(status)).inc()


async def _look_up(lookups: CartLookups, kind: CartKind, cart_id: str, cid: str) -> bytes:
    if not CART_REF.fullmatch(cart_id):
        raise ProblemError(
            400,
            "invalid-cart-id",
            "Invalid cart id",
            "cartId must be a commercetools cart id or key: 2-256 characters of A-Z a-z 0-9 _ -",
        )
    started = time.perf_counter()
    try:
        reply: CartLookupReply = await lookups.lookup(kind, cart_id, cid)
        metrics.CART_LOOKUP_ROUND_TRIP.labels(kind.value).observe(time.perf_counter() - started)
    except BrokerUnavailable as exc:
        raise ProblemError(
            503,
            "broker-unavailable",
            "Service unavailable",
            "the message broker cannot be reached; retry later",
            headers={"Retry-After": "5"},
        ) from exc
    except ReplyTimeout as exc:
        raise ProblemError(
            504, "cart-lookup-timeout", "Cart lookup timed out", "the cart service did not answer in time"
        ) from exc
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        log.error("cart_lookup.bad_reply", error=str(exc))
        raise ProblemError(502, "bad-reply", "Bad reply from the cart service") from exc
    cart = reply.cart_json()
    if reply.status is LookupStatus.FOUND and cart is not None:
        return cart
    status, title = _STATUS_OF.get(reply.status, (502, "Bad reply from the cart service"))
    raise ProblemError(status, reply.reason or reply.status.value, title, reply.detail, reason=reply.reason)


def raw_cart_callback_route(kind: CartKind, prefix: str, state: Callable[[], State]) -> ASGIApp:
    """``GET {prefix}{cartId}`` as a plain ASGI app (see :class:`RawRoute`): the API key, then
    :func:`answer_cart_callback` — what :func:`sale_cart` / :func:`return_cart` do
    (:mod:`instore_gateway.raw_routes`)."""

    async def route(scope: Scope, receive: Receive, send: Send) -> None:
        current = state()
        require_callback_api_key(current.callback_api_key, header_values(scope, b"x-api-key"))
        cart = await answer_cart_callback(
            current.cart_lookups, kind, scope["path"][len(prefix) :], scope["state"]["correlation_id"]
        )
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(cart)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": cart, "more_body": False})

    return route


@get(
    SALE_CART_PREFIX + "{cartId:str}",
    guards=[callback_api_key_guard],
    security=[{"CallbackApiKey": []}],
    summary="Sale cart callback",
    description="InStore asks for the Cart to collect payment for. Answers the Composable Commerce Cart "
    "as the commerce API returns it, after checks (Active, not empty, environment currency).",
    responses=_CART_RESPONSES,
    tags=["InStore callbacks"],
    operation_id="getSaleCart",
    media_type="application/json",
)
async def sale_cart(request: Request[Any, Any, State], cartId: CartRef) -> Response[bytes]:
    """``GET /instore/callbacks/carts/{cartId}`` — cartId is a cart id or key (assumed — see docs)."""
    return await _cart_callback(request, CartKind.SALE, cartId)


@get(
    RETURN_CART_PREFIX + "{cartId:str}",
    guards=[callback_api_key_guard],
    security=[{"CallbackApiKey": []}],
    summary="Return cart callback",
    description="InStore asks for the return Cart to refund. Every line must point at a purchased line "
    "with enough quantity not yet returned.",
    responses=_CART_RESPONSES,
    tags=["InStore callbacks"],
    operation_id="getReturnCart",
    media_type="application/json",
)
async def return_cart(request: Request[Any, Any, State], cartId: CartRef) -> Response[bytes]:
    """``GET /instore/callbacks/return-carts/{cartId}`` (assumed — see docs)."""
    return await _cart_callback(request, CartKind.RETURN, cartId)


@functools.cache
def _asyncapi(prefix: str) -> dict[str, Any]:
    return asyncapi.document(prefix=prefix)


@get(
    "/asyncapi.json",
    tags=["Operations"],
    summary="AsyncAPI 3.0 document of every Kafka topic of the integration",
    description="Every topic of the registry, dead-letter topics included, with its message schema, key and the "
    "processes that send and receive it (instore_shared.kafka.asyncapi; committed as docs/api/asyncapi.json). "
    "Each Kafka service serves FastStream's view of its own subscribers at its /asyncapi.json.",
    sync_to_thread=False,
)
def asyncapi_document(state: State) -> dict[str, Any]:
    """The integration's AsyncAPI document (:mod:`instore_shared.kafka.asyncapi`): the whole system rather than
    the gateway's topics only, because the gateway is the one address a platform team is given, and a reader of
    one topic wants to see its producer and its consumers in one place. Topic names and default consumer groups
    carry this deployment's ``KAFKA_TOPIC_PREFIX``."""
    return _asyncapi(state.topics.prefix)


@get("/healthz", tags=["Operations"], summary="Liveness: the process is up")
async def healthz() -> dict[str, str]:
    """Always 200 while the process serves HTTP."""
    return {"status": "ok"}


@get(
    "/readyz",
    tags=["Operations"],
    summary="Readiness: Kafka, its reply reader and producer, and the token vault",
    responses={
        503: problem_spec(
            "not connected to Kafka, no reply reader running, the producer being replaced, or the vault unreachable"
        )
    },
)
async def readyz(request: Request[Any, Any, State]) -> dict[str, str]:
    """200 when Kafka answers, the cart-reply reader runs, the producer is healthy and the token
    vault answers, else a 503 problem body saying which."""
    lookups = request.app.state.cart_lookups
    if not await lookups.ready():
        metrics.READY.set(0)
        reason = getattr(lookups, "unready_reason", lambda: None)() or "not connected to Kafka"
        raise ProblemError(503, "not-ready", "Not ready", reason, headers={"Retry-After": "2"})
    if not await request.app.state.vault.ready():
        metrics.READY.set(0)
        raise ProblemError(503, "not-ready", "Not ready", "the token vault cannot be reached", headers={"Retry-After": "2"})
    metrics.READY.set(1)
    return {"status": "ready"}


def _name_server_span(request: Request[Any, Any, Any]) -> None:
    """Name the current server span ``<method> <route template>`` and set ``http.route`` (tracing on only)."""
    span = trace.get_current_span()
    if span.is_recording():
        template = request.scope.get("path_template") or ""
        span.update_name(f"{request.method} {template}")
        span.set_attribute("http.route", template)


class _MetricsRoute(PrometheusController):
    """``GET /metrics``: every metric family of this process (Prometheus text format; docs/operations.md)."""

    path = "/metrics"
    include_in_schema = False


# -- assembly -------------------------------------------------------------------------
@dataclass
class Ports:
    """What the gateway talks to; each left None is built from settings and closed with the app.

    Tests pass fakes: ``cart_lookups`` (:class:`CartLookups`), ``events``
    (:class:`~instore_gateway.sessions.EventPublisher`), ``vault``
    (:class:`~instore_gateway.vault.TokenVault`), ``ims`` (:class:`ImsVerifier`),
    ``instore_auth`` (:class:`InStoreAuthClient`).
    """

    cart_lookups: CartLookups | None = None
    events: EventPublisher | None = None
    vault: TokenVault | None = None
    ims: ImsVerifier | None = None
    instore_auth: InStoreAuthClient | None = None


def create_app(
    settings: GatewaySettings | None = None, ports: Ports | None = None, *, raw_routes: bool | None = None
) -> Litestar:
    """The gateway application.

    Args:
        settings: read from the environment when omitted.
        ports: fakes for tests; what is missing is built from ``settings`` (a Kafka
            request/reply client that also publishes events — topics created when missing —,
            the token vault, the IMS verifier, the InStore auth client).
        raw_routes: serve the webhooks and the cart callbacks below Litestar (:class:`RawRoute`); by
            default unless tracing is on (the OpenTelemetry plugin gives each Litestar request its server span).
            Tests run both ways.
    """
    settings = settings or GatewaySettings()
    given = ports or Ports()
    topics = settings.topic_names()

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        closers: list[Any] = []
        client: RequestReplyClient | None = None
        if given.cart_lookups is None or given.events is None:

            async def create_topics() -> None:
                await ensure_topics(
                    settings.kafka_bootstrap_servers,
                    topics.all(),
                    settings.kafka_topic_partitions,
                    settings.kafka_topic_replication_factor,
                    timeout_s=5.0,
                    client_options=settings.kafka_client_options(),
                )

            client = RequestReplyClient(
                settings.kafka_bootstrap_servers,
                topics.name(CART_REPLIES),
                f"{settings.kafka_client_id_prefix}-gateway",
                prepare=create_topics if settings.kafka_create_topics else None,
                client_options=settings.kafka_client_options(),
                producer_options={"request_timeout_ms": settings.gateway_kafka_request_timeout_ms},
            )
            await client.start()
            if settings.gateway_kafka_connect_wait_seconds:
                await client.wait_connected(settings.gateway_kafka_connect_wait_seconds)
        # "is None", not "or": an empty in-memory vault is falsy (it has a length).
        if given.cart_lookups is not None:
            app.state.cart_lookups = given.cart_lookups
        else:
            assert client is not None  # made above whenever the lookups are not given
            app.state.cart_lookups = KafkaCartLookups(
                client, settings.gateway_cart_lookup_timeout_seconds, topics.name(CART_REQUESTS)
            )
        app.state.events = given.events if given.events is not None else client
        app.state.vault = MeteredVault(given.vault if given.vault is not None else create_vault(settings))
        app.state.ims = (
            given.ims
            if given.ims is not None
            else ImsVerifier(
                settings.ims_jwks_url,
                settings.ims_issuer,
                settings.ims_audience,
                [a.strip() for a in settings.ims_algorithms.split(",") if a.strip()],
                leeway_seconds=settings.ims_leeway_seconds,
            )
        )
        app.state.instore_auth = (
            given.instore_auth
            if given.instore_auth is not None
            else InStoreAuthClient(
                settings.instore_auth_base_url,
                settings.instore_auth_token_path,
                settings.instore_auth_request_body,
                settings.instore_tenant_id,
                settings.instore_connection_key.get_secret_value(),
                settings.instore_auth_scopes.split(),
                settings.instore_auth_timeout_seconds,
            )
        )
        app.state.webhook_intake = WebhookIntake(
            app.state.events,
            settings.instore_webhook_secret.get_secret_value().encode(),
            webhook_names,
            settings.webhook_publish_timeout_seconds,
            settings.webhook_max_body_bytes,
            topics,
        )
        app.state.payment_extension_intake = payment_extension_intake(
            app.state.events,
            settings.instore_webhook_secret.get_secret_value().encode(),
            settings.instore_webhook_signature_headers.split(","),
            settings.payment_extension_publish_timeout_seconds,
            settings.payment_extension_max_body_bytes,
            allowed_urls,
            topics,
        )
        closers += [
            x
            for x, g in (
                (app.state.vault.inner, given.vault),
                (app.state.ims, given.ims),
                (app.state.instore_auth, given.instore_auth),
            )
            if g is None
        ]
        log.info(
            "gateway.started",
            port=settings.gateway_http_port,
            vault=settings.token_vault_backend,
            event_loop=type(asyncio.get_running_loop()).__module__.split(".")[0],
        )  # "uvloop" under uvicorn
        try:
            yield
        finally:
            if client is not None:
                await client.stop()
            for closer in closers:
                await closer.aclose()
            telemetry.shutdown_tracing()
            log.info("gateway.stopped")

    allowed_urls = UrlAllowList(settings.payment_extension_allowed_urls)
    webhook_names = tuple(n.strip().lower() for n in settings.instore_webhook_signature_headers.split(",") if n.strip())
    plugins: list[Any] = []
    tracing = telemetry.configure_tracing("gateway")
    if tracing:
        from litestar.plugins.opentelemetry import OpenTelemetryConfig, OpenTelemetryPlugin

        # A server span per request, parent of the Kafka publish spans. The plugin wraps the app
        # before routing, so the span is first named by the method only and renamed to the route
        # template once routed (_name_server_span): a raw path would put cart ids in span names.
        plugins.append(
            OpenTelemetryPlugin(
                OpenTelemetryConfig(
                    exclude=list(_QUIET_PATHS),
                    exclude_spans=["receive", "send"],
                    scope_span_details_extractor=lambda scope: (str(scope.get("method") or "HTTP"), {}),
                )
            )
        )
    origins = [o.strip().rstrip("/") for o in settings.gateway_cors_allow_origins.split(",") if o.strip()]
    # Browsers of the listed host apps may call the host-app routes (sessions, host events); nothing else is exposed
    # to them: the edge layer removes CORS headers from every other answer (callbacks, webhooks and payment
    # extensions are server-to-server), however the route is served.
    cors = (
        CORSConfig(
            allow_origins=origins,
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type", "X-User-Key"],
            allow_credentials=False,
            expose_headers=["X-Correlation-Id", "Retry-After"],
            max_age=600,
        )
        if origins
        else None
    )
    app = Litestar(
        cors_config=cors,
        route_handlers=[
            sale_cart,
            return_cart,
            token_callback_handler(callback_api_key_guard),
            healthz,
            readyz,
            _MetricsRoute,
            asyncapi_document,
            webhook_handler(
                settings.webhook_max_body_bytes,
                settings.instore_webhook_signature_headers.split(","),
                settings.webhook_publish_timeout_seconds,
            ),
            *payment_extension_handlers(
                settings.payment_extension_path_prefix,
                settings.payment_extension_max_body_bytes,
                settings.instore_webhook_signature_headers.split(","),
                settings.payment_extension_publish_timeout_seconds,
                allowed_urls,
            ),
            host_events_router(
                settings.host_events_max_body_bytes,
                settings.host_events_max_batch,
                settings.host_events_max_detail_bytes,
                settings.host_events_rate_limit_per_minute,
                settings.host_events_publish_timeout_seconds,
            ),
            # POST /sessions is rate-limited per client address (in this replica's memory).
            Router(
                "/",
                route_handlers=[create_session],
                middleware=[
                    RateLimitConfig(
                        rate_limit=("minute", settings.sessions_rate_limit_per_minute),
                        set_rate_limit_headers=True,
                        identifier_for_request=client_address,
                    ).middleware,
                ],
            ),
        ],
        lifespan=[lifespan],
        middleware=[http_metrics_middleware(_QUIET_PATHS)],
        plugins=plugins,
        before_request=_name_server_span if tracing else None,
        state=State(
            {
                "callback_api_key": settings.instore_callback_api_key.get_secret_value().strip(" \t").encode(),
                "webhook_secret": settings.instore_webhook_secret.get_secret_value().encode(),
                "topics": topics,
            }
        ),
        exception_handlers={
            ProblemError: handle_problem,
            HTTPException: handle_http_exception,
            RecursionError: handle_too_deep,
            Exception: handle_unexpected,
        },
        openapi_config=openapi.openapi_config(settings, version="0.1.0"),
        debug=False,
        logging_config=None,  # logging is structlog's, configured in __main__
    )
    # Around Litestar's router and exception handling, so 404 and 405 answers get it too.
    raw = not tracing if raw_routes is None else raw_routes
    app.asgi_handler = edge_middleware(
        app.asgi_handler,
        access_log=settings.gateway_access_log,
        raw_routes=[
            RawRoute("POST", "/instore/webhooks", "/instore/webhooks", raw_webhook_route(lambda: app.state.webhook_intake)),
            RawRoute(
                "GET",
                SALE_CART_PREFIX,
                SALE_CART_PREFIX + "{cartId}",
                raw_cart_callback_route(CartKind.SALE, SALE_CART_PREFIX, lambda: app.state),
                segments=1,
            ),
            RawRoute(
                "GET",
                RETURN_CART_PREFIX,
                RETURN_CART_PREFIX + "{cartId}",
                raw_cart_callback_route(CartKind.RETURN, RETURN_CART_PREFIX, lambda: app.state),
                segments=1,
            ),
            *raw_payment_extension_routes(settings.payment_extension_path_prefix, lambda: app.state.payment_extension_intake),
        ]
        if raw
        else [],
    )
    return app
