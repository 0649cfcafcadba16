"""Posting to InStore: progress and prompts to ``statusUrl``, the result to ``callbackUrl``.

Every URL is checked against the allow-list before any connection is made (SSRF; see
:mod:`instore_shared.url_allowlist`), redirects are never followed, and bodies are signed like
InStore signs its webhooks (``X-Signature``: hex HMAC-SHA256 of the exact bytes under the shared
secret — assumed, see ../shared/reference/instore-contract.md §4, §6) so InStore can tell the
result is ours. The result carries ``Idempotency-Key: <requestId>`` so a repeat after a crash
(we posted, then died before noting it) is recognisable as the same result.
"""

from __future__ import annotations

import hashlib
import hmac

import httpx
import msgspec

from instore_shared import metrics
from instore_shared.logging import get_logger
from instore_shared.url_allowlist import UrlAllowList

log = get_logger(__name__)


class UrlNotAllowed(Exception):
    """The URL is not on the allow-list: nothing was sent."""


class CallbackRefused(Exception):
    """InStore answered the result with a 4xx other than 408/429: sending it again would not help."""


class NotDelivered(Exception):
    """InStore could not be reached, or answered 408/429/5xx: try again later."""


class InStoreClient:
    """The HTTP client towards InStore's statusUrl and callbackUrl."""

    def __init__(
        self, allowed: UrlAllowList, secret: bytes, timeout_s: float = 5.0, transport: httpx.AsyncBaseTransport | None = None
    ) -> None:
        self._allowed = allowed
        self._secret = secret
        self._http = httpx.AsyncClient(timeout=timeout_s, follow_redirects=False, transport=transport)

    def allows(self, url: str) -> bool:
        """True when ``url`` is on the allow-list."""
        return self._allowed.allows(url)

    async def _post(self, url: str, body: bytes, headers: dict[str, str], kind: str) -> None:
        if not self._allowed.allows(url):
            metrics.INSTORE_POSTS.labels(kind, "refused").inc()
            raise UrlNotAllowed(f"{kind} URL is not on the allow-list")
        all_headers = {"Content-Type": "application/json", **headers}
        if self._secret:
            all_headers["X-Signature"] = hmac.new(self._secret, body, hashlib.sha256).hexdigest()
        try:
            response = await self._http.post(url, content=body, headers=all_headers)
        except httpx.HTTPError as exc:
            metrics.INSTORE_POSTS.labels(kind, "failed").inc()
            raise NotDelivered(f"{type(exc).__name__} posting the {kind}") from exc
        if response.is_success:
            metrics.INSTORE_POSTS.labels(kind, "delivered").inc()
            return
        metrics.INSTORE_POSTS.labels(kind, "failed").inc()
        if response.status_code in (408, 429) or response.status_code >= 500 or response.is_redirect:
            raise NotDelivered(f"InStore answered the {kind} with {response.status_code}")
        raise CallbackRefused(f"InStore answered the {kind} with {response.status_code}")

    async def status(self, url: str, message: msgspec.Struct, kind: str) -> bool:
        """Post a progress line or a prompt (``kind``: ``progress`` | ``prompt``); True when delivered.

        Best effort: a status line that does not arrive is logged, not retried (the stepper only
        shows progress); raises :class:`UrlNotAllowed` only."""
        try:
            await self._post(url, msgspec.json.encode(message), {}, kind)
        except (NotDelivered, CallbackRefused) as exc:
            log.warning("payment_extension.status_not_delivered", kind=kind, error=str(exc))
            return False
        return True

    async def callback(self, url: str, result: msgspec.Struct, request_id: str) -> None:
        """Post the final result once. Raises :class:`UrlNotAllowed`, :class:`NotDelivered` (retry),
        :class:`CallbackRefused` (do not)."""
        await self._post(url, msgspec.json.encode(result), {"Idempotency-Key": request_id}, "callback")

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._http.aclose()
