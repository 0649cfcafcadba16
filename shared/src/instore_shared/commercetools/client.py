"""Async Composable Commerce client on httpx.

- OAuth 2.0 client credentials by Authlib's ``AsyncOAuth2Client`` (a well-kept library):
  the token is cached and fetched again 60 s before it expires; on a 401 the client
  fetches a new token once and repeats the call.
- Bounded retries with exponential backoff and full jitter (tenacity) on 429, 5xx and
  network errors; every other error is raised at once as a typed error.
- Answers are returned as raw bytes too, so a Cart can be passed on exactly as the API
  represented it.

Docs: https://docs.commercetools.com/api/authorization, https://docs.commercetools.com/api/errors
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
import warnings
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import authlib.deprecate  # installs an "always" filter for its own warning; ours must come after
import httpx
import msgspec
from httpx_aiohttp import AiohttpTransport
from opentelemetry import trace
from opentelemetry.trace import SpanKind

with warnings.catch_warnings():
    # Authlib >= 1.7 prefers the "httpx2" fork and warns when it falls back to httpx, which
    # this project uses everywhere; the httpx integration is the same code path.
    warnings.simplefilter("ignore", authlib.deprecate.AuthlibDeprecationWarning)
    from authlib.integrations.httpx_client import AsyncOAuth2Client
from tenacity import (
    AsyncRetrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_random_exponential,
)

from instore_shared import metrics, telemetry
from instore_shared.commercetools.errors import (
    AuthenticationFailed,
    NotFound,
    TransientError,
    error_from_response,
)
from instore_shared.logging import get_logger
from instore_shared.settings import CommercetoolsSettings

log = get_logger(__name__)

TOKEN_LEEWAY_SECONDS = 60
"""A token is fetched anew this long before it expires."""

_LIMITS = httpx.Limits(max_connections=100, max_keepalive_connections=50)

RequestHook = Callable[[httpx.Request], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class ApiResponse:
    """One successful answer: status, raw JSON bytes, and the decoded JSON."""

    status: int
    content: bytes

    def json(self) -> Any:
        """The body decoded as JSON (dicts and lists)."""
        return msgspec.json.decode(self.content)


class _RetryableStatus(Exception):
    def __init__(self, response: httpx.Response) -> None:
        super().__init__(response.status_code)
        self.response = response


class CommercetoolsClient:
    """Composable Commerce HTTP API client for one project.

    Args:
        settings: URLs, credentials, timeouts and retry bounds.
        transport: an httpx transport (tests pass ``httpx.MockTransport``).
        request_hooks: async callables run on every outgoing request (contract tests record them).
        clock: monotonic seconds, for token expiry (tests pass a fake).

    Raises (from every call): :class:`~instore_shared.commercetools.errors.NotFound`,
    ``ConcurrentModification``, ``DuplicateField``, ``InvalidInput``, and
    ``TransientError`` once the bounded retries are spent.
    """

    def __init__(
        self,
        settings: CommercetoolsSettings,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        request_hooks: list[RequestHook] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._settings = settings
        self._clock = clock
        self._base = f"{settings.api_url.rstrip('/')}/{settings.project_key}"
        # aiohttp does the socket-level HTTP under httpx's API: httpx's own pool costs ~9x the
        # CPU per call under concurrency (2.8 vs 0.3 ms measured, see bench/), the gap that
        # decides callback throughput on two cores.
        transport = transport or AiohttpTransport(limits=_LIMITS)
        self._http = httpx.AsyncClient(
            timeout=settings.timeout_seconds,
            transport=transport,
            event_hooks={"request": list(request_hooks or [])},
        )
        # Authlib does the OAuth 2.0 client-credentials exchange (request, Basic auth, answer
        # parsing, errors). We keep the token and add the header ourselves: Authlib's per-call
        # auth flow costs ~0.7 ms per API call (measured), and the cache is three fields.
        self._oauth = AsyncOAuth2Client(
            client_id=settings.client_id,
            client_secret=settings.client_secret.get_secret_value(),
            scope=settings.effective_scopes(),
            token_endpoint=f"{settings.auth_url.rstrip('/')}/oauth/token",
            token_endpoint_auth_method="client_secret_basic",
            grant_type="client_credentials",
            timeout=settings.timeout_seconds,
            transport=transport,
        )
        self._token: str | None = None
        self._token_expires_at = 0.0
        self._token_lock = asyncio.Lock()
        # Before Authlib reads the answer: a 503 or a 429 of the token endpoint is a blip, not a refusal.
        self._oauth.register_compliance_hook("access_token_response", self._check_token_answer)

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._http.aclose()
        await self._oauth.aclose()

    async def __aenter__(self) -> CommercetoolsClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- resources -------------------------------------------------------------------
    async def get_cart(self, cart_id: str, expand: tuple[str, ...] = ()) -> ApiResponse:
        """``GET /carts/{id}``. Raises :class:`NotFound` when there is no such cart."""
        return await self.request("GET", f"/carts/{quote(cart_id, safe='')}", params=_expand(expand))

    async def get_cart_by_key(self, key: str, expand: tuple[str, ...] = ()) -> ApiResponse:
        """``GET /carts/key={key}``. Raises :class:`NotFound` when there is no such cart."""
        return await self.request("GET", f"/carts/key={quote(key, safe='')}", params=_expand(expand))

    async def get_order(self, order_id: str, expand: tuple[str, ...] = ()) -> ApiResponse:
        """``GET /orders/{id}``. Raises :class:`NotFound`."""
        return await self.request("GET", f"/orders/{quote(order_id, safe='')}", params=_expand(expand))

    async def get_order_by_order_number(self, order_number: str, expand: tuple[str, ...] = ()) -> ApiResponse:
        """``GET /orders/order-number={orderNumber}``. Raises :class:`NotFound`."""
        return await self.request("GET", f"/orders/order-number={quote(order_number, safe='')}", params=_expand(expand))

    async def update(self, resource: str, resource_id: str, version: int, actions: list[dict[str, Any]]) -> ApiResponse:
        """``POST /{resource}/{id}`` with ``{version, actions}`` (``resource``: ``orders``, ``payments``, ``carts``…).

        https://docs.commercetools.com/api/general-concepts#optimistic-concurrency-control —
        raises ``ConcurrentModification`` (409, with the current version) when ``version`` is
        stale, ``InvalidInput`` for a refused action, ``NotFound``.
        """
        return await self.request(
            "POST", f"/{resource}/{quote(resource_id, safe='')}", json={"version": version, "actions": actions}
        )

    async def create_order_from_cart(self, cart_id: str, cart_version: int, order_number: str, payment_state: str) -> ApiResponse:
        """``POST /orders`` with an ``OrderFromCartDraft`` (https://docs.commercetools.com/api/projects/orders#create-order-from-cart).

        ``payment_state`` is ``BalanceDue|Failed|Pending|CreditOwed|Paid``. Raises
        :class:`DuplicateField` when ``order_number`` is taken, ``ConcurrentModification``
        when ``cart_version`` is not the cart's, ``InvalidInput`` e.g. for a cart already ordered.
        """
        draft = {
            "cart": {"typeId": "cart", "id": cart_id},
            "version": cart_version,
            "orderNumber": order_number,
            "paymentState": payment_state,
        }
        return await self.request("POST", "/orders", json=draft)

    async def change_order_state(self, order_id: str, version: int, order_state: str) -> ApiResponse:
        """``POST /orders/{id}`` with ``changeOrderState`` (``Open|Confirmed|Complete|Cancelled``).

        Raises ``ConcurrentModification`` when ``version`` is stale, ``NotFound``.
        """
        body = {"version": version, "actions": [{"action": "changeOrderState", "orderState": order_state}]}
        return await self.request("POST", f"/orders/{quote(order_id, safe='')}", json=body)

    async def find_order_by_cart(self, cart_id: str) -> ApiResponse | None:
        """The Order created from cart ``cart_id`` (``GET /orders?where=cart(id="…")``), or None."""
        response = await self.request(
            "GET", "/orders", params={"where": f'cart(id="{cart_id}")', "limit": "1", "withTotal": "false"}
        )
        results = response.json().get("results") or []
        return ApiResponse(200, msgspec.json.encode(results[0])) if results else None

    async def find_cart(self, ref: str, expand: tuple[str, ...] = ()) -> ApiResponse:
        """The cart whose id is ``ref``, else the cart whose key is ``ref``. Raises :class:`NotFound`.

        Resource ids are UUIDs, so a ``ref`` that is not one is looked up by key only (one call).
        """
        if looks_like_id(ref):
            try:
                return await self.get_cart(ref, expand)
            except NotFound:
                pass
        return await self.get_cart_by_key(ref, expand)

    async def find_order(self, ref: str, expand: tuple[str, ...] = ()) -> ApiResponse:
        """The order whose id is ``ref``, else the one whose ``orderNumber`` is ``ref``. Raises :class:`NotFound`."""
        if looks_like_id(ref):
            try:
                return await self.get_order(ref, expand)
            except NotFound:
                pass
        return await self.get_order_by_order_number(ref, expand)

    async def query(
        self,
        path: str,
        where: Sequence[str] = (),
        *,
        sort: str = "id asc",
        limit: int = 100,
        expand: tuple[str, ...] = (),
    ) -> list[dict[str, Any]]:
        """One page of a query endpoint (``GET /{path}?where=…&sort=…&limit=…&withTotal=false``): its ``results``.

        ``path`` is relative to the project (``carts``, ``orders``, ``custom-objects/{container}``);
        every ``where`` predicate must hold (https://docs.commercetools.com/api/predicates/query);
        ``limit`` is 1–500 (the API's maximum). ``withTotal=false`` spares the API counting the whole
        result set (https://docs.commercetools.com/api/general-concepts#paging). Raises
        :class:`InvalidInput` for a predicate the API refuses.
        """
        params: dict[str, str | list[str]] = {"sort": sort, "limit": str(limit), "withTotal": "false"}
        if where:
            params["where"] = list(where)
        if expand:
            params["expand"] = list(expand)
        results = (await self.request("GET", f"/{path}", params=params)).json().get("results")
        return results if isinstance(results, list) else []

    async def get_custom_object(self, container: str, key: str) -> ApiResponse:
        """``GET /custom-objects/{container}/{key}`` (https://docs.commercetools.com/api/projects/custom-objects).

        Raises :class:`NotFound` when there is none.
        """
        return await self.request("GET", f"/custom-objects/{quote(container, safe='')}/{quote(key, safe='')}")

    async def put_custom_object(self, container: str, key: str, value: Any, version: int | None = None) -> ApiResponse:
        """``POST /custom-objects`` with a ``CustomObjectDraft``: create, or replace the value of, the object.

        With ``version``, the write is a compare-and-set: it must be the stored object's version,
        and ``0`` creates only when no such object exists — otherwise ``ConcurrentModification``
        (409). ``value`` is JSON; fields that are ``null`` are not saved by the API.
        """
        draft: dict[str, Any] = {"container": container, "key": key, "value": value}
        if version is not None:
            draft["version"] = version
        return await self.request("POST", "/custom-objects", json=draft)

    # -- transport -------------------------------------------------------------------
    async def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str | list[str]] | None = None,
        json: Any = None,
    ) -> ApiResponse:
        """One API call relative to ``{api_url}/{project_key}``, with auth and bounded retries.

        Returns the 2xx answer; raises a typed :class:`CommercetoolsError` otherwise.
        """
        url = f"{self._base}{path}"
        content = msgspec.json.encode(json) if json is not None else None
        headers = {"Content-Type": "application/json"} if content is not None else None
        s = self._settings
        operation = metrics.commerce_operation(method, path)
        status = "error"
        started = time.perf_counter()
        # Our span, not an HTTP client instrumentation's: its name is the operation (a path
        # template, ids removed), the same bounded label the metrics use.
        # (none when tracing is off: the no-op span cost ~3 % of a cart lookup's CPU, py-spy, issue 14)
        with (
            telemetry.tracer().start_as_current_span(
                f"commercetools {operation}",
                kind=SpanKind.CLIENT,
                attributes={"http.request.method": method, "url.template": operation.split(" ", 1)[1]},
            )
            if telemetry.active()
            else contextlib.nullcontext(trace.INVALID_SPAN) as span
        ):
            try:
                async for attempt in AsyncRetrying(
                    stop=stop_after_attempt(s.max_attempts),
                    wait=wait_random_exponential(multiplier=s.backoff_initial_seconds, max=s.backoff_max_seconds),
                    retry=retry_if_exception_type((httpx.TransportError, _RetryableStatus)),
                    reraise=True,
                ):
                    with attempt:
                        if attempt.retry_state.attempt_number > 1:
                            metrics.COMMERCE_RETRIES.labels(operation).inc()
                        response = await self._send(method, url, params, content, headers)
                        if response.status_code == 429 or response.status_code >= 500:
                            raise _RetryableStatus(response)
            except _RetryableStatus as exc:
                status = str(exc.response.status_code)
                raise error_from_response(exc.response.status_code, exc.response.content) from None
            except httpx.TransportError as exc:
                raise TransientError(0, type(exc).__name__, f"{method} {path}: {exc!s}") from exc
            else:
                status = str(response.status_code)
            finally:
                elapsed = time.perf_counter() - started
                metrics.COMMERCE_REQUESTS.labels(operation, status).inc()
                metrics.COMMERCE_DURATION.labels(operation).observe(elapsed)
                if status.isdigit():
                    span.set_attribute("http.response.status_code", int(status))
            log.debug("commercetools.call", method=method, path=path, status=response.status_code, ms=round(elapsed * 1000, 1))
            if response.is_success:
                return ApiResponse(response.status_code, response.content)
            raise error_from_response(response.status_code, response.content)

    async def _send(
        self,
        method: str,
        url: str,
        params: Mapping[str, Any] | None,
        content: bytes | None,
        headers: dict[str, str] | None,
    ) -> httpx.Response:
        token = await self._bearer()
        response = await self._http.request(
            method, url, params=params, content=content, headers={**(headers or {}), "Authorization": token}
        )
        if response.status_code == 401:
            # The token was revoked or the auth server restarted: fetch a new one, once.
            token = await self._bearer(stale=token)
            response = await self._http.request(
                method, url, params=params, content=content, headers={**(headers or {}), "Authorization": token}
            )
        return response

    async def _bearer(self, stale: str | None = None) -> str:
        """``Bearer <token>``: the cached token, fetched anew when missing, within
        ``TOKEN_LEEWAY_SECONDS`` of expiry, or equal to ``stale`` (refused with 401)."""
        if self._token and self._token != stale and self._clock() < self._token_expires_at:
            return self._token
        async with self._token_lock:  # one fetch for all the calls waiting on it
            if self._token and self._token != stale and self._clock() < self._token_expires_at:
                return self._token
            token = await self._fetch_token()
            expires_in = float(token.get("expires_in") or 0) or 3600.0
            self._token = f"Bearer {token['access_token']}"
            self._token_expires_at = self._clock() + max(expires_in - TOKEN_LEEWAY_SECONDS, expires_in / 2)
            log.info("commercetools.token_fetched", expires_in_s=int(expires_in))
            return self._token

    async def _fetch_token(self) -> dict[str, Any]:
        """One client-credentials exchange (Authlib), its answer classified before Authlib reads it.

        - 2xx with an ``access_token`` → the token answer;
        - 400/401 carrying an RFC 6749 §5.2 error code (``invalid_client``, ``invalid_scope``…),
          or a 2xx naming an ``error`` → :class:`AuthenticationFailed`: the credentials or scopes
          are wrong and a retry cannot help;
        - anything else — 429, 5xx, another 4xx from a proxy, a 2xx without a token, a body
          that is not JSON — is a blip of the auth server: ``_RetryableStatus``, retried like
          any call by :meth:`request` (bounded, jittered) and raised as ``TransientError``
          after, so the consumers spend their outage budget on it instead of dead-lettering a
          paid sale. Timeouts and network errors pass through as ``httpx.TransportError``
          (retried the same way).

        https://docs.commercetools.com/api/authorization#client-credentials-flow,
        https://www.rfc-editor.org/rfc/rfc6749#section-5.2
        """
        try:
            token = await self._oauth.fetch_token()
        except (_RetryableStatus, AuthenticationFailed, httpx.TransportError):
            raise  # classified by _check_token_answer, or a network error: request() retries what it should
        except Exception as exc:  # Authlib's OAuthError: a 2xx that names an error
            raise AuthenticationFailed(
                401, getattr(exc, "error", None) or "invalid_client", f"token request refused: {type(exc).__name__}"
            ) from exc
        if not isinstance(token.get("access_token"), str) or not token["access_token"]:
            raise _RetryableStatus(httpx.Response(502, content=b'{"message": "token answer without access_token"}'))
        return dict(token)

    def _check_token_answer(self, response: httpx.Response) -> httpx.Response:
        """Authlib's ``access_token_response`` hook: refusals and blips are told apart here (see :meth:`_fetch_token`)."""
        if response.is_success:
            return response
        if response.status_code in (400, 401):
            code = _oauth_error_code(response)
            if code in _PERMANENT_OAUTH_ERRORS:
                raise AuthenticationFailed(response.status_code, code, "the token endpoint refused the client credentials")
        log.warning("commercetools.token_endpoint_unavailable", status=response.status_code)
        raise _RetryableStatus(response)


_PERMANENT_OAUTH_ERRORS = frozenset(
    {"invalid_client", "invalid_scope", "unauthorized_client", "unsupported_grant_type", "invalid_grant", "invalid_request"}
)
"""RFC 6749 §5.2 error codes: the request as configured will never get a token."""


def _oauth_error_code(response: httpx.Response) -> str:
    """The OAuth ``error`` of a token endpoint answer (commercetools also lists it in ``errors[0].code``), or ``""``."""
    try:
        body = response.json()
    except ValueError:
        return ""
    if not isinstance(body, dict):
        return ""
    code = body.get("error")
    if not isinstance(code, str):
        errors = body.get("errors")
        first = errors[0] if isinstance(errors, list) and errors and isinstance(errors[0], dict) else {}
        code = first.get("code")
    return code if isinstance(code, str) else ""


_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")


def looks_like_id(ref: str) -> bool:
    """True when ``ref`` has the form of a resource id (a UUID); keys and order numbers may too, rarely."""
    return bool(_UUID.match(ref))


def _expand(expand: tuple[str, ...]) -> dict[str, list[str]] | None:
    return {"expand": list(expand)} if expand else None
