"""The InStore auth client: tenant id + connection key + user id → a user access token.

ASSUMED — see docs. InStore's documentation names these inputs (API base URL, tenant ID,
user ID, connection key, optional scopes; https://docs.commercetools.com/instore/ and
../shared/reference/instore-contract.md §2) but the call that turns them into a user access
token is not public. Everything about its shape lives here and in settings, so it changes
in one place when a retailer confirms the real contract:

- ``POST {INSTORE_AUTH_BASE_URL}{INSTORE_AUTH_TOKEN_PATH}`` with a JSON body made from
  ``INSTORE_AUTH_REQUEST_BODY``, a JSON template whose string values ``"{tenantId}"``,
  ``"{userId}"``, ``"{connectionKey}"``, ``"{locationId}"``, ``"{workstationId}"`` and
  ``"{scopes}"`` (a list) are replaced by the values — whole values only, so no value can
  inject JSON;
- the answer is read as OAuth 2.0 (RFC 6749 §5.1): ``access_token`` and ``expires_in``
  (seconds).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

import httpx
import msgspec

from instore_shared.logging import get_logger

log = get_logger(__name__)


class InStoreAuthUnavailable(Exception):
    """InStore's auth API failed, refused us, or answered something unreadable (HTTP 502 to the caller)."""


class InStoreAuthTimeout(Exception):
    """InStore's auth API did not answer within the timeout (HTTP 504 to the caller)."""


@dataclass(frozen=True, slots=True)
class UserAccessToken:
    """An InStore user access token and when it expires (Unix seconds)."""

    access_token: str
    expires_at: float


class _TokenAnswer(msgspec.Struct):
    access_token: str
    expires_in: int | float


_PLACEHOLDERS = ("{tenantId}", "{userId}", "{connectionKey}", "{locationId}", "{workstationId}", "{scopes}")


def render_body(template: str, values: dict[str, Any]) -> bytes:
    """The request body: ``template`` (JSON) with each placeholder string replaced by its value.

    Raises ``ValueError`` for a template that is not JSON or names an unknown placeholder.
    """
    try:
        shape = msgspec.json.decode(template)
    except msgspec.DecodeError as exc:
        raise ValueError("INSTORE_AUTH_REQUEST_BODY is not JSON") from exc

    def fill(node: Any) -> Any:
        if isinstance(node, dict):
            return {k: fill(v) for k, v in node.items()}
        if isinstance(node, list):
            return [fill(v) for v in node]
        if isinstance(node, str) and node.startswith("{") and node.endswith("}"):
            if node not in _PLACEHOLDERS:
                raise ValueError(f"INSTORE_AUTH_REQUEST_BODY: unknown placeholder {node}")
            return values[node[1:-1]]
        return node

    return msgspec.json.encode(fill(shape))


class InStoreAuthClient:
    """Asks InStore for a colleague's user access token.

    Args:
        base_url: InStore API base URL (``INSTORE_AUTH_BASE_URL``).
        token_path: path of the token call (``INSTORE_AUTH_TOKEN_PATH``).
        body_template: JSON template of the body (``INSTORE_AUTH_REQUEST_BODY``).
        tenant_id, connection_key, scopes: the environment's credentials.
        timeout: seconds for the whole call.
        transport: httpx transport (tests).
    """

    def __init__(
        self,
        base_url: str,
        token_path: str,
        body_template: str,
        tenant_id: str,
        connection_key: str,
        scopes: list[str],
        timeout: float,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        render_body(
            body_template, dict.fromkeys(("tenantId", "userId", "connectionKey", "locationId", "workstationId", "scopes"), "")
        )  # fail at start, not per call
        self._url = base_url.rstrip("/") + "/" + token_path.lstrip("/")
        self._template = body_template
        self._tenant_id = tenant_id
        self._connection_key = connection_key
        self._scopes = scopes
        self._timeout = timeout
        self._http = httpx.AsyncClient(timeout=timeout, transport=transport)

    async def aclose(self) -> None:
        """Close the HTTP client."""
        await self._http.aclose()

    async def user_access_token(self, user_id: str, location_id: str, workstation_id: str) -> UserAccessToken:
        """The user access token for ``user_id`` at a location and workstation.

        Raises :class:`InStoreAuthTimeout` or :class:`InStoreAuthUnavailable`; never logs the
        connection key or the token.
        """
        body = render_body(
            self._template,
            {
                "tenantId": self._tenant_id,
                "userId": user_id,
                "connectionKey": self._connection_key,
                "locationId": location_id,
                "workstationId": workstation_id,
                "scopes": self._scopes,
            },
        )
        started = time.perf_counter()
        try:
            # httpx's timeout is per read/write step; this bounds the whole call.
            async with asyncio.timeout(self._timeout):
                response = await self._http.post(self._url, content=body, headers={"Content-Type": "application/json"})
        except (httpx.TimeoutException, TimeoutError) as exc:
            log.warning("instore_auth.timeout", url=self._url)
            raise InStoreAuthTimeout("InStore auth API timed out") from exc
        except httpx.HTTPError as exc:
            log.warning("instore_auth.unreachable", url=self._url, error=type(exc).__name__)
            raise InStoreAuthUnavailable("InStore auth API unreachable") from exc
        ms = round((time.perf_counter() - started) * 1000, 1)
        if response.status_code != 200:
            log.warning("instore_auth.refused", url=self._url, status=response.status_code, ms=ms)
            raise InStoreAuthUnavailable(f"InStore auth API answered {response.status_code}")
        try:
            answer = msgspec.json.decode(response.content, type=_TokenAnswer)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            log.warning("instore_auth.unreadable_answer", url=self._url)
            raise InStoreAuthUnavailable("InStore auth API answered something unreadable") from exc
        if not answer.access_token or answer.expires_in <= 0:
            raise InStoreAuthUnavailable("InStore auth API answered an empty or expired token")
        log.info("instore_auth.token_issued", ms=ms, expires_in_s=int(answer.expires_in))
        return UserAccessToken(answer.access_token, time.time() + float(answer.expires_in))
